"""Render + tokenize + mask: Conversation → Example, exactly as SPEC.md's masking contract says.

The whole conversation is rendered once and tokenized once (with character offsets); assistant
spans are found by rendering the prefixes P_i (prompt up to turn i, with the generation prompt)
and F_i (up to and including turn i) and taking the character range between them. A token is
trained iff its first character lies in a span. Tokenizing prompt and answer separately would
shift the boundary wherever BPE merges across it; character offsets cannot.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from sftlab.data.conversation import Conversation
from sftlab.data.templates import ChatTemplate
from sftlab.errors import SftlabError

IGNORE_INDEX = -100
TRAIN_ON = ("all_assistant", "last_assistant", "all")


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]
    source: str = "<memory>"
    row: int = 0
    # Per-token loss weights, only when some message carries a weight other than 1.
    weights: list[float] | None = None

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def trained_tokens(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE_INDEX)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"input_ids": self.input_ids, "labels": self.labels, "source": self.source, "row": self.row}
        if self.weights is not None:
            d["weights"] = self.weights
        return d


@dataclass
class Dropped:
    source: str
    row: int
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "row": self.row, "reason": self.reason}


@dataclass
class Encoded:
    examples: list[Example] = field(default_factory=list)
    dropped: list[Dropped] = field(default_factory=list)
    # Conversations a prefix-unstable template forced us to split into one example per turn.
    split_conversations: int = 0
    truncated: int = 0

    def drop_reasons(self) -> dict[str, int]:
        return dict(Counter(d.reason for d in self.dropped))


@dataclass
class _Piece:
    """One text to tokenize and the character spans to train in it."""

    text: str
    spans: list[tuple[int, int, float]]  # (start, end, weight)
    conv: Conversation
    train_all: bool = False


class Encoder:
    """Turns Conversations into Examples for one tokenizer, template, max_length and train_on mode."""

    def __init__(
        self,
        tokenizer: Any,
        template: ChatTemplate | None,
        max_length: int = 4096,
        train_on: str = "all_assistant",
    ):
        if train_on not in TRAIN_ON:
            raise SftlabError(f"train_on must be one of {', '.join(TRAIN_ON)}, got '{train_on}'")
        if max_length < 2:
            raise SftlabError(f"max_length must be at least 2, got {max_length}")
        self.tokenizer = tokenizer
        self.template = template
        self.max_length = max_length
        self.train_on = train_on
        self.eos_id = tokenizer.eos_token_id
        self.bos_id = tokenizer.bos_token_id
        self.special_ids = special_token_ids(tokenizer)
        # The Rust tokenizer directly: batch encoding with offsets, no Python work per token.
        self._backend = tokenizer.backend_tokenizer
        self._adds_bos = _tokenizer_adds_bos(tokenizer)

    # --- public -----------------------------------------------------------------------------------

    def encode(self, conversations: Iterable[Conversation]) -> Encoded:
        out = Encoded()
        pieces: list[_Piece] = []
        for conv in conversations:
            try:
                conv_pieces, was_split = self._render(conv)
            except SftlabError as e:
                out.dropped.append(Dropped(conv.source, conv.row, str(e)))
                continue
            if not conv_pieces:
                out.dropped.append(Dropped(conv.source, conv.row, "no trained tokens (no non-empty assistant answer to train)"))
                continue
            out.split_conversations += was_split
            pieces.extend(conv_pieces)
        encodings = self._backend.encode_batch([p.text for p in pieces], add_special_tokens=False)
        for piece, enc in zip(pieces, encodings):
            example, reason = self._mask(piece, enc)
            if example is None:
                out.dropped.append(Dropped(piece.conv.source, piece.conv.row, reason))
                continue
            out.truncated += reason == "truncated"
            out.examples.append(example)
        return out

    def encode_one(self, conversation: Conversation) -> Example:
        """One conversation → one Example; raises with the reason when it would be dropped or split."""
        result = self.encode([conversation])
        if result.dropped:
            d = result.dropped[0]
            raise SftlabError(f"{d.source}, row {d.row}: {d.reason}")
        if len(result.examples) != 1:
            raise SftlabError("the template is prefix-unstable: the conversation became several examples")
        return result.examples[0]

    # --- rendering: conversation → text and character spans -----------------------------------------

    def _render(self, conv: Conversation) -> tuple[list[_Piece], bool]:
        if conv.is_text:
            return [_Piece(conv.messages[0].content, [], conv, train_all=True)], False
        if self.template is None:
            raise SftlabError("a chat template is needed for conversations")
        msgs = [self._template_message(m) for m in conv.messages]
        tools = conv.tools
        full = self.template.render(msgs, tools)
        if self.train_on == "all":
            return [_Piece(full, [], conv, train_all=True)], False
        trained = self._trained_turns(conv)
        spans: list[tuple[int, int, float]] = []
        stable = True
        for i, weight in trained:
            prompt = self.template.render(msgs[:i], tools, add_generation_prompt=True)
            upto = full if i == len(msgs) - 1 else self.template.render(msgs[: i + 1], tools)
            if not (full.startswith(upto) and upto.startswith(prompt)):
                stable = False
                break
            spans.append(_span(prompt, upto, weight))
        if stable:
            spans = [s for s in spans if s[1] > s[0]]
            return ([_Piece(full, spans, conv)] if spans else []), False
        # Prefix-unstable template (it rewrites earlier turns): one example per trained turn, each
        # rendered on its own and trained on its last turn only.
        pieces = []
        for i, weight in trained:
            prompt = self.template.render(msgs[:i], tools, add_generation_prompt=True)
            upto = self.template.render(msgs[: i + 1], tools)
            if not upto.startswith(prompt):
                raise SftlabError(
                    f"chat template '{self.template.name}' renders the prompt of message {i + 1} differently "
                    "from the conversation, so its answer cannot be located"
                )
            span = _span(prompt, upto, weight)
            if span[1] > span[0]:
                pieces.append(_Piece(upto, [span], conv))
        return pieces, True

    def _template_message(self, m: Any) -> dict[str, Any]:
        d = m.to_template_dict()
        if m.tool_calls and not self.template.handles_tool_calls:
            # A template that ignores tool_calls would drop the call: write it as the answer's text.
            calls = [c.get("function", c) for c in m.tool_calls]
            text = json.dumps(calls[0] if len(calls) == 1 else calls, ensure_ascii=False)
            d["content"] = f"{d['content']}\n{text}" if d["content"] else text
            del d["tool_calls"]
        return d

    def _trained_turns(self, conv: Conversation) -> list[tuple[int, float]]:
        """(message index, weight) of the assistant turns to train, by mode and per-message flags."""
        assistant = conv.assistant_indices
        last = assistant[-1] if assistant else -1
        turns = []
        for i in assistant:
            m = conv.messages[i]
            train = m.train if m.train is not None else (self.train_on == "all_assistant" or i == last)
            weight = 1.0 if m.weight is None else m.weight
            empty = not m.content.strip() and not m.tool_calls
            if train and weight > 0 and not empty:
                turns.append((i, weight))
        return turns

    # --- masking: tokens + offsets + spans → labels ---------------------------------------------------

    def _mask(self, piece: _Piece, enc: Any) -> tuple[Example | None, str]:
        conv = piece.conv
        input_ids = np.asarray(enc.ids, dtype=np.int64)
        if piece.train_all:
            # Raw text gets the tokenizer's usual BOS and an EOS that marks the document's end; a
            # conversation trained whole (train_on: all) is trained exactly as its template writes it.
            if conv.is_text and self._adds_bos and self.bos_id is not None:
                input_ids = np.concatenate([[self.bos_id], input_ids])
            if conv.is_text and self.eos_id is not None and (len(input_ids) == 0 or int(input_ids[-1]) != self.eos_id):
                input_ids = np.concatenate([input_ids, [self.eos_id]])
            labels = input_ids.copy()
            weights = None
        else:
            input_ids, labels, weights = self._mask_spans(input_ids, enc, len(piece.text), piece.spans)
        reason = ""
        if len(input_ids) > self.max_length:
            input_ids, labels = input_ids[: self.max_length], labels[: self.max_length]
            weights = None if weights is None else weights[: self.max_length]
            reason = "truncated"
        if not (labels != IGNORE_INDEX).any():
            return None, f"answer lost to truncation at max_length={self.max_length}"
        example = Example(
            input_ids.tolist(),
            labels.tolist(),
            conv.source,
            conv.row,
            None if weights is None else weights.tolist(),
        )
        return example, reason

    def _mask_spans(
        self, input_ids: np.ndarray, enc: Any, text_length: int, spans: list[tuple[int, int, float]]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        trained = np.zeros(len(input_ids), dtype=bool)
        token_weights = np.ones(len(input_ids), dtype=np.float32)
        eos_after: list[int] = []
        eos_weights: list[float] = []
        starts: np.ndarray | None = None
        for start, end, weight in spans:
            # Tokens [lo, hi) are those whose first character lies in [start, end).
            lo, hi = _first_token_at(enc, start, text_length), _first_token_at(enc, end, text_length)
            if lo is None or hi is None:  # a character no token covers (a normalizer removed it)
                if starts is None:
                    starts = np.fromiter((o[0] for o in enc.offsets), dtype=np.int64, count=len(input_ids))
                lo = int(np.searchsorted(starts, start, side="left"))
                hi = int(np.searchsorted(starts, end, side="left"))
            if hi <= lo:
                continue
            trained[lo:hi] = True
            token_weights[lo:hi] = weight
            # The model must learn to stop: a span that ends without an end-of-turn token gets EOS.
            if int(input_ids[hi - 1]) not in self.special_ids and self.eos_id is not None:
                eos_after.append(hi)
                eos_weights.append(weight)
        labels = np.where(trained, input_ids, IGNORE_INDEX)
        if eos_after:
            input_ids = np.insert(input_ids, eos_after, self.eos_id)
            labels = np.insert(labels, eos_after, self.eos_id)
            token_weights = np.insert(token_weights, eos_after, eos_weights)
        has_weights = any(w != 1.0 for _, _, w in spans)
        return input_ids, labels, (np.where(labels != IGNORE_INDEX, token_weights, 0.0) if has_weights else None)


def _first_token_at(enc: Any, char: int, text_length: int) -> int | None:
    """Index of the first token whose first character is at or after `char`, asking the tokenizer's
    own char→token map for one position instead of converting every offset to Python."""
    if char >= text_length:
        return len(enc.ids)
    token = enc.char_to_token(char)
    if token is None:
        return None
    token_start = enc.token_to_chars(token)[0]
    return token if token_start >= char else token + 1


def _span(prompt: str, upto: str, weight: float) -> tuple[int, int, float]:
    start = len(prompt)
    end = max(start, len(upto.rstrip()))
    return start, end, weight


def special_token_ids(tokenizer: Any) -> set[int]:
    """EOS and every added token marked special (e.g. <|im_end|>, <|eot_id|>, <|end|>)."""
    ids = set(tokenizer.all_special_ids)
    for token_id, added in tokenizer.added_tokens_decoder.items():
        if getattr(added, "special", False):
            ids.add(int(token_id))
    return ids


def _tokenizer_adds_bos(tokenizer: Any) -> bool:
    """Whether the tokenizer itself puts BOS in front of plain text (Llama 2 does, GPT-2 does not)."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return False
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[0] == bos
