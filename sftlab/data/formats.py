"""Input formats → Conversation.

Each converter is a pure function from one row (a dict) to a Conversation. It raises RowError with
the offending field; the caller adds the file and the row number.
"""

from __future__ import annotations

import json
from typing import Any, Callable

from sftlab.data import reasoning
from sftlab.data.conversation import ROLES, Conversation, Message
from sftlab.errors import RowError, json_type  # noqa: F401 - json_type is this module's too

FORMATS = ("alpaca", "sharegpt", "messages", "prompt-completion", "text")

SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
    "function_call": "assistant",
    "observation": "tool",
    "tool": "tool",
}


def detect_format(columns: list[str] | set[str]) -> str | None:
    """The format a set of column names belongs to, or None."""
    cols = set(columns)
    if "messages" in cols:
        return "messages"
    if "conversations" in cols:
        return "sharegpt"
    if "instruction" in cols and "output" in cols:
        return "alpaca"
    if "prompt" in cols and "completion" in cols:
        return "prompt-completion"
    if "text" in cols:
        return "text"
    return None


def convert_row(row: dict[str, Any], fmt: str) -> Conversation:
    try:
        converter = _CONVERTERS[fmt]
    except KeyError:
        raise RowError(f"unknown format '{fmt}'; choose one of {', '.join(FORMATS)}") from None
    return converter(row)


# --- helpers --------------------------------------------------------------------------------------


MISSING = "missing field"
NULL = "is null (or an empty cell)"


def _absent(row: dict[str, Any], key: str) -> str:
    """Why a required field has no value: not there at all, or there and null (an empty CSV cell)."""
    return MISSING if key not in row else NULL


def _string(row: dict[str, Any], key: str, *, required: bool = True, label: str | None = None) -> str:
    label = label or key
    value = row.get(key)
    if value is None:
        if required:
            raise RowError(_absent(row, key), field=label)
        return ""
    if not isinstance(value, str):
        raise RowError(f"content must be a string, got {json_type(value)}", field=label)
    return value


def _maybe_json(value: Any, field: str) -> Any:
    """CSV and some datasets store nested fields as JSON text."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError as e:
            raise RowError(f"is text but not valid JSON ({e.msg})", field=field) from None
    return value


def _drop_nones(value: Any) -> Any:
    """Arrow unifies the schemas of all rows and fills absent keys with None; undo that for tool schemas."""
    if isinstance(value, dict):
        return {k: _drop_nones(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nones(v) for v in value]
    return value


def _tools(row: dict[str, Any]) -> list[dict[str, Any]] | None:
    tools = row.get("tools")
    if tools is None or tools == "" or tools == []:
        return None
    tools = _drop_nones(_maybe_json(tools, "tools"))
    if not isinstance(tools, list):
        raise RowError(f"must be a list of function schemas, got {json_type(tools)}", field="tools")
    out = []
    for i, tool in enumerate(tools):
        # Bare function schemas as well as OpenAI's {"type": "function", "function": {...}}; either way a named one.
        schema = tool.get("function", tool) if isinstance(tool, dict) else None
        if not isinstance(schema, dict) or not isinstance(schema.get("name"), str) or not schema["name"]:
            raise RowError("must be a function schema with a 'name' ({\"name\": …, \"parameters\": …}, or OpenAI's "
                           "{\"type\": \"function\", \"function\": {\"name\": …}})", field=f"tools[{i}]")
        out.append(tool if "function" in tool else {"type": "function", "function": tool})
    return out


def _train_weight(msg: dict[str, Any], field: str) -> tuple[bool | None, float | None]:
    train = msg.get("train")
    if train is not None and not isinstance(train, bool):
        raise RowError(f"must be true or false, got {json_type(train)}", field=f"{field}.train")
    weight = msg.get("weight")
    if weight is not None:
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
            raise RowError("must be a non-negative number", field=f"{field}.weight")
        weight = float(weight)
    return train, weight


def _turn_list(row: dict[str, Any], key: str, shape: str) -> list[Any]:
    turns = _maybe_json(row.get(key), key)
    if turns is None:
        raise RowError(_absent(row, key), field=key)
    if not isinstance(turns, list):
        raise RowError(f"must be a list of {shape}", field=key)
    return turns


def _role(turn: dict[str, Any], key: str, allowed: Any, field: str) -> str:
    role = turn.get(key)
    if role is None:
        raise RowError(MISSING, field=f"{field}.{key}")
    if role not in allowed:
        raise RowError(f"unknown role '{role}'; expected one of {', '.join(allowed)}", field=f"{field}.{key}")
    return role


def _check_not_empty(messages: list[Message], field: str) -> None:
    if not messages:
        raise RowError("empty conversation", field=field)


# --- converters -----------------------------------------------------------------------------------


def from_alpaca(row: dict[str, Any]) -> Conversation:
    instruction = _string(row, "instruction")
    inp = _string(row, "input", required=False)
    output = _string(row, "output")
    messages: list[Message] = []
    system = _string(row, "system", required=False)
    if system:
        messages.append(Message("system", system))
    history = _maybe_json(row.get("history"), "history") or []
    if not isinstance(history, list):
        raise RowError("must be a list of [user, assistant] pairs", field="history")
    for i, pair in enumerate(history):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
            raise RowError("must be a [user, assistant] pair", field=f"history[{i}]")
        for j, (role, text) in enumerate(zip(("user", "assistant"), pair)):
            if not isinstance(text, str):
                raise RowError(f"content must be a string, got {json_type(text)}", field=f"history[{i}][{j}]")
            messages.append(Message(role, text))
    # The Alpaca template writes instruction and input in their own sections; keep both parts.
    parts = {"instruction": instruction, "input": inp}
    messages.append(Message("user", f"{instruction}\n{inp}" if inp else instruction, parts=parts))
    messages.append(Message("assistant", output))
    return Conversation(messages, tools=_tools(row))


def from_sharegpt(row: dict[str, Any]) -> Conversation:
    turns = _turn_list(row, "conversations", "{from, value} turns")
    messages: list[Message] = []
    system = _string(row, "system", required=False)
    if system:
        messages.append(Message("system", system))
    for i, turn in enumerate(turns):
        field = f"conversations[{i}]"
        if not isinstance(turn, dict):
            raise RowError("must be an object with 'from' and 'value'", field=field)
        who = _role(turn, "from", SHAREGPT_ROLES, field)
        value = _string(turn, "value", label=f"{field}.value")
        train, weight = _train_weight(turn, field)
        role = SHAREGPT_ROLES[who]
        if who == "function_call":
            messages.append(Message("assistant", "", train, weight, tool_calls=_parse_call(value, f"{field}.value")))
        elif role == "assistant":
            trace, answer = reasoning.message_reasoning(turn, value, field, content_key="value")
            messages.append(Message(role, answer, train, weight, reasoning=trace))
        else:
            messages.append(Message(role, value, train, weight))
    _check_not_empty(messages, "conversations")
    return Conversation(messages, tools=_tools(row))


def _parse_call(value: str, field: str) -> list[dict[str, Any]]:
    try:
        call = json.loads(value)
    except json.JSONDecodeError as e:
        raise RowError(f"function call is not valid JSON ({e.msg})", field=field) from None
    calls = call if isinstance(call, list) else [call]
    if not calls:
        raise RowError("function call must be an object with 'name' and 'arguments'", field=field)
    return [reasoning.tool_call(c, field if len(calls) == 1 else f"{field}[{i}]") for i, c in enumerate(calls)]


def from_messages(row: dict[str, Any]) -> Conversation:
    raw = _turn_list(row, "messages", "{role, content} messages")
    messages: list[Message] = []
    for i, msg in enumerate(raw):
        field = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise RowError("must be an object with 'role' and 'content'", field=field)
        role = _role(msg, "role", ROLES, field)
        tool_calls = reasoning.tool_calls(_drop_nones(msg.get("tool_calls")), f"{field}.tool_calls")
        content = _content(msg.get("content"), f"{field}.content", allow_missing=bool(tool_calls))
        train, weight = _train_weight(msg, field)
        name = msg.get("name") if isinstance(msg.get("name"), str) else None
        trace = None
        if role == "assistant":
            trace, content = reasoning.message_reasoning(msg, content, field)
        call_id = msg.get("tool_call_id") if role == "tool" and isinstance(msg.get("tool_call_id"), str) else None
        messages.append(Message(role, content, train, weight, tool_calls=tool_calls, name=name, reasoning=trace,
                                tool_call_id=call_id))
    _check_not_empty(messages, "messages")
    return Conversation(messages, tools=_tools(row))


def _content(value: Any, field: str, allow_missing: bool) -> str:
    if value is None:
        if allow_missing:
            return ""
        raise RowError(MISSING, field=field)
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = []
        for j, part in enumerate(value):
            if not isinstance(part, dict) or part.get("type") != "text":
                kind = part.get("type") if isinstance(part, dict) else json_type(part)
                raise RowError(f"unsupported content part '{kind}'; only text parts are supported", field=f"{field}[{j}]")
            if not isinstance(part.get("text"), str):
                raise RowError("text part must have a string 'text'", field=f"{field}[{j}].text")
            texts.append(part["text"])
        return "\n".join(texts)
    raise RowError(f"content must be a string or a list of text parts, got {json_type(value)}", field=field)


def from_prompt_completion(row: dict[str, Any]) -> Conversation:
    prompt = _string(row, "prompt")
    completion = _string(row, "completion")
    messages = []
    system = _string(row, "system", required=False)
    if system:
        messages.append(Message("system", system))
    messages += [Message("user", prompt), Message("assistant", completion)]
    return Conversation(messages)


def from_text(row: dict[str, Any]) -> Conversation:
    text = _string(row, "text")
    if not text.strip():
        raise RowError("empty text", field="text")
    return Conversation([Message("assistant", text)], is_text=True)


_CONVERTERS: dict[str, Callable[[dict[str, Any]], Conversation]] = {
    "alpaca": from_alpaca,
    "sharegpt": from_sharegpt,
    "messages": from_messages,
    "prompt-completion": from_prompt_completion,
    "text": from_text,
}
