"""What Ollama's chat hands a Modelfile's Go template, modelled in Python for choosing a template family
(modelfile.py, modelfile_qwen3.py): the messages as its server prepares them, and tools and call arguments as it
spells them in JSON. tests/ollama_render/ is the same handling in Go."""

from __future__ import annotations

from typing import Any

Message = dict[str, Any]

_SYSTEM = {"role": "system", "content": "Be brief."}
# Conversations every family must render as the Jinja template does.
PROBES: list[list[Message]] = [
    [{"role": "user", "content": "Hi there"}],
    [_SYSTEM, {"role": "user", "content": "Hi there"}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
     {"role": "user", "content": "How are you?"}],
    [_SYSTEM, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
     {"role": "user", "content": "你好"}],
]
TOOL = {"type": "function", "function": {"name": "get_weather", "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name"}},
                       "required": ["city"]}}}


def _call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "arguments": arguments}}


# Conversations with tools that a tool-writing family must render as the Jinja template does (up to JSON spelling).
TOOL_PROBES: list[list[Message]] = [
    [_SYSTEM, {"role": "user", "content": "Weather in Paris?"}],
    [{"role": "user", "content": "Weather in Paris?"},
     {"role": "assistant", "content": "", "tool_calls": [_call("get_weather", city="Paris")]},
     {"role": "tool", "content": "22 C, sunny"}],
    [_SYSTEM, {"role": "user", "content": "Paris and Rome?"},
     {"role": "assistant", "content": "Let me look.", "tool_calls": [_call("get_weather", city="Paris"),
                                                                      _call("get_weather", city="Rome")]},
     {"role": "tool", "content": "22 C"}, {"role": "tool", "content": "25 C"}],
]

def go_json(value: Any) -> str:
    """JSON as Ollama writes a tool or a call's arguments into a Go template (encoding/json: compact, map keys
    sorted, <, > and & escaped); a tool's keys in the order of Ollama's own structs."""
    import json

    if isinstance(value, dict) and "function" in value and "type" in value:
        f = value["function"]
        params = f.get("parameters") or {}
        props = {k: {x: p[x] for x in ("type", "description", "enum") if p.get(x)}
                 for k, p in sorted((params.get("properties") or {}).items())}
        value = {"type": value["type"], "function": {
            "name": f.get("name", ""), "description": f.get("description", ""),
            "parameters": {"type": params.get("type", ""), **({"required": params["required"]} if params.get("required") else {}),
                           "properties": props}}}
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    else:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def call_list(m: Message) -> list[tuple[str, Any]]:
    return [(c["function"]["name"], c["function"].get("arguments") or {}) for c in m.get("tool_calls") or []]


def ollama_messages(default_system: str, msgs: list[Message]) -> list[Message]:
    """The messages Ollama's chat hands a Go template (.Messages): the Modelfile's SYSTEM first where the request
    does not start with a system message, and consecutive messages of one role (tool results apart) joined by a blank
    line into one."""
    if msgs and msgs[0]["role"] != "system" and default_system:
        msgs = [{"role": "system", "content": default_system}] + msgs
    joined: list[Message] = []
    for m in msgs:
        if joined and joined[-1]["role"] == m["role"] and m["role"] != "tool":
            joined[-1] = {**joined[-1], "content": joined[-1]["content"] + "\n\n" + m["content"]}
        else:
            joined.append(dict(m))
    return joined


def go_spelling(text: str, msgs: list[Message], tools: list[Any]) -> str:
    """A Jinja rendering with each tool and each call's arguments spelled as Ollama writes them into a Go template
    (go_json) instead of as the Jinja template's tojson does: the one difference no Go template can remove."""
    import json

    for value in [*tools, *(args for m in msgs for _, args in call_list(m))]:
        text = text.replace(json.dumps(value, ensure_ascii=False), go_json(value))
    return text
