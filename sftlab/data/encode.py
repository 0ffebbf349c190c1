"""Render + tokenize + mask: Conversation → Example, exactly as SPEC.md's masking contract says.

The whole conversation is rendered once and tokenized once (with character offsets); assistant
spans are found by rendering the prefixes P_i (prompt up to turn i, with the generation prompt)
and F_i (up to and including turn i) and taking the character range between them. A token is
trained iff its first character lies in a span. Tokenizing prompt and answer separately would
shift the boundary wherever BPE merges across it; character offsets cannot.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np

from sftlab.data.conversation import Conversation
from sftlab.data.example import IGNORE_INDEX, Dropped, Encoded, Example
from sftlab.data.reasoning import THINK_CLOSE, THINK_OPEN, inline_trace
from sftlab.data.templates import ChatTemplate
from sftlab.data.tokenize import Locate, Revealed, TokenizerView, special_token_ids, tokenizer_adds_bos
from sftlab.defaults import MAX_LENGTH
from sftlab.errors import SftlabError
from sftlab.forked import can_fork, forked
from sftlab.progress import Phase

log = logging.getLogger("sftlab")

TRAIN_ON = ("all_assistant", "last_assistant", "all")


# (start, end, weight, kind) of trained characters; kind: "reasoning", "answer" (an answer or tool call and the end
# of its turn) or "tool" (a tool result a row trains).
Span = tuple[int, int, float, str]


@dataclass
class _Piece:
    """One text to tokenize and the character spans to train in it."""

    text: str
    spans: list[Span]
    conv: Conversation
    train_all: bool = False
    # Where the template's special-token strings lie when the data spells some too (escaping), else None.
    markers: list[tuple[int, int]] | None = None
    # Where each trained turn's generation prompt ends: the tokens before it must be the prompt's own tokens.
    cuts: list[int] = field(default_factory=list)
    # One of a conversation split per turn: whether it is the conversation's last (None: not split).
    split_last: bool | None = None
    # Character ranges of reasoning, answer, tool call and tool result text, for inspect (Encoder(parts=True)).
    parts: list[tuple[int, int, str]] = field(default_factory=list)


# The ends of reasoning traces: a generation prompt holding one has thinking switched off (enable_thinking: false).
TRACE_CLOSES = (THINK_CLOSE, "<|END_THINKING|>")

# Conversations with more trained turns than this render only the turns that survive truncation.
LONG_CONVERSATION_TURNS = 32


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
        if max_length < 2:
            raise SftlabError(f"max_length must be at least 2, got {max_length}")
        self.tokenizer = tokenizer
        self.template = template
        self.max_length = max_length
        self.train_on = train_on
        self.train_reasoning = train_reasoning
        self.parts = parts
        self.eos_id = tokenizer.eos_token_id
        self.bos_id = tokenizer.bos_token_id
        self.special_ids = special_token_ids(tokenizer)
        self.tokens = TokenizerView(tokenizer, escape=escape)
        self._adds_bos = tokenizer_adds_bos(tokenizer)

    # --- public -----------------------------------------------------------------------------------

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
        chunk: list[_Piece] = []
        for conv in conversations:
            if phase is not None:
                phase.advance()
            try:
                conv_pieces, was_split = self._render(conv)
            except SftlabError as e:
                out.dropped.append(Dropped(conv.source, conv.row, str(e)))
                continue
            if not conv_pieces:
                out.dropped.append(Dropped(conv.source, conv.row, "no trained tokens (no non-empty assistant answer to train)"))
                continue
            out.split_conversations += was_split
            out.tools_ignored += bool(conv.tools) and self.template is not None and not self.template.handles_tools
            chunk.extend(conv_pieces)
            if len(chunk) >= _CHUNK:
                self._encode_chunk(chunk, out, lost)
                chunk = []
        self._encode_chunk(chunk, out, lost)
        return out, lost

    def _warn_tools(self, out: Encoded) -> None:
        if out.tools_ignored:
            log.warning(
                "%d conversation%s carr%s tool definitions that template '%s' does not render: the model will not "
                "see them; use a template that renders tools (template: chatml or qwen)",
                out.tools_ignored, "" if out.tools_ignored == 1 else "s", "ies" if out.tools_ignored == 1 else "y",
                self.template.name)

    def _encode_chunk(self, pieces: list[_Piece], out: Encoded, lost: list[Dropped]) -> None:
        """Tokenize and mask one chunk of pieces."""
        for piece, (ids, locate) in zip(pieces, self._tokenize(pieces)):
            example, truncated = self._mask(piece, ids, locate)
            if isinstance(example, Dropped):
                lost.append(example)
                continue
            out.truncated += truncated
            out.examples.append(example)
            if piece.split_last is not None:
                # The cost of splitting: every example but the last, which holds the whole conversation.
                out.split_examples += 1
                out.split_extra_tokens += 0 if piece.split_last else len(example)

    def _tokenize(self, pieces: list[_Piece]) -> list[tuple[np.ndarray, Locate]]:
        """Token ids of each piece and a function: character → index of the first token that starts
        at or after it. Pieces without special-token text in their data go to the tokenizer in one batch."""
        plain = iter(self.tokens.encode_batch([p.text for p in pieces if p.markers is None], [p.cuts for p in pieces if p.markers is None]))
        return [next(plain) if p.markers is None else self.tokens.encode_marked(p.text, p.markers) for p in pieces]

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
            text = conv.messages[0].content
            markers = [] if self.tokens.escape and self.tokens.spells_special(text) else None
            return [_Piece(text, [], conv, train_all=True, markers=markers)], False
        if self.template is None:
            raise SftlabError("a chat template is needed for conversations")
        plain = [self._template_message(m) for m in conv.messages]
        msgs, tools, hidden = plain, conv.tools, False
        if self.tokens.escape:
            # The data's special-token strings become placeholders while rendering (tokenize.py).
            (msgs, tools), hidden = self.tokens.hide((plain, conv.tools))
        full = self.template.render(msgs, tools)
        real = self._revealed(full, plain, conv.tools) if hidden else None
        if self.train_on == "all":
            for i, m in enumerate(msgs):
                if m["role"] == "assistant":
                    self._check_written(full, m, i)
            return [self._piece(full, [], conv, hidden, train_all=True, real=real)], False
        trained = self._trained_turns(conv)
        # Each turn's prefix is rendered whole, so the work grows with turns²; in a long conversation
        # only the turns that start before the truncation point are rendered (the first one after it
        # too, so its answer is reported as lost to truncation exactly as before).
        cut, real_position = None, (real.position if real is not None else int)
        if len(trained) > LONG_CONVERSATION_TURNS:
            whole = self._piece(full, [], conv, hidden, real=real)
            cut = self.tokens.start_of_token(whole.text, whole.markers, self.max_length)
        spans: list[Span] = []
        owners: list[int] = []  # the message of each span
        cuts: list[int] = []
        stable = True
        for i, weight in trained:
            if msgs[i]["role"] == "tool":
                spans += self._tool_span(msgs, tools, i, weight, full)
                owners.append(i)
                continue
            prompt = self.template.render(msgs[:i], tools, add_generation_prompt=True)
            upto = self._turn_text(msgs, tools, i, prompt, split=False, full=full)
            if not (full.startswith(upto) and upto.startswith(prompt)) or _restored(upto, len(prompt), msgs[i]) != upto:
                stable = False
                break
            turn = self._turn_spans(upto, len(prompt), weight, msgs, tools, i, split=False)
            spans += turn
            owners += [i] * len(turn)
            cuts.append(len(prompt))
            if cut is not None and real_position(len(prompt)) >= cut:
                break
        if stable:
            owners = [i for s, i in zip(spans, owners) if s[1] > s[0]]
            spans = [s for s in spans if s[1] > s[0]]
            if not spans:
                return [], False
            return [self._with_parts(self._piece(full, spans, conv, hidden, real=real, cuts=cuts), msgs, owners)], False
        # Prefix-unstable template (it rewrites earlier turns, as Qwen3's drops their reasoning): one example per
        # trained turn, its prompt exactly what inference sends for that turn, trained on that turn only.
        pieces = []
        for i, weight in trained:
            if msgs[i]["role"] == "tool":
                raise SftlabError(f"message {i + 1} (a tool result) is marked train: true, but chat template "
                                  f"'{self.template.name}' rewrites earlier turns, so a tool result cannot be trained "
                                  "with it")
            prompt = self.template.render(msgs[:i], tools, add_generation_prompt=True)
            upto = self._turn_text(msgs, tools, i, prompt, split=True)
            turn = [s for s in self._turn_spans(upto, len(prompt), weight, msgs, tools, i, split=True) if s[1] > s[0]]
            if turn:
                piece = self._piece(upto, turn, conv, hidden, cuts=[len(prompt)])
                pieces.append(self._with_parts(piece, msgs[: i + 1], [i] * len(turn)))
        for k, piece in enumerate(pieces):
            piece.split_last = k == len(pieces) - 1
        return pieces, True

    def _with_parts(self, piece: _Piece, msgs: list[dict[str, Any]], owners: list[int]) -> _Piece:
        """`piece` with the character ranges inspect shows apart (only with Encoder(parts=True)): the trained spans
        (an answer that is a tool call as "tool_call") and every tool result's content, found in order."""
        if not self.parts:
            return piece
        text = piece.text
        out = []
        for (start, end, _, kind), i in zip(piece.spans, owners):
            if kind == "answer" and msgs[i].get("tool_calls"):
                content = msgs[i].get("content") or ""
                at = text.find(content, start, end) if content.strip() else -1
                split = at + len(content) if at >= 0 else start
                out += [(start, split, "answer"), (split, end, "tool_call")]
            else:
                out.append((start, end, "tool_result" if kind == "tool" else kind))
        cursor = 0
        for m in msgs:
            if m["role"] == "tool" and m.get("content"):
                at = text.find(m["content"], cursor)
                if at >= 0:
                    out.append((at, at + len(m["content"]), "tool_result"))
                    cursor = at + len(m["content"])
        piece.parts = sorted({p for p in out if p[1] > p[0]})
        return piece

    def _turn_text(self, msgs: list[dict[str, Any]], tools: Any, i: int, prompt: str, split: bool,
                   full: str | None = None) -> str:
        """The text up to the end of assistant turn `i` after `prompt` (its generation prompt): as the template writes
        the conversation (`full`: all of it, when `i` is the last message), or, for a conversation split per turn,
        as the model writes the turn after that prompt."""
        if not split:
            return self._turn_end(full if full is not None and i == len(msgs) - 1
                                  else self.template.render(msgs[: i + 1], tools), len(prompt))
        upto = self.template.render(msgs[: i + 1], tools)
        if not upto.startswith(prompt):
            upto = self._continuation(prompt, upto, msgs, tools, i)
        return _restored(self._turn_end(upto, len(prompt)), len(prompt), msgs[i])

    def _turn_spans(self, upto: str, start: int, weight: float, msgs: list[dict[str, Any]], tools: Any,
                    i: int, split: bool) -> list[Span]:
        """The spans of assistant turn `i` that runs from `start` (the end of its generation prompt) to the end of
        `upto`: its reasoning trace (trained only with train_reasoning), then its answer and end of turn."""
        end = max(start, len(upto.rstrip()))
        built = lambda probe: self._turn_text(probe, tools, i, upto[:start], split)  # noqa: E731
        split_at = trace_end(upto, start, end, msgs[i], self._reasoning_at(upto, start, end, msgs, i, built))
        self._check_written(upto[split_at:end], msgs[i], i)
        spans = [(start, split_at, weight, "reasoning")] if split_at > start and self.train_reasoning else []
        return [*spans, (split_at, end, weight, "answer")]

    def _reasoning_at(self, text: str, start: int, end: int, msgs: list[dict[str, Any]], i: int,
                      built: Callable[[list[dict[str, Any]]], str]) -> tuple[int, int] | None:
        """Where message `i`'s reasoning lies in `text` (which `built(msgs)` made), between `start` and `end`: its
        start (-1: the template does not write it there) and length; None where that cannot be told (trace_end then
        takes its first place)."""
        msg = msgs[i]
        reasoning = msg.get("reasoning_content")
        if not reasoning:
            return None
        at, length, limit = _reasoning_places(text, start, end, msg)
        if at < 0 or text.find(text[at : at + length], at + 1, limit) < 0:
            return at, length  # written nowhere before the answer, or in one place
        # Several places (a short trace such as "R" also spells part of a marker, <|START_RESPONSE|>): the trace is
        # where the template writes a probe given in its stead.
        probe = {**msg, "reasoning_content": _TRACE_PROBE}
        try:
            rendered = built([*msgs[:i], probe])  # the turn made the same way, the probe in the trace's place
        except SftlabError:
            return None
        where = rendered.find(_TRACE_PROBE, start)
        if where < 0:
            return (-1, 0) if rendered[start:end] == text[start:end] else None
        same = rendered[start:where] == text[start:where] and text.startswith(reasoning, where)
        return (where, len(reasoning)) if same else None

    def _check_written(self, text: str, msg: dict[str, Any], i: int) -> None:
        """Refuse (drop the row) where the template leaves out an answer it was given: its content, or a tool call
        (by the function's name), missing from `text`, the answer as rendered. A template that writes only the trace
        of an answer with one would otherwise train its end-of-turn alone, the answer silently gone."""
        what = f"message {i + 1}"
        content = (msg.get("content") or "").strip()
        if content and content not in text:
            raise SftlabError(f"chat template '{self.template.name}' does not write the answer of {what} (its "
                              "content), so it cannot be trained")
        for call in msg.get("tool_calls") or ():
            name = (call.get("function") or call).get("name") if isinstance(call, dict) else None
            if isinstance(name, str) and name not in text:
                raise SftlabError(f"chat template '{self.template.name}' does not write the tool call '{name}' of "
                                  f"{what}, so it cannot be trained")

    def _turn_end(self, upto: str, start: int) -> str:
        """`upto` (a conversation rendered up to a turn) without what a template that always writes its generation
        prompt (Command-R7B) writes after the turn: the turn ends at the tokenizer's EOS (or, where the template
        writes none, at its end-of-turn marker)."""
        if not self.template.always_prompts:
            return upto
        for end in (self.tokenizer.eos_token, self.template.end_of_turn(self.tokens.strings)):
            at = upto.find(end, start) if end else -1
            if at >= 0:
                return upto[: at + len(end)]
        return upto

    def _generation_prompt(self, msgs: list[dict[str, Any]], tools: Any, i: int, prompt: str, opened: str) -> str:
        """What add_generation_prompt adds after messages[:i] (`opened`, where that cannot be told): the template's own
        text, so a </think> in the data (a trace, a tool call's arguments) never reads as thinking switched off."""
        try:
            before = self.template.render(msgs[:i], tools)
        except SftlabError:
            return opened
        # (A template that always writes its generation prompt (Command-R7B) adds nothing here: `opened` then.)
        return prompt[len(before):] if prompt.startswith(before) and len(prompt) > len(before) else opened

    def _continuation(self, prompt: str, upto: str, msgs: list[dict[str, Any]], tools: Any, i: int) -> str:
        """The turn as the model writes it after `prompt`, for a template whose generation prompt opens the
        reasoning trace (DeepSeek-R1's ends with `<think>\\n`) while its assistant messages leave the trace out:
        the prompt, the rest of the trace, the answer as the template writes it. A prompt that closes the trace
        (`<think>\\n</think>`: thinking off) is followed by the answer alone."""
        common = 0
        for a, b in zip(prompt, upto):
            if a != b:
                break
            common += 1
        # Not inside a marker both texts start alike (Command-R7B's <|START_THINKING|> and <|START_RESPONSE|>).
        opening = max(prompt.rfind("<", 0, common), prompt.rfind("[", 0, common))
        if opening > max(prompt.rfind(">", 0, common), prompt.rfind("]", 0, common)):
            common = opening
        msg = msgs[i]
        opened, answer = prompt[common:], upto[common:]
        trace = inline_trace(msg.get("reasoning_content") or "")
        if (any(close in opened for close in TRACE_CLOSES)
                and any(close in self._generation_prompt(msgs, tools, i, prompt, opened) for close in TRACE_CLOSES)):
            # Thinking off (enable_thinking: false): the answer after whatever trace the message has (the trace rule's
            # end: a trace holding </think> itself is still the trace's), untrained.
            found = self._reasoning_at(upto, common, len(upto), msgs, i,
                                       lambda probe: self.template.render(probe[: i + 1], tools))
            return prompt + upto[trace_end(upto, common, len(upto), msg, found):]
        if opened and trace.startswith(opened):
            # The template keeps the newlines after </think> in the answer (its split leaves them): once, not twice.
            rest = trace.rstrip() if answer[:1].isspace() else trace
            return prompt + rest[len(opened):] + answer
        at = answer.find(opened) if opened.strip() else -1
        if at >= 0:
            # History written a little differently from the prompt (Hermes-2-Pro writes "\\n" before a tool turn's
            # <|im_end|> only in history): the answer is what follows the generation prompt's own text there.
            return prompt + answer[at + len(opened):]
        raise SftlabError(
            f"chat template '{self.template.name}' renders the prompt of message {i + 1} differently "
            "from the conversation, so its answer cannot be located"
        )

    def _tool_span(self, msgs: list[dict[str, Any]], tools: Any, i: int, weight: float, full: str) -> list[Span]:
        """The span of a tool result a row trains (train: true): its content where the template writes it."""
        before = self.template.render(msgs[:i], tools)
        at = full.find(msgs[i]["content"], len(before)) if full.startswith(before) else -1
        if at < 0 or not msgs[i]["content"]:
            raise SftlabError(f"message {i + 1} (a tool result) is marked train: true, but chat template "
                              f"'{self.template.name}' does not write its content after the messages before it")
        return [(at, at + len(msgs[i]["content"]), weight, "tool")]

    def _piece(self, text: str, spans: list[Span], conv: Conversation, hidden: bool,
               train_all: bool = False, real: Revealed | None = None, cuts: list[int] = ()) -> _Piece:
        """A rendered text as a piece to tokenize; one rendered from hidden strings gets them back (`real`,
        when already revealed), its spans moved to match, and the positions of the template's markers."""
        if not hidden:
            return _Piece(text, spans, conv, train_all, cuts=list(cuts))
        real = real or self.tokens.reveal(text)
        moved = [(real.position(a), real.position(b), w, kind) for a, b, w, kind in spans]
        return _Piece(real.text, moved, conv, train_all, markers=real.markers, cuts=[real.position(c) for c in cuts])

    def _revealed(self, hidden_full: str, msgs: list[dict[str, Any]], tools: Any) -> Revealed:
        """The conversation rendered with placeholders, put back. It must be what the template renders from
        the data itself (`msgs`, `tools`); a template that rewrites the data's strings (or data holding the
        placeholder characters) cannot be escaped."""
        real = self.tokens.reveal(hidden_full)
        if real.text != self.template.render(msgs, tools):
            raise SftlabError(
                f"chat template '{self.template.name}' alters message text that spells a special token, so it "
                "cannot be kept as text; fix the data or set escape_special_tokens: false"
            )
        return real

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
        turns: list[tuple[int, float]] = []
        for i, m in enumerate(conv.messages):
            if m.role == "tool" and m.train:  # tool results are the prompt's, unless a row says otherwise
                turns.append((i, 1.0 if m.weight is None else m.weight))
            if m.role != "assistant":
                continue
            train = m.train if m.train is not None else (self.train_on == "all_assistant" or i == last)
            weight = 1.0 if m.weight is None else m.weight
            empty = not m.content.strip() and not m.tool_calls
            if train and weight > 0 and not empty:
                turns.append((i, weight))
        return turns

    # --- masking: tokens + offsets + spans → labels ---------------------------------------------------

    def _mask(self, piece: _Piece, input_ids: np.ndarray, locate: Any) -> tuple[Example | Dropped, bool]:
        """The example of a tokenized piece (or why it is dropped), and whether max_length cut it."""
        # Plain lists from here: a few C-level list operations per example beat a dozen numpy calls
        # on arrays of a few hundred tokens.
        conv = piece.conv
        ids: list[int] = input_ids.tolist()
        weights: list[float] | None = None
        inserted: list[int] = []
        if piece.train_all:
            # Raw text gets the tokenizer's usual BOS and an EOS that marks the document's end; a
            # conversation trained whole (train_on: all) is trained exactly as its template writes it.
            if conv.is_text and self._adds_bos and self.bos_id is not None:
                ids.insert(0, self.bos_id)
            if conv.is_text and self.eos_id is not None and (not ids or ids[-1] != self.eos_id):
                ids.append(self.eos_id)
            labels = ids[:]
        else:
            labels, weights, inserted = self._mask_spans(ids, locate, piece.spans)
        truncated = len(ids) > self.max_length
        if truncated:
            del ids[self.max_length :], labels[self.max_length :]
            if weights is not None:
                del weights[self.max_length :]
        if labels.count(IGNORE_INDEX) == len(labels):
            return Dropped(conv.source, conv.row, f"answer lost to truncation at max_length={self.max_length}"), truncated
        example = Example(ids, labels, conv.source, conv.row, weights)
        if self.parts and piece.parts:
            example.parts = _token_parts(piece.parts, locate, inserted, len(ids))
        return example, truncated

    def _mask_spans(
        self, ids: list[int], locate: Any, spans: list[Span]
    ) -> tuple[list[int], list[float] | None, list[int]]:
        """Labels (and per-token weights when a span has a weight other than 1) for `ids`, which
        gains the EOS tokens the contract inserts (their positions before insertion, the third value)."""
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
            ends = kind == "answer" and ids[hi - 1] not in self.special_ids and self.eos_id is not None
            if ends and hi < len(ids) and ids[hi] == self.eos_id:
                hi, ends = hi + 1, False
            labels[lo:hi] = ids[lo:hi]
            if weights is not None:
                weights[lo:hi] = [weight] * (hi - lo)
            if ends:
                eos_after.append((hi, weight))
        for hi, weight in reversed(eos_after):
            ids.insert(hi, self.eos_id)
            labels.insert(hi, self.eos_id)
            if weights is not None:
                weights.insert(hi, weight)
        return labels, weights, [hi for hi, _ in eos_after]


# Pieces tokenized per batch call (bounds the memory of a large file's encodings).
_CHUNK = 1024
# Below this many conversations one process is quicker than starting workers.
PARALLEL_MIN = 2000
def _single_threaded_tokenizer() -> None:
    """A worker's initializer: its tokenizer runs single-threaded (the Rust thread pool does not survive a fork, and
    the workers share the cores already). Set in the worker only: the parent, which may be the UI serving other
    requests on threads, keeps its environment and its threads."""
    os.environ["TOKENIZERS_PARALLELISM"] = "false"


def _encode_part(encoder: Encoder, conversations: list[Conversation], start: int, end: int) -> tuple[Encoded, list[Dropped]]:
    """A forked worker's part of a parallel encode (the encoder and conversations inherited, not pickled)."""
    return encoder._encode_serial(conversations[start:end])


def _token_parts(parts: list[tuple[int, int, str]], locate: Any, inserted: list[int], length: int) -> list[tuple[int, int, str]]:
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


# Given in place of a reasoning to see where a template writes it (Encoder._reasoning_at).
_TRACE_PROBE = "sftlab-trace-probe-5e1c"


def _reasoning_places(text: str, start: int, end: int, msg: dict[str, Any]) -> tuple[int, int, int]:
    """The first place of the message's reasoning in text[start:end] before its answer (the last place its content
    is written; as it is, else stripped as templates may write it): where (-1 for none) and how long; and that limit."""
    reasoning, content = msg.get("reasoning_content") or "", (msg.get("content") or "").strip()
    limit = text.rfind(content, start, end) if content else -1
    limit = end if limit < 0 else limit
    for form in dict.fromkeys((reasoning, reasoning.strip())):
        at = text.find(form, start, limit) if form else -1
        if at >= 0:
            return at, len(form), limit
    return -1, 0, limit


def _restored(upto: str, start: int, msg: dict[str, Any]) -> str:
    """The turn upto[start:] with its reasoning put back where the template writes an empty trace for it
    (Kimi-K2-Thinking writes `<think></think>` for every answer before the last tool call, its own last one
    included): what the model writes after the generation prompt holds the trace."""
    reasoning = msg.get("reasoning_content")
    if not reasoning or reasoning in upto[start:]:
        return upto
    opened = upto.find(THINK_OPEN, start)
    closed = upto.find(THINK_CLOSE, opened + len(THINK_OPEN)) if opened >= 0 else -1
    inside = upto[opened + len(THINK_OPEN) : closed]
    if closed < 0 or inside.strip() or upto[start:opened].strip():
        return upto
    body = f"\n{reasoning}\n" if inside else reasoning
    return upto[: opened + len(THINK_OPEN)] + body + upto[closed:]


def trace_end(text: str, start: int, end: int, msg: dict[str, Any], found: tuple[int, int] | None = None) -> int:
    """Where the reasoning trace that opens the turn text[start:end] ends (the answer's first character); `start`
    when the turn has none. A `<think>` trace ends after its `</think>` and the whitespace that follows; one the
    generation prompt opened (Qwen3.5's, DeepSeek-R1's) starts with the reasoning itself. A template with other
    markers (gpt-oss' analysis channel) ends it after the reasoning and the marker that closes it."""
    segment = text[start:end]
    # The trace is found by its own text (`found`: where it starts, -1 nowhere, and its length; None: its first place
    # before the answer): a trace may hold </think>, <think> or any marker itself, so its end is the marker after it.
    at, length = found if found is not None else _reasoning_places(text, start, end, msg)[:2]
    after = at - start + length if at >= 0 else 0
    close = segment.find(THINK_CLOSE, after)
    empty = close >= 0 and segment[:close].strip() in ("", THINK_OPEN)
    if close >= 0 and (empty or (at >= 0 and not segment[after:close].strip())):
        close_end = start + close + len(THINK_CLOSE)
        while close_end < end and text[close_end].isspace():
            close_end += 1
        return close_end
    if at < 0:
        return start
    # The marker that closes the reasoning's channel (gpt-oss' <|end|>) is the trace's; what follows is the answer's.
    closing = re.match(r"\s*(?:<\|[A-Za-z0-9_]+\|>)?", segment[after:])
    return start + after + (closing.end() if closing else 0)
