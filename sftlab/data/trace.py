"""Where an answer's reasoning trace lies in a rendered turn: where it starts, where it ends and the answer begins
(the split between the "reasoning" and "answer" spans of docs/data.md's masking contract), and the turn with its
trace put back where a template writes an empty one. Pure functions of the rendered text and the message."""

from __future__ import annotations

import re
from typing import Any, Callable

from sftlab.data.reasoning import THINK_CLOSE, THINK_OPEN
from sftlab.errors import SftlabError

# The ends of reasoning traces: a generation prompt holding one has thinking switched off (enable_thinking: false).
TRACE_CLOSES = (THINK_CLOSE, "<|END_THINKING|>")

# Given in place of a reasoning to see where a template writes it (reasoning_at).
TRACE_PROBE = "sftlab-trace-probe-5e1c"


def reasoning_places(text: str, start: int, end: int, msg: dict[str, Any]) -> tuple[int, int, int]:
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


def reasoning_at(text: str, start: int, end: int, msgs: list[dict[str, Any]], i: int,
                 built: Callable[[list[dict[str, Any]]], str]) -> tuple[int, int] | None:
    """Where message `i`'s reasoning lies in `text` (which `built(msgs)` made), between `start` and `end`: its
    start (-1: the template does not write it there) and length; None where that cannot be told (trace_end then
    takes its first place)."""
    msg = msgs[i]
    reasoning = msg.get("reasoning_content")
    if not reasoning:
        return None
    at, length, limit = reasoning_places(text, start, end, msg)
    if at < 0 or text.find(text[at : at + length], at + 1, limit) < 0:
        return at, length  # written nowhere before the answer, or in one place
    # Several places (a short trace such as "R" also spells part of a marker, <|START_RESPONSE|>): the trace is
    # where the template writes a probe given in its stead.
    probe = {**msg, "reasoning_content": TRACE_PROBE}
    try:
        rendered = built([*msgs[:i], probe])  # the turn made the same way, the probe in the trace's place
    except SftlabError:
        return None
    where = rendered.find(TRACE_PROBE, start)
    if where < 0:
        return (-1, 0) if rendered[start:end] == text[start:end] else None
    same = rendered[start:where] == text[start:where] and text.startswith(reasoning, where)
    return (where, len(reasoning)) if same else None


def restored(upto: str, start: int, msg: dict[str, Any]) -> str:
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
    at, length = found if found is not None else reasoning_places(text, start, end, msg)[:2]
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
