"""What a model's reply holds — its reasoning trace, its answer and its tool calls — read from the generated text
the way its chat template's family writes them, piece by piece as the text streams in.

- reasoning: a leading `<think>…</think>` (Qwen3, QwQ, DeepSeek-R1 distills), or everything up to `</think>` when
  the generation prompt opened the trace itself (it ends with `<think>`);
- tool calls, by the family the template renders them for: Hermes/Qwen `<tool_call>{json}</tool_call>`, Llama 3.1
  a bare `{"name": …, "parameters": …}` answer, Mistral `[TOOL_CALLS][{…}, …]` (or `[TOOL_CALLS]name[ARGS]{…}`).

A call that does not parse — broken JSON, no name, a function the request did not offer — stays text in the
answer, as the model wrote it: a client never gets a call it cannot make, and the reply is never lost.
"""

from __future__ import annotations

import json
import secrets
import string
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

from sftlab.data.reasoning import THINK_CLOSE, THINK_OPEN
HERMES_OPEN, HERMES_CLOSE = "<tool_call>", "</tool_call>"
MISTRAL_CALLS, MISTRAL_ARGS = "[TOOL_CALLS]", "[ARGS]"

# The token strings a family's reply is read by: kept when decoding even where the tokenizer marks them special
# (Mistral's [TOOL_CALLS] is a control token that skip_special_tokens would drop).
MARKERS = (THINK_OPEN, THINK_CLOSE, HERMES_OPEN, HERMES_CLOSE, MISTRAL_CALLS, MISTRAL_ARGS)


def tool_family(template_source: str) -> str | None:
    """The way a chat template expects tool calls written: "hermes", "mistral", "llama3", or None (no tools)."""
    if HERMES_OPEN in template_source:
        return "hermes"
    if MISTRAL_CALLS in template_source:
        return "mistral"
    if "<|python_tag|>" in template_source or ('"parameters"' in template_source
                                               and "<|start_header_id|>" in template_source):
        return "llama3"
    return None


def opens_reasoning(prompt_text: str) -> bool:
    """Whether the generation prompt ends inside a reasoning trace (DeepSeek-R1 distills end it with `<think>\\n`):
    the model's reply then starts with its reasoning, closed by `</think>`."""
    return prompt_text.rstrip().endswith(THINK_OPEN)


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: str  # JSON text, as OpenAI's API gives it
    id: str

    def to_openai(self, index: int | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "type": "function",
                               "function": {"name": self.name, "arguments": self.arguments}}
        return out if index is None else {"index": index, **out}


def call_id(family: str | None) -> str:
    """A fresh tool-call id in the form the family's template accepts back (Mistral's: 9 letters and digits)."""
    if family == "mistral":
        return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(9))
    return "call_" + secrets.token_hex(12)


@dataclass
class Piece:
    """One part of a reply as it streams: `kind` is "reasoning", "content" or "tool_call"."""

    kind: str
    text: str = ""
    call: Optional[ToolCall] = None


@dataclass
class Reply:
    reasoning: str = ""
    content: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)

    def add(self, piece: Piece) -> None:
        """One streamed piece into the whole reply."""
        if piece.kind == "reasoning":
            self.reasoning += piece.text
        elif piece.kind == "tool_call":
            if piece.call is not None:
                self.tool_calls.append(piece.call)
        else:
            self.content += piece.text


def _held(buffer: str, marker: str) -> int:
    """How many characters at the end of `buffer` could be the start of `marker` (held back until it is known)."""
    for n in range(min(len(marker) - 1, len(buffer)), 0, -1):
        if marker.startswith(buffer[-n:]):
            return n
    return 0


class ReplyReader:
    """Reads a reply as it streams: `feed(text)` and `finish()` give its Pieces, text held back only while it could
    still be the start of a marker, a tool call held until it is whole (then given as one piece)."""

    def __init__(self, family: str | None = None, tool_names: Iterable[str] | None = None,
                 reasoning_open: bool = False):
        """`family`: how tool calls are written (tool_family); None, or no `tool_names`, reads no tool calls.
        `reasoning_open`: the prompt opened the trace (opens_reasoning)."""
        self.names = set(tool_names or ())
        self.family = family if self.names else None
        self.state = "reasoning" if reasoning_open else "start"
        self.buffer = ""
        self.calls = 0
        self.started: set[str] = set()  # the kinds of text given out so far
        self.space: dict[str, str] = {}  # blank space at the end of a kind's text, held back

    # --- parsing one call --------------------------------------------------------------------------------------

    def _call(self, name: Any, arguments: Any) -> ToolCall | None:
        if not isinstance(name, str) or name not in self.names:
            return None
        if arguments is None:
            arguments = {}
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except json.JSONDecodeError:
                return None
        if not isinstance(arguments, dict):
            return None
        return ToolCall(name, json.dumps(arguments, ensure_ascii=False), call_id(self.family))

    def _json_calls(self, text: str, args_key: str) -> list[ToolCall] | None:
        """Calls written as one JSON object or a list of them ({"name", args_key}), or None."""
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            return None
        items = value if isinstance(value, list) else [value]
        calls = [self._call(v.get("name"), v.get(args_key, v.get("arguments"))) if isinstance(v, dict) else None
                 for v in items]
        return calls if calls and all(calls) else None  # type: ignore[return-value]

    def _mistral(self, text: str) -> list[ToolCall] | None:
        """After [TOOL_CALLS]: a JSON list (Mistral v3), or `name[ARGS]{json}` once or more (v11 and later)."""
        body = text.strip()
        if body.startswith("["):
            return self._json_calls(body, "arguments")
        calls = []
        for part in body.split(MISTRAL_CALLS):
            name, sep, args = part.partition(MISTRAL_ARGS)
            call = self._call(name.strip(), args.strip()) if sep else None
            if call is None:
                return None
            calls.append(call)
        return calls or None

    # --- streaming ---------------------------------------------------------------------------------------------

    def _text(self, kind: str, text: str) -> list[Piece]:
        """Reasoning or answer text with the blank space at either end of each left out (the newlines around a
        trace, the blank line after `</think>`); space at the end is held until more text follows it."""
        started = kind in self.started
        text = self.space.pop(kind, "") + text if started else text.lstrip()
        body = text.rstrip()
        if text[len(body):]:
            self.space[kind] = text[len(body):]
        if not body:
            return []
        self.started.add(kind)
        return [Piece(kind, body)]

    def _called(self, calls: list[ToolCall]) -> list[Piece]:
        self.calls += len(calls)
        self.space.pop("content", None)
        return [Piece("tool_call", call=c) for c in calls]

    def feed(self, text: str, final: bool = False) -> list[Piece]:
        self.buffer += text
        out: list[Piece] = []
        while True:
            b = self.buffer
            if self.state == "start":
                head = b.lstrip()
                if head.startswith(THINK_OPEN):
                    self.buffer, self.state = head[len(THINK_OPEN):], "reasoning"
                    continue
                if not final and THINK_OPEN.startswith(head):
                    return out  # could still become <think>
                self.state = "answer"
                continue
            if self.state == "reasoning":
                at = b.find(THINK_CLOSE)
                if at >= 0:
                    out += self._text("reasoning", b[:at])
                    self.buffer, self.state = b[at + len(THINK_CLOSE):], "answer"
                    continue
                keep = 0 if final else _held(b, THINK_CLOSE)
                out += self._text("reasoning", b[: len(b) - keep])
                self.buffer = b[len(b) - keep:]
                return out
            if self.state == "answer":
                if self.family == "llama3" and "content" not in self.started and self.calls == 0:
                    head = b.lstrip()
                    if head.startswith("{") or (not final and not head):
                        if not final:
                            return out  # a bare JSON answer may be a call: known once it is whole
                        calls = self._json_calls(head, "parameters")
                        self.buffer = ""
                        return out + (self._called(calls) if calls else self._text("content", b))
                opener = {"hermes": HERMES_OPEN, "mistral": MISTRAL_CALLS}.get(self.family or "")
                at = b.find(opener) if opener else -1
                if opener and at >= 0:
                    out += self._text("content", b[:at])
                    self.buffer, self.state = b[at + len(opener):], "call"
                    continue
                keep = _held(b, opener) if opener and not final else 0
                out += self._text("content", b[: len(b) - keep])
                self.buffer = b[len(b) - keep:]
                return out
            # state "call": a Hermes call ends at </tool_call>; Mistral's calls run to the end of the reply
            if self.family == "hermes":
                at = b.find(HERMES_CLOSE)
                if at < 0 and not final:
                    return out
                body = b[:at] if at >= 0 else b
                calls = self._json_calls(body.strip(), "arguments")
                raw = HERMES_OPEN + body + (HERMES_CLOSE if at >= 0 else "")
                out += self._called(calls) if calls else self._text("content", raw)
                self.buffer, self.state = (b[at + len(HERMES_CLOSE):] if at >= 0 else ""), "answer"
                continue
            if not final:
                return out
            calls = self._mistral(b)
            out += self._called(calls) if calls else self._text("content", MISTRAL_CALLS + b)
            self.buffer, self.state = "", "answer"
            return out

    def finish(self) -> list[Piece]:
        """The pieces held back, once the reply has ended (space at the very end of a text is left out)."""
        return self.feed("", final=True)


def read_reply(text: str, family: str | None = None, tool_names: Iterable[str] | None = None,
               reasoning_open: bool = False) -> Reply:
    """A whole reply's reasoning, answer and tool calls (what ReplyReader gives when fed all of it at once)."""
    reader = ReplyReader(family, tool_names, reasoning_open)
    reply = Reply()
    for p in reader.feed(text) + reader.finish():
        reply.add(p)
    return reply
