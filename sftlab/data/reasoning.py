"""Reasoning traces and tool calls: how a data row's assistant message carries them, and how a chat template is
given them back.

A row gives reasoning as `reasoning_content` (or `reasoning`, the field OpenAI-compatible servers use) or inline
as a leading `<think>…</think>` in `content`; either becomes `Message.reasoning`, the content keeping the answer
alone. Tool calls come in the OpenAI shape, `arguments` a JSON string or an object; they become
`{"type": "function", "function": {"name": str, "arguments": dict}}` (plus the call's `id`), the mapping that
templates render with `| tojson` (a string there would be written as a quoted string, the wrong target).

A template is given the reasoning the way it reads it (`template_messages`): `reasoning_content` and `thinking`
(gpt-oss) where its source reads either, else written into the content as `<think>\\n…\\n</think>\\n\\n` in front
of the answer, which templates such as DeepSeek-R1's split on `</think>` and others write as it is.
"""

from __future__ import annotations

import json
from typing import Any

from sftlab.data import fields
from sftlab.errors import RowError, json_type

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
# The fields a row's assistant message gives its trace in (at most one of them).
FIELDS = ("reasoning_content", "reasoning")
# The RowError text of a trace that is opened and never closed (data check counts these rows apart).
UNCLOSED_TRACE = f"opens a {THINK_OPEN} reasoning trace but never closes it with {THINK_CLOSE}"


def split_think(content: str, field: str) -> tuple[str | None, str]:
    """(reasoning, answer) of a content that may start with a `<think>…</think>` trace (None: no trace). The
    newlines that frame the trace are the template's, not the text's: they are stripped, as Qwen3's template
    does. A content that only closes a trace (`…</think>answer`, DeepSeek-R1's outputs, whose generation prompt
    opens it) has the text before `</think>` as its reasoning. A `<think>` later in the text is the answer's own."""
    lead = content.lstrip()
    if not lead.startswith(THINK_OPEN):
        # DeepSeek-R1's outputs: the trace opened by the generation prompt, so only its end is in the content.
        end = lead.find(THINK_CLOSE)
        if end < 0 or THINK_OPEN in lead[:end]:
            return None, content
        return lead[:end].strip("\n"), lead[end + len(THINK_CLOSE):].lstrip("\n")
    end = lead.find(THINK_CLOSE)
    if end < 0:
        raise RowError(UNCLOSED_TRACE, field=field)
    return lead[len(THINK_OPEN):end].strip("\n"), lead[end + len(THINK_CLOSE):].lstrip("\n")


def message_reasoning(msg: dict[str, Any], content: str, field: str, content_key: str = "content") -> tuple[str | None, str]:
    """(reasoning, answer) of an assistant message: its reasoning field or the trace leading its content (the
    `content_key` field: ShareGPT's is `value`)."""
    given = [k for k in FIELDS if msg.get(k) is not None]
    if len(given) > 1:
        raise RowError("gives both reasoning_content and reasoning; keep one", field=f"{field}.reasoning")
    inline, answer = split_think(content, f"{field}.{content_key}")
    if not given:
        return inline, answer
    key = given[0]
    value = fields.optional_string(msg, key, f"{field}.{key}")
    if inline is not None:
        raise RowError(f"has a {THINK_OPEN} trace in its content as well as {key}; keep one", field=f"{field}.{content_key}")
    return value.strip("\n"), content


def tool_calls(value: Any, field: str) -> list[dict[str, Any]] | None:
    """A message's tool calls, normalised (module docstring); None for none."""
    if value is None or value == []:
        return None
    if not isinstance(value, list):
        raise RowError(f"must be a list of tool calls, got {json_type(value)}", field=field)
    return [tool_call(call, f"{field}[{i}]") for i, call in enumerate(value)]


def tool_call(call: Any, field: str) -> dict[str, Any]:
    """One call, OpenAI's `{type, id, function: {name, arguments}}` or a bare `{name, arguments}`."""
    if not isinstance(call, dict):
        raise RowError(f"must be an object with 'function' (or 'name' and 'arguments'), got {json_type(call)}", field=field)
    if call.get("type", "function") not in (None, "function"):
        kind = f"'{call['type']}'" if isinstance(call["type"], str) else json_type(call["type"])
        raise RowError(f"must be 'function' (the one kind of tool call templates render), got {kind}",
                       field=f"{field}.type")
    fn, where = (call["function"], f"{field}.function") if call.get("function") is not None else (call, field)
    if not isinstance(fn, dict):
        raise RowError(f"must be an object with 'name' and 'arguments', got {json_type(fn)}", field=where)
    name = fn.get("name")
    if not isinstance(name, str) or not name:
        raise RowError("must be the function's name (a non-empty string)", field=f"{where}.name")
    out: dict[str, Any] = {"type": "function", "function": {"name": name, "arguments": arguments(fn.get("arguments"), f"{where}.arguments")}}
    call_id = fields.optional_string(call, "id", f"{field}.id")
    if call_id is not None:
        out["id"] = call_id
    return out


def arguments(value: Any, field: str) -> dict[str, Any]:
    """A call's arguments as a mapping: an object as it is, a JSON string parsed (an absent one is {})."""
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        value = fields.json_text(value, field, "is a string but not JSON",
                                 "; give the arguments as an object or a JSON string")
    if not isinstance(value, dict):
        raise RowError(f"must be a JSON object of argument names to values, got {json_type(value)}", field=field)
    return value


def reads_reasoning(source: str) -> bool:
    """Whether a template reads a message's reasoning field (Qwen3, GLM, Kimi: reasoning_content; gpt-oss: thinking)."""
    return "reasoning_content" in source or ".thinking" in source or "'thinking'" in source or '"thinking"' in source


def inline_trace(reasoning: str) -> str:
    """A trace as templates without a reasoning field are given it (and as DeepSeek-R1 and Qwen3 write it)."""
    return f"{THINK_OPEN}\n{reasoning}\n{THINK_CLOSE}\n\n"


def template_messages(messages: list[dict[str, Any]], source: str, arguments_as_text: bool = False) -> list[dict[str, Any]]:
    """`messages` (the shape Message.to_template_dict writes, or a chat request's) as the template `source` reads
    them: reasoning as its field or inline (module docstring), tool-call arguments as mappings (or, for a template
    that writes them as text, `arguments_as_text`, as JSON text). Messages that need nothing are passed through."""
    reads = reads_reasoning(source)
    out = []
    for m in messages:
        reasoning = m.get("reasoning_content")
        calls = m.get("tool_calls")
        if arguments_as_text and calls:
            m = {**m, "tool_calls": [_with_text(c) for c in calls]}
        elif _string_arguments(calls):
            m = {**m, "tool_calls": [_with_mapping(c) for c in calls]}
        if reasoning is None:
            out.append(m)
            continue
        m = dict(m)
        if reads:
            m["thinking"] = reasoning
        else:
            del m["reasoning_content"]
            m["content"] = inline_trace(reasoning) + (m.get("content") or "")
        out.append(m)
    return out


def _with_text(call: Any) -> Any:
    """A call with its mapping arguments as JSON text (as `tojson` writes them)."""
    fn = call.get("function") if isinstance(call, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("arguments"), dict):
        return call
    return {**call, "function": {**fn, "arguments": json.dumps(fn["arguments"], ensure_ascii=False)}}


def _string_arguments(calls: Any) -> bool:
    return isinstance(calls, list) and any(isinstance(c, dict) and isinstance((c.get("function") or {}).get("arguments"), str)
                                           for c in calls)


def _with_mapping(call: Any) -> Any:
    """A request's call with JSON-string arguments parsed; text that is not a JSON object stays as it is."""
    fn = call.get("function") if isinstance(call, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("arguments"), str):
        return call
    try:
        parsed = json.loads(fn["arguments"] or "{}")
    except json.JSONDecodeError:
        return call
    return {**call, "function": {**fn, "arguments": parsed}} if isinstance(parsed, dict) else call
