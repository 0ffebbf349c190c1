"""Rendering: a Conversation → the text to tokenize and the character spans to train in it (docs/data.md, "The
masking contract").

The conversation is rendered whole (F); each trained assistant turn i is found by rendering P_i (the messages
before it, with the generation prompt) and F_i (up to and including it): its span is the text between them, split
into its reasoning trace (trace.py) and its answer. Where P_i ends is a cut: the tokenizer keeps the prompt's tokens
apart from the answer's there (tokenize.py). A template that rewrites earlier turns (prefix-unstable) gives one
piece per trained turn instead. The data's special-token strings are hidden while rendering (escaping), so that
every special-token string left is the template's own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sftlab.data.conversation import Conversation
from sftlab.data.reasoning import inline_trace
from sftlab.data.templates import ChatTemplate
from sftlab.data.tokenize import Revealed, TokenizerView
from sftlab.data.trace import TRACE_CLOSES, reasoning_at, restored, trace_end
from sftlab.defaults import MAX_LENGTH
from sftlab.errors import SftlabError

TRAIN_ON = ("all_assistant", "last_assistant", "all")

# Conversations with more trained turns than this render only the turns that survive truncation.
LONG_CONVERSATION_TURNS = 32

# (start, end, weight, kind) of trained characters; kind: "reasoning", "answer" (an answer or tool call and the end
# of its turn) or "tool" (a tool result a row trains).
Span = tuple[int, int, float, str]


@dataclass
class Piece:
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


@dataclass
class _Rendered:
    """A conversation as its template renders it: the messages and tools the template is given (the data's
    special-token strings hidden in them when `hidden`), the whole text `full`, and that text with them put back
    (`real`, when hidden)."""

    conv: Conversation
    msgs: list[dict[str, Any]]
    tools: Any
    hidden: bool
    full: str
    real: Revealed | None

    def real_position(self, position: int) -> int:
        return self.real.position(position) if self.real is not None else position


class Renderer:
    """Renders conversations with one template for one tokenizer (its special-token strings), as pieces to
    tokenize."""

    def __init__(self, tokens: TokenizerView, template: ChatTemplate | None, train_on: str = "all_assistant",
                 max_length: int = MAX_LENGTH, train_reasoning: bool = True, parts: bool = False,
                 long_turns: int = LONG_CONVERSATION_TURNS):
        self.tokens = tokens
        self.template = template
        self.train_on = train_on
        self.max_length = max_length
        self.train_reasoning = train_reasoning
        self.parts = parts
        self.long_turns = long_turns

    def render(self, conv: Conversation) -> tuple[list[Piece], bool]:
        """The pieces of `conv` (none when it trains nothing) and whether it was split into one per trained turn.
        Raises SftlabError, the reason its row is dropped, where the template cannot render it as trained."""
        if conv.is_text:
            text = conv.messages[0].content
            markers = [] if self.tokens.escape and self.tokens.spells_special(text) else None
            return [Piece(text, [], conv, train_all=True, markers=markers)], False
        if self.template is None:
            raise SftlabError("a chat template is needed for conversations")
        r = self._rendered(conv)
        if self.train_on == "all":
            for i, m in enumerate(r.msgs):
                if m["role"] == "assistant":
                    check_written(r.full, m, i, self.template.name)
            return [self._piece(r, r.full, [], train_all=True, real=r.real)], False
        trained = trained_turns(conv, self.train_on)
        whole = self._whole(r, trained)
        if whole is not None:
            return whole, False
        return self._per_turn(r, trained), True

    def _rendered(self, conv: Conversation) -> _Rendered:
        plain = [template_message(m, self.template) for m in conv.messages]
        msgs, tools, hidden = plain, conv.tools, False
        if self.tokens.escape:
            # The data's special-token strings become placeholders while rendering (tokenize.py).
            (msgs, tools), hidden = self.tokens.hide((plain, conv.tools))
        full = self.template.render(msgs, tools)
        return _Rendered(conv, msgs, tools, hidden, full, self._revealed(full, plain, conv.tools) if hidden else None)

    # --- the two strategies --------------------------------------------------------------------------------------

    def _whole(self, r: _Rendered, trained: list[tuple[int, float]]) -> list[Piece] | None:
        """The conversation as one piece (none when it trains nothing), or None where a turn's prefix is not a
        prefix of the conversation (a prefix-unstable template)."""
        stop = self._truncation_point(r, trained)
        spans: list[Span] = []
        owners: list[int] = []  # the message of each span
        cuts: list[int] = []
        for i, weight in trained:
            if r.msgs[i]["role"] == "tool":
                spans.append(self._tool_span(r, i, weight))
                owners.append(i)
                continue
            prompt = self.template.render(r.msgs[:i], r.tools, add_generation_prompt=True)
            upto = self._turn_text(r.msgs, r.tools, i, prompt, split=False, full=r.full)
            if not (r.full.startswith(upto) and upto.startswith(prompt)) or restored(upto, len(prompt), r.msgs[i]) != upto:
                return None
            turn = self._turn_spans(upto, len(prompt), weight, r.msgs, r.tools, i, split=False)
            spans += turn
            owners += [i] * len(turn)
            cuts.append(len(prompt))
            if stop is not None and r.real_position(len(prompt)) >= stop:
                break
        kept = [(s, i) for s, i in zip(spans, owners) if s[1] > s[0]]
        if not kept:
            return []
        piece = self._piece(r, r.full, [s for s, _ in kept], real=r.real, cuts=cuts)
        return [self._with_parts(piece, r.msgs, [i for _, i in kept])]

    def _truncation_point(self, r: _Rendered, trained: list[tuple[int, float]]) -> int | None:
        """Each turn's prefix is rendered whole, so the work grows with turns²; in a conversation with many trained
        turns only those that start before the truncation point (this character, None: no limit) are rendered (the
        first one after it too, so its answer is reported as lost to truncation exactly as before)."""
        if len(trained) <= self.long_turns:
            return None
        whole = self._piece(r, r.full, [], real=r.real)
        return self.tokens.start_of_token(whole.text, whole.markers, self.max_length)

    def _per_turn(self, r: _Rendered, trained: list[tuple[int, float]]) -> list[Piece]:
        """Prefix-unstable template (it rewrites earlier turns, as Qwen3's drops their reasoning): one piece per
        trained turn, its prompt exactly what inference sends for that turn, trained on that turn only."""
        pieces = []
        for i, weight in trained:
            if r.msgs[i]["role"] == "tool":
                raise SftlabError(f"message {i + 1} (a tool result) is marked train: true, but chat template "
                                  f"'{self.template.name}' rewrites earlier turns, so a tool result cannot be trained "
                                  "with it")
            prompt = self.template.render(r.msgs[:i], r.tools, add_generation_prompt=True)
            upto = self._turn_text(r.msgs, r.tools, i, prompt, split=True)
            turn = [s for s in self._turn_spans(upto, len(prompt), weight, r.msgs, r.tools, i, split=True) if s[1] > s[0]]
            if turn:
                piece = self._piece(r, upto, turn, cuts=[len(prompt)])
                pieces.append(self._with_parts(piece, r.msgs[: i + 1], [i] * len(turn)))
        for k, piece in enumerate(pieces):
            piece.split_last = k == len(pieces) - 1
        return pieces

    # --- one turn: its text and spans ----------------------------------------------------------------------------

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
        return restored(self._turn_end(upto, len(prompt)), len(prompt), msgs[i])

    def _turn_spans(self, upto: str, start: int, weight: float, msgs: list[dict[str, Any]], tools: Any,
                    i: int, split: bool) -> list[Span]:
        """The spans of assistant turn `i` that runs from `start` (the end of its generation prompt) to the end of
        `upto`: its reasoning trace (trained only with train_reasoning), then its answer and end of turn."""
        end = max(start, len(upto.rstrip()))
        built = lambda probe: self._turn_text(probe, tools, i, upto[:start], split)  # noqa: E731
        split_at = trace_end(upto, start, end, msgs[i], reasoning_at(upto, start, end, msgs, i, built))
        check_written(upto[split_at:end], msgs[i], i, self.template.name)
        spans = [(start, split_at, weight, "reasoning")] if split_at > start and self.train_reasoning else []
        return [*spans, (split_at, end, weight, "answer")]

    def _turn_end(self, upto: str, start: int) -> str:
        """`upto` (a conversation rendered up to a turn) without what a template that always writes its generation
        prompt (Command-R7B) writes after the turn: the turn ends at the tokenizer's EOS (or, where the template
        writes none, at its end-of-turn marker)."""
        if not self.template.always_prompts:
            return upto
        for end in (self.tokens.tokenizer.eos_token, self.template.end_of_turn(self.tokens.strings)):
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
        common = _common_start(prompt, upto)
        msg = msgs[i]
        opened, answer = prompt[common:], upto[common:]
        trace = inline_trace(msg.get("reasoning_content") or "")
        if (any(close in opened for close in TRACE_CLOSES)
                and any(close in self._generation_prompt(msgs, tools, i, prompt, opened) for close in TRACE_CLOSES)):
            # Thinking off (enable_thinking: false): the answer after whatever trace the message has (the trace rule's
            # end: a trace holding </think> itself is still the trace's), untrained.
            found = reasoning_at(upto, common, len(upto), msgs, i,
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

    def _tool_span(self, r: _Rendered, i: int, weight: float) -> Span:
        """The span of a tool result a row trains (train: true): its content where the template writes it."""
        content = r.msgs[i]["content"]
        before = self.template.render(r.msgs[:i], r.tools)
        at = r.full.find(content, len(before)) if r.full.startswith(before) else -1
        if at < 0 or not content:
            raise SftlabError(f"message {i + 1} (a tool result) is marked train: true, but chat template "
                              f"'{self.template.name}' does not write its content after the messages before it")
        return (at, at + len(content), weight, "tool")

    # --- pieces --------------------------------------------------------------------------------------------------

    def _piece(self, r: _Rendered, text: str, spans: list[Span], train_all: bool = False,
               real: Revealed | None = None, cuts: list[int] = ()) -> Piece:
        """A rendered text as a piece to tokenize; one rendered from hidden strings gets them back (`real`,
        when already revealed), its spans and cuts moved to match, and the positions of the template's markers."""
        if not r.hidden:
            return Piece(text, spans, r.conv, train_all, cuts=list(cuts))
        real = real or self.tokens.reveal(text)
        moved = [(real.position(a), real.position(b), w, kind) for a, b, w, kind in spans]
        return Piece(real.text, moved, r.conv, train_all, markers=real.markers, cuts=[real.position(c) for c in cuts])

    def _with_parts(self, piece: Piece, msgs: list[dict[str, Any]], owners: list[int]) -> Piece:
        """`piece` with the character ranges inspect shows apart (only with parts=True)."""
        if self.parts:
            piece.parts = char_parts(piece.text, piece.spans, msgs, owners)
        return piece

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


def template_message(m: Any, template: ChatTemplate) -> dict[str, Any]:
    """A message as the template is given it."""
    d = m.to_template_dict()
    if m.tool_calls and not template.handles_tool_calls:
        # A template that ignores tool_calls would drop the call: write it as the answer's text.
        calls = [c.get("function", c) for c in m.tool_calls]
        text = json.dumps(calls[0] if len(calls) == 1 else calls, ensure_ascii=False)
        d["content"] = f"{d['content']}\n{text}" if d["content"] else text
        del d["tool_calls"]
    return d


def trained_turns(conv: Conversation, train_on: str) -> list[tuple[int, float]]:
    """(message index, weight) of the assistant turns to train, by mode and per-message flags, and of the tool
    results a row marks train: true."""
    assistant = conv.assistant_indices
    last = assistant[-1] if assistant else -1
    turns: list[tuple[int, float]] = []
    for i, m in enumerate(conv.messages):
        if m.role == "tool" and m.train:  # tool results are the prompt's, unless a row says otherwise
            turns.append((i, 1.0 if m.weight is None else m.weight))
        if m.role != "assistant":
            continue
        train = m.train if m.train is not None else (train_on == "all_assistant" or i == last)
        weight = 1.0 if m.weight is None else m.weight
        empty = not m.content.strip() and not m.tool_calls
        if train and weight > 0 and not empty:
            turns.append((i, weight))
    return turns


def check_written(text: str, msg: dict[str, Any], i: int, template_name: str) -> None:
    """Refuse (drop the row) where the template leaves out an answer it was given: its content, or a tool call
    (by the function's name), missing from `text`, the answer as rendered. A template that writes only the trace
    of an answer with one would otherwise train its end-of-turn alone, the answer silently gone."""
    what = f"message {i + 1}"
    content = (msg.get("content") or "").strip()
    if content and content not in text:
        raise SftlabError(f"chat template '{template_name}' does not write the answer of {what} (its "
                          "content), so it cannot be trained")
    for call in msg.get("tool_calls") or ():
        name = (call.get("function") or call).get("name") if isinstance(call, dict) else None
        if isinstance(name, str) and name not in text:
            raise SftlabError(f"chat template '{template_name}' does not write the tool call '{name}' of "
                              f"{what}, so it cannot be trained")


def char_parts(text: str, spans: list[Span], msgs: list[dict[str, Any]],
               owners: list[int]) -> list[tuple[int, int, str]]:
    """The character ranges inspect shows apart: the trained spans (an answer that is a tool call as "tool_call";
    `owners`: each span's message) and every tool result's content, found in order."""
    out = []
    for (start, end, _, kind), i in zip(spans, owners):
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
    return sorted({p for p in out if p[1] > p[0]})


def _common_start(prompt: str, upto: str) -> int:
    """How many characters `prompt` and `upto` start with alike, never ending inside a marker both start alike
    (Command-R7B's <|START_THINKING|> and <|START_RESPONSE|>)."""
    common = 0
    for a, b in zip(prompt, upto):
        if a != b:
            break
        common += 1
    opening = max(prompt.rfind("<", 0, common), prompt.rfind("[", 0, common))
    if opening > max(prompt.rfind(">", 0, common), prompt.rfind("]", 0, common)):
        common = opening
    return common
