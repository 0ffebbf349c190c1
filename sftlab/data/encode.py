"""Conversations → Examples (docs/data.md, "The masking contract"): the Encoder runs the three steps for every
conversation and gathers what they give.

1. render (render.py): the conversation as its template writes it, the character spans to train, and the cuts
   where each trained turn's generation prompt ends;
2. tokenize (tokenize.py), one rule for every row, with or without special-token text in its data: where a token
   would cross a cut, the text is tokenized in parts there, so the prompt's tokens are the ones inference sends;
3. mask (masking.py): a token is trained iff its first character lies in a span.

Here: chunks of pieces tokenized per batch call, forked workers for a large input, and the counts and warnings of
what was dropped, split, truncated or not rendered.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Iterable

import numpy as np

from sftlab.data.conversation import Conversation
from sftlab.data.example import IGNORE_INDEX, Dropped, Encoded, Example
from sftlab.data.masking import Masking
from sftlab.data.render import LONG_CONVERSATION_TURNS, TRAIN_ON, Piece, Renderer, Span
from sftlab.data.templates import ChatTemplate
from sftlab.data.tokenize import Locate, TokenizerView
from sftlab.data.trace import TRACE_CLOSES, trace_end
from sftlab.defaults import MAX_LENGTH
from sftlab.errors import SftlabError
from sftlab.forked import can_fork, forked
from sftlab.progress import Phase

# The names other modules have long imported from here.
__all__ = ["IGNORE_INDEX", "LONG_CONVERSATION_TURNS", "PARALLEL_MIN", "TRACE_CLOSES", "TRAIN_ON", "Encoder", "Span",
           "trace_end"]

log = logging.getLogger("sftlab")

# Pieces tokenized per batch call (bounds the memory of a large file's encodings).
_CHUNK = 1024
# Below this many conversations one process is quicker than starting workers.
PARALLEL_MIN = 2000


class Encoder:
    """Turns Conversations into Examples for one tokenizer, template, max_length and train_on mode."""

    def __init__(
        self,
        tokenizer: Any,
        template: ChatTemplate | None,
        max_length: int = MAX_LENGTH,
        train_on: str = "all_assistant",
        escape: bool = True,
        train_reasoning: bool = True,
        parts: bool = False,
    ):
        """`escape`: special-token text inside the data stays text (docs/data.md "Special-token text in your
        data"); False lets it become control tokens, for data that carries them on purpose. `train_reasoning`:
        whether an answer's reasoning trace is trained (its answer and end of turn are either way). `parts`: each
        example says which of its tokens are reasoning, answer, tool call and tool result (for inspect)."""
        if train_on not in TRAIN_ON:
            raise SftlabError(f"train_on must be one of {', '.join(TRAIN_ON)}, got '{train_on}'")
        self.tokenizer = tokenizer
        self.template = template
        self.max_length = max_length
        self.train_on = train_on
        self.tokens = TokenizerView(tokenizer, escape=escape)
        # (LONG_CONVERSATION_TURNS read here, when the encoder is made: benchmarks/long_conversation.py sets it.)
        self.renderer = Renderer(self.tokens, template, train_on, max_length, train_reasoning, parts,
                                 LONG_CONVERSATION_TURNS)
        self.masking = Masking.of(tokenizer, max_length, parts)

    def encode(self, conversations: Iterable[Conversation], num_proc: int | None = 1) -> Encoded:
        """Examples of `conversations`, in order, with every dropped one and its reason. With `num_proc` > 1
        and at least PARALLEL_MIN conversations, in that many forked worker processes, each encoding a
        contiguous part; the result is the same as in one process (tested). None: one process per core, at
        most 8 (rendering is Python and runs on one core; the Rust tokenizer alone already uses them all,
        so the gain is small on 2 cores: 1.09× for 9,196 conversations, benchmarks/encode_speed.py)."""
        conversations = list(conversations)
        procs = min(8, os.cpu_count() or 1) if num_proc is None else num_proc
        with Phase("encoding", len(conversations), "conversations") as phase:
            if procs > 1 and len(conversations) >= PARALLEL_MIN and can_fork():
                out = self._encode_parallel(conversations, procs, phase)
            else:
                out, lost = self._encode_serial(conversations, phase)
                out.dropped.extend(lost)
        self._warn_tools(out)
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

    def _encode_parallel(self, conversations: list[Conversation], procs: int, phase: Phase) -> Encoded:
        bounds = [len(conversations) * k // procs for k in range(procs + 1)]
        with forked(procs, _encode_part, self, conversations, initializer=_single_threaded_tokenizer) as submit:
            spans = list(zip(bounds[:-1], bounds[1:]))
            parts = []
            for (a, b), future in zip(spans, [submit(a, b) for a, b in spans]):
                parts.append(future.result())
                phase.advance(b - a)
        out = Encoded()
        for part, _ in parts:
            out.extend(part)
        out.dropped += [d for _, lost in parts for d in lost]  # as in one process: lost after tokenizing, last
        return out

    def _encode_serial(self, conversations: list[Conversation],
                       phase: Phase | None = None) -> tuple[Encoded, list[Dropped]]:
        out = Encoded()
        lost: list[Dropped] = []  # examples dropped after tokenizing, reported after the others
        chunk: list[Piece] = []
        for conv in conversations:
            if phase is not None:
                phase.advance()
            try:
                pieces, was_split = self.renderer.render(conv)
            except SftlabError as e:
                out.dropped.append(Dropped(conv.source, conv.row, str(e)))
                continue
            if not pieces:
                out.dropped.append(Dropped(conv.source, conv.row, "no trained tokens (no non-empty assistant answer to train)"))
                continue
            out.split_conversations += was_split
            out.tools_ignored += bool(conv.tools) and self.template is not None and not self.template.handles_tools
            chunk.extend(pieces)
            if len(chunk) >= _CHUNK:
                self._encode_chunk(chunk, out, lost)
                chunk = []
        self._encode_chunk(chunk, out, lost)
        return out, lost

    def _encode_chunk(self, pieces: list[Piece], out: Encoded, lost: list[Dropped]) -> None:
        """Tokenize and mask one chunk of pieces."""
        for piece, (ids, locate) in zip(pieces, self._tokenize(pieces)):
            example, truncated = self.masking.example(piece, ids, locate)
            if isinstance(example, Dropped):
                lost.append(example)
                continue
            out.truncated += truncated
            out.examples.append(example)
            if piece.split_last is not None:
                # The cost of splitting: every example but the last, which holds the whole conversation.
                out.split_examples += 1
                out.split_extra_tokens += 0 if piece.split_last else len(example)

    def _tokenize(self, pieces: list[Piece]) -> list[tuple[np.ndarray, Locate]]:
        """Token ids of each piece and a function: character → index of the first token that starts at or after
        it. Pieces without special-token text in their data go to the tokenizer in one batch; both kinds are cut
        at the ends of their generation prompts alike."""
        plain = [p for p in pieces if p.markers is None]
        batch = iter(self.tokens.encode_batch([p.text for p in plain], [p.cuts for p in plain]))
        return [next(batch) if p.markers is None else self.tokens.encode_marked(p.text, p.markers, p.cuts)
                for p in pieces]

    def _warn_tools(self, out: Encoded) -> None:
        if out.tools_ignored:
            log.warning(
                "%d conversation%s carr%s tool definitions that template '%s' does not render: the model will not "
                "see them; use a template that renders tools (template: chatml or qwen)",
                out.tools_ignored, "" if out.tools_ignored == 1 else "s", "ies" if out.tools_ignored == 1 else "y",
                self.template.name)


def _single_threaded_tokenizer() -> None:
    """A worker's initializer: its tokenizer runs single-threaded (the Rust thread pool does not survive a fork, and
    the workers share the cores already). Set in the worker only: the parent, which may be the UI serving other
    requests on threads, keeps its environment and its threads."""
    os.environ["TOKENIZERS_PARALLELISM"] = "false"


def _encode_part(encoder: Encoder, conversations: list[Conversation], start: int, end: int) -> tuple[Encoded, list[Dropped]]:
    """A forked worker's part of a parallel encode (the encoder and conversations inherited, not pickled)."""
    return encoder._encode_serial(conversations[start:end])
