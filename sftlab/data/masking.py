"""Masking: a tokenized piece → its Example (docs/data.md, "The masking contract"). A token is trained iff its first
character lies in a trained span; an answer that does not end in a special token gets EOS, trained; truncation keeps
the start, and an example left with nothing trained is dropped with the reason. For inspect, which tokens are
reasoning, answer, tool call and tool result."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sftlab.data.example import IGNORE_INDEX, Dropped, Example
from sftlab.data.render import Piece, Span
from sftlab.data.tokenize import Locate, special_token_ids, tokenizer_adds_bos


@dataclass(frozen=True)
class Masking:
    """What masking needs of a tokenizer (its EOS, BOS and special ids), max_length, and whether examples say
    which of their tokens are which part (inspect)."""

    max_length: int
    eos_id: int | None
    bos_id: int | None
    adds_bos: bool
    special_ids: frozenset[int]
    parts: bool = False

    @classmethod
    def of(cls, tokenizer: Any, max_length: int, parts: bool = False) -> "Masking":
        return cls(max_length, tokenizer.eos_token_id, tokenizer.bos_token_id, tokenizer_adds_bos(tokenizer),
                   frozenset(special_token_ids(tokenizer)), parts)

    def example(self, piece: Piece, input_ids: Any, locate: Locate) -> tuple[Example | Dropped, bool]:
        """The example of a tokenized piece (or why it is dropped), and whether max_length cut it."""
        # Plain lists from here: a few C-level list operations per example beat a dozen numpy calls
        # on arrays of a few hundred tokens.
        conv = piece.conv
        ids: list[int] = input_ids.tolist()
        weights: list[float] | None = None
        inserted: list[int] = []
        if piece.train_all:
            labels = self._whole(ids, conv.is_text)
        else:
            labels, weights, inserted = mask_spans(ids, locate, piece.spans, self.special_ids, self.eos_id)
        truncated = len(ids) > self.max_length
        if truncated:
            del ids[self.max_length :], labels[self.max_length :]
            if weights is not None:
                del weights[self.max_length :]
        if labels.count(IGNORE_INDEX) == len(labels):
            return Dropped(conv.source, conv.row, f"answer lost to truncation at max_length={self.max_length}"), truncated
        example = Example(ids, labels, conv.source, conv.row, weights)
        if self.parts and piece.parts:
            example.parts = token_parts(piece.parts, locate, inserted, len(ids))
        return example, truncated

    def _whole(self, ids: list[int], is_text: bool) -> list[int]:
        """Labels of a piece trained whole (`ids` gains BOS and EOS for raw text). Raw text gets the tokenizer's
        usual BOS and an EOS that marks the document's end; a conversation trained whole (train_on: all) is trained
        exactly as its template writes it."""
        if is_text and self.adds_bos and self.bos_id is not None:
            ids.insert(0, self.bos_id)
        if is_text and self.eos_id is not None and (not ids or ids[-1] != self.eos_id):
            ids.append(self.eos_id)
        return ids[:]


def mask_spans(ids: list[int], locate: Locate, spans: list[Span], special_ids: frozenset[int] | set[int],
               eos_id: int | None) -> tuple[list[int], list[float] | None, list[int]]:
    """Labels (and per-token weights when a span has a weight other than 1) for `ids`, which gains the EOS tokens
    the contract inserts (their positions before insertion, the third value)."""
    labels = [IGNORE_INDEX] * len(ids)
    weighted = any(span[2] != 1.0 for span in spans)
    weights = [0.0] * len(ids) if weighted else None
    eos_after: list[tuple[int, float]] = []
    for start, end, weight, kind in spans:
        # Tokens [lo, hi) are those whose first character lies in [start, end).
        lo, hi = int(locate(start)), int(locate(end))
        if hi <= lo:
            continue
        # The model must learn to stop: an answer that ends without an end-of-turn token gets EOS, unless the
        # template writes that very token right after it (Apertus closes a turn only when another message
        # follows): then that one is trained, never a second one inserted.
        ends = kind == "answer" and ids[hi - 1] not in special_ids and eos_id is not None
        if ends and hi < len(ids) and ids[hi] == eos_id:
            hi, ends = hi + 1, False
        labels[lo:hi] = ids[lo:hi]
        if weights is not None:
            weights[lo:hi] = [weight] * (hi - lo)
        if ends:
            eos_after.append((hi, weight))
    for hi, weight in reversed(eos_after):
        ids.insert(hi, eos_id)
        labels.insert(hi, eos_id)
        if weights is not None:
            weights.insert(hi, weight)
    return labels, weights, [hi for hi, _ in eos_after]


def token_parts(parts: list[tuple[int, int, str]], locate: Locate, inserted: list[int],
                length: int) -> list[tuple[int, int, str]]:
    """Character ranges → token ranges, after the EOS tokens inserted at `inserted` (an answer's EOS is the answer's)."""
    out = []
    for start, end, kind in parts:
        lo, hi = int(locate(start)), int(locate(end))
        shift_lo = sum(1 for p in inserted if p < lo or (p == lo and kind != "answer"))
        shift_hi = sum(1 for p in inserted if p < hi or (p == hi and kind in ("answer", "tool_call")))
        lo, hi = min(lo + shift_lo, length), min(hi + shift_hi, length)
        if hi > lo:
            out.append((lo, hi, kind))
    return out
