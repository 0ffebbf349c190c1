"""Input formats → Conversation.

Each converter is a pure function from one row (a dict) to a Conversation. It reads every field through
fields.py, which checks its type before it is used, and raises RowError with the offending field; the caller
adds the file and the row number.
"""

from __future__ import annotations

from typing import Any, Callable

from sftlab.data import fields, reasoning
from sftlab.data.conversation import ROLES, Conversation, Message
from sftlab.errors import RowError, json_type, shown

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


def _tools(row: dict[str, Any]) -> list[dict[str, Any]] | None:
    tools = row.get("tools")
    if tools is None or tools == "" or tools == []:
        return None
    tools = fields.drop_nones(fields.maybe_json(tools, "tools"))
    if not isinstance(tools, list):
        raise RowError(f"must be a list of function schemas, got {json_type(tools)}", field="tools")
    return [_tool(tool, f"tools[{i}]") for i, tool in enumerate(tools)]


def _tool(tool: Any, field: str) -> dict[str, Any]:
    """Bare function schemas as well as OpenAI's {"type": "function", "function": {...}}; either way a named one."""
    schema = tool.get("function", tool) if isinstance(tool, dict) else None
    if not isinstance(schema, dict) or not isinstance(schema.get("name"), str) or not schema["name"]:
        raise RowError("must be a function schema with a 'name' ({\"name\": …, \"parameters\": …}, or OpenAI's "
                       "{\"type\": \"function\", \"function\": {\"name\": …}})", field=field)
    if tool.get("type", "function") != "function":
        raise RowError(f"must be 'function' (the one kind of tool templates render), got {_shown(tool['type'])}",
                       field=f"{field}.type")
    where = f"{field}.function" if schema is not tool else field
    fields.optional_string(schema, "description", f"{where}.description")
    if schema.get("parameters") is not None and not isinstance(schema["parameters"], dict):
        raise RowError(f"must be a JSON schema object, got {json_type(schema['parameters'])}", field=f"{where}.parameters")
    return tool if schema is not tool else {"type": "function", "function": tool}


def _shown(value: Any) -> str:
    return f"'{shown(value)}'" if isinstance(value, str) else json_type(value)


def _train_weight(msg: dict[str, Any], field: str) -> tuple[bool | None, float | None]:
    return fields.flag(msg, "train", f"{field}.train"), fields.weight(msg, "weight", f"{field}.weight")


def _turn_list(row: dict[str, Any], key: str, shape: str) -> list[Any]:
    turns = fields.maybe_json(row.get(key), key)
    if turns is None:
        raise RowError(fields.absent(row, key), field=key)
    if not isinstance(turns, list):
        raise RowError(f"must be a list of {shape}, got {json_type(turns)}", field=key)
    return turns


def _check_not_empty(messages: list[Message], field: str) -> None:
    if not messages:
        raise RowError("empty conversation", field=field)


def _system(row: dict[str, Any]) -> list[Message]:
    system = fields.text(row, "system", required=False)
    return [Message("system", system)] if system else []


# --- converters -----------------------------------------------------------------------------------


def from_alpaca(row: dict[str, Any]) -> Conversation:
    instruction = fields.text(row, "instruction")
    inp = fields.text(row, "input", required=False)
    output = fields.text(row, "output")
    messages = _system(row)
    history = row.get("history")
    history = [] if history is None or history == "" else fields.maybe_json(history, "history")
    if not isinstance(history, list):
        raise RowError(f"must be a list of [user, assistant] pairs, got {json_type(history)}", field="history")
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
    messages = _system(row)
    for i, turn in enumerate(turns):
        field = f"conversations[{i}]"
        if not isinstance(turn, dict):
            raise RowError(f"must be an object with 'from' and 'value', got {json_type(turn)}", field=field)
        who = fields.choice(turn, "from", SHAREGPT_ROLES, f"{field}.from")
        value = fields.text(turn, "value", f"{field}.value")
        train, weight = _train_weight(turn, field)
        role = SHAREGPT_ROLES[who]
        if role != "assistant":
            fields.only_for(turn, reasoning.FIELDS, who, "an assistant turn", field)
        if who == "function_call":
            trace, _ = reasoning.message_reasoning(turn, "", field, content_key="value")
            messages.append(Message("assistant", "", train, weight, tool_calls=_parse_call(value, f"{field}.value"),
                                    reasoning=trace))
        elif role == "assistant":
            trace, answer = reasoning.message_reasoning(turn, value, field, content_key="value")
            messages.append(Message(role, answer, train, weight, reasoning=trace))
        else:
            messages.append(Message(role, value, train, weight))
    _check_not_empty(messages, "conversations")
    return Conversation(messages, tools=_tools(row))


def _parse_call(value: str, field: str) -> list[dict[str, Any]]:
    call = fields.json_text(value, field, "function call is not valid JSON")
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
            raise RowError(f"must be an object with 'role' and 'content', got {json_type(msg)}", field=field)
        role = fields.choice(msg, "role", ROLES, f"{field}.role")
        if role != "assistant":
            fields.only_for(msg, ("tool_calls", *reasoning.FIELDS), role, "an assistant message", field)
        if role != "tool":
            fields.only_for(msg, ("tool_call_id",), role, "a tool message", field)
        tool_calls = reasoning.tool_calls(fields.drop_nones(msg.get("tool_calls")), f"{field}.tool_calls")
        content = _content(msg.get("content"), f"{field}.content", allow_missing=bool(tool_calls))
        train, weight = _train_weight(msg, field)
        name = fields.optional_string(msg, "name", f"{field}.name")
        trace = None
        if role == "assistant":
            trace, content = reasoning.message_reasoning(msg, content, field)
        call_id = fields.optional_string(msg, "tool_call_id", f"{field}.tool_call_id")
        messages.append(Message(role, content, train, weight, tool_calls=tool_calls, name=name, reasoning=trace,
                                tool_call_id=call_id))
    _check_not_empty(messages, "messages")
    return Conversation(messages, tools=_tools(row))


def _content(value: Any, field: str, allow_missing: bool) -> str:
    if value is None:
        if allow_missing:
            return ""
        raise RowError(fields.MISSING, field=field)
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = []
        for j, part in enumerate(value):
            if not isinstance(part, dict) or part.get("type") != "text":
                kind = _shown(part.get("type")) if isinstance(part, dict) else json_type(part)
                raise RowError(f"unsupported content part {kind}; only text parts are supported", field=f"{field}[{j}]")
            if not isinstance(part.get("text"), str):
                raise RowError(f"text part must have a string 'text', got {json_type(part.get('text'))}",
                               field=f"{field}[{j}].text")
            texts.append(part["text"])
        return "\n".join(texts)
    raise RowError(f"content must be a string or a list of text parts, got {json_type(value)}", field=field)


def from_prompt_completion(row: dict[str, Any]) -> Conversation:
    prompt = fields.text(row, "prompt")
    completion = fields.text(row, "completion")
    return Conversation(_system(row) + [Message("user", prompt), Message("assistant", completion)])


def from_text(row: dict[str, Any]) -> Conversation:
    text = fields.text(row, "text")
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
