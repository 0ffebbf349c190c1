"""Render + tokenize + mask: Conversation → Example, exactly as SPEC.md's masking contract says.

The whole conversation is rendered once and tokenized once (with character offsets); assistant
spans are found by rendering the prefixes P_i (prompt up to turn i, with the generation prompt)
and F_i (up to and including turn i) and taking the character range between them. A token is
trained iff its first character lies in a span. Tokenizing prompt and answer separately would
shift the boundary wherever BPE merges across it; character offsets cannot.
"""

from __future__ import annotations

import json
import os
import weakref
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from sftlab.data.conversation import Conversation
from sftlab.data.fastbpe import CHUNK, FastBPE, FastEncoding
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


# Conversations with more trained turns than this render only the turns that survive truncation.
LONG_CONVERSATION_TURNS = 32


class Encoder:
    """Turns Conversations into Examples for one tokenizer, template, max_length and train_on mode."""

    def __init__(
        self,
        tokenizer: Any,
        template: ChatTemplate | None,
        max_length: int = 4096,
        train_on: str = "all_assistant",
        fast: bool | None = None,
    ):
        """`fast`: tokenize with the exact fast path (fastbpe.py) where it applies — None: for
        batches big enough to repay building it; False: always with `tokenizers`."""
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
        self.fast = fast

    # --- public -----------------------------------------------------------------------------------

    def encode(self, conversations: Iterable[Conversation]) -> Encoded:
        conversations = list(conversations)
        out = Encoded()
        lost: list[Dropped] = []  # examples dropped after tokenizing, reported after the others
        use_fast = self.fast if self.fast is not None else len(conversations) >= _FAST_MIN_TEXTS
        fast = _fast_path(self.tokenizer) if use_fast else None
        # With the fast path, each chunk is tokenized in a worker thread while the next ones render,
        # and masked as soon as its tokens are ready; chunks finish in input order.
        chunk: list[_Piece] = []
        queue: deque[tuple[list[_Piece], Any]] = deque()
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
            chunk.extend(conv_pieces)
            if fast is not None and len(chunk) >= CHUNK:
                queue.append((chunk, fast.start([p.text for p in chunk], _threads())))
                chunk = []
                while queue and queue[0][1].ready():
                    self._finish(*queue.popleft(), fast, out, lost)
        if chunk:
            queue.append((chunk, fast.start([p.text for p in chunk], _threads()) if fast is not None else None))
        while queue:
            self._finish(*queue.popleft(), fast, out, lost)
        out.dropped.extend(lost)
        return out

    def _finish(self, pieces: list[_Piece], job: Any, fast: FastBPE | None, out: Encoded, lost: list[Dropped]) -> None:
        """Tokenize (or collect the fast path's tokens) and mask one chunk of pieces."""
        texts = [p.text for p in pieces]
        tokenized = fast.finish(texts, [job]) if fast is not None else [None] * len(texts)
        for piece, (ids, locate) in zip(pieces, self._tokenize(texts, tokenized)):
            example, reason = self._mask(piece, ids, locate)
            if example is None:
                lost.append(Dropped(piece.conv.source, piece.conv.row, reason))
                continue
            out.truncated += reason == "truncated"
            out.examples.append(example)

    def _tokenize(self, texts: list[str], fast: list[FastEncoding | None]) -> list[tuple[np.ndarray, Any]]:
        """Token ids of each text and a function: character → index of the first token that starts
        at or after it. The fast path's result where there is one, the Rust tokenizer for the rest."""
        rest = [t for t, f in zip(texts, fast) if f is None]
        slow = iter(self._backend.encode_batch(rest, add_special_tokens=False) if rest else [])
        out = []
        for text, f in zip(texts, fast):
            if f is not None:
                out.append((f.ids, f.starts.searchsorted))
            else:
                enc = next(slow)
                out.append((np.asarray(enc.ids, dtype=np.int64), _locator(enc, len(text))))
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
        # Each turn's prefix is rendered whole, so the work grows with turns²; in a long conversation
        # only the turns that start before the truncation point are rendered (the first one after it
        # too, so its answer is reported as lost to truncation exactly as before).
        cut = self._truncation_char(full) if len(trained) > LONG_CONVERSATION_TURNS else None
        spans: list[tuple[int, int, float]] = []
        stable = True
        for i, weight in trained:
            prompt = self.template.render(msgs[:i], tools, add_generation_prompt=True)
            upto = full if i == len(msgs) - 1 else self.template.render(msgs[: i + 1], tools)
            if not (full.startswith(upto) and upto.startswith(prompt)):
                stable = False
                break
            spans.append(_span(prompt, upto, weight))
            if cut is not None and len(prompt) >= cut:
                break
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

    def _truncation_char(self, text: str) -> int | None:
        """The character where truncation to max_length cuts `text`, or None when it fits."""
        enc = self._backend.encode(text, add_special_tokens=False)
        if len(enc.ids) <= self.max_length:
            return None
        return enc.offsets[self.max_length][0]

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

    def _mask(self, piece: _Piece, input_ids: np.ndarray, locate: Any) -> tuple[Example | None, str]:
        # Plain lists from here: a few C-level list operations per example beat a dozen numpy calls
        # on arrays of a few hundred tokens.
        conv = piece.conv
        ids: list[int] = input_ids.tolist()
        weights: list[float] | None = None
        if piece.train_all:
            # Raw text gets the tokenizer's usual BOS and an EOS that marks the document's end; a
            # conversation trained whole (train_on: all) is trained exactly as its template writes it.
            if conv.is_text and self._adds_bos and self.bos_id is not None:
                ids.insert(0, self.bos_id)
            if conv.is_text and self.eos_id is not None and (not ids or ids[-1] != self.eos_id):
                ids.append(self.eos_id)
            labels = ids[:]
        else:
            labels, weights = self._mask_spans(ids, locate, piece.spans)
        reason = ""
        if len(ids) > self.max_length:
            del ids[self.max_length :], labels[self.max_length :]
            if weights is not None:
                del weights[self.max_length :]
            reason = "truncated"
        if labels.count(IGNORE_INDEX) == len(labels):
            return None, f"answer lost to truncation at max_length={self.max_length}"
        return Example(ids, labels, conv.source, conv.row, weights), reason

    def _mask_spans(
        self, ids: list[int], locate: Any, spans: list[tuple[int, int, float]]
    ) -> tuple[list[int], list[float] | None]:
        """Labels (and per-token weights when a span has a weight other than 1) for `ids`, which
        gains the EOS tokens the contract inserts."""
        labels = [IGNORE_INDEX] * len(ids)
        weighted = any(w != 1.0 for _, _, w in spans)
        weights = [0.0] * len(ids) if weighted else None
        eos_after: list[tuple[int, float]] = []
        for start, end, weight in spans:
            # Tokens [lo, hi) are those whose first character lies in [start, end).
            lo, hi = int(locate(start)), int(locate(end))
            if hi <= lo:
                continue
            labels[lo:hi] = ids[lo:hi]
            if weights is not None:
                weights[lo:hi] = [weight] * (hi - lo)
            # The model must learn to stop: a span that ends without an end-of-turn token gets EOS.
            if ids[hi - 1] not in self.special_ids and self.eos_id is not None:
                eos_after.append((hi, weight))
        for hi, weight in reversed(eos_after):
            ids.insert(hi, self.eos_id)
            labels.insert(hi, self.eos_id)
            if weights is not None:
                weights.insert(hi, weight)
        return labels, weights


def _locator(enc: Any, text_length: int) -> Any:
    """character → index of the first token whose first character is at or after it, for a
    `tokenizers` Encoding: its own char→token map for one position instead of converting every
    offset to Python, and the offsets only where no token covers the character (a normalizer
    removed it)."""
    starts: list[np.ndarray] = []

    def locate(char: int) -> int:
        if char >= text_length:
            return len(enc.ids)
        token = enc.char_to_token(char)
        if token is None:
            if not starts:
                starts.append(np.fromiter((o[0] for o in enc.offsets), dtype=np.int64, count=len(enc.ids)))
            return int(np.searchsorted(starts[0], char, side="left"))
        return token if enc.token_to_chars(token)[0] >= char else token + 1

    return locate


# Below this many texts, building the fast path (a second or two for a large vocabulary) costs more
# than it saves.
_FAST_MIN_TEXTS = 256
_FAST_PATHS: "weakref.WeakKeyDictionary[Any, FastBPE | None]" = weakref.WeakKeyDictionary()
_POOL: dict[int, ThreadPoolExecutor] = {}


def _fast_path(tokenizer: Any) -> FastBPE | None:
    """The tokenizer's fast path, built once per tokenizer (None where it does not apply)."""
    try:
        return _FAST_PATHS[tokenizer]
    except KeyError:
        pass
    except TypeError:  # not weak-referenceable: build without caching
        return FastBPE.for_tokenizer(tokenizer)[0]
    fast, _ = FastBPE.for_tokenizer(tokenizer)
    _FAST_PATHS[tokenizer] = fast
    return fast


def _threads() -> ThreadPoolExecutor:
    """Worker threads for the fast path (tiktoken releases the GIL); one pool per process, because
    a forked child inherits the pool object but not its threads."""
    pid = os.getpid()
    if pid not in _POOL:
        _POOL.clear()
        _POOL[pid] = ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1)))
    return _POOL[pid]


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
