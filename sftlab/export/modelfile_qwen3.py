"""The Modelfile's Go template for Qwen3-style templates: reasoning traces (Ollama's .Thinking) written inside
<think>…</think> for the assistant turns after the last user question, Hermes tool calls and schemas, tool results
gathered into one user turn as <tool_response> blocks, and the generation prompt's empty trace where thinking is
off (`enable_thinking: false`, Ollama's `think: false`).

Chosen, like every family (modelfile.py), only where the Python rendering below equals the Jinja template's on
probe conversations (with traces, tools, calls and results; the option on and off); tests/test_modelfile.py renders
the Go template with Go's own text/template and compares."""

from __future__ import annotations

from typing import Any

from sftlab.export.ollama import PROBES, TOOL, TOOL_PROBES, Message, go_json, go_spelling, ollama_messages

_TOOLS_HEAD = ("# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with "
               "function signatures within <tools></tools> XML tags:\n<tools>")
_TOOLS_TAIL = ("\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
               "<tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": "
               "<args-json-object>}\n</tool_call><|im_end|>\n")
_EMPTY_TRACE = "<think>\n\n</think>\n\n"

# Traces in history: the one after the last question is written, earlier ones are not (the template drops them).
THINKING_PROBES: list[list[Message]] = [
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!", "reasoning_content": "Greet."},
     {"role": "user", "content": "How are you?"}],
    [{"role": "user", "content": "Weather in Paris?"},
     {"role": "assistant", "content": "", "reasoning_content": "Need the tool.",
      "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
     {"role": "tool", "content": "22 C"}, {"role": "tool", "content": "sunny"}],
]


def go_template(closed_by_default: bool) -> str:
    """`closed_by_default`: the template writes the empty trace unless told to think (trained with
    enable_thinking: false); otherwise only where a request says `think: false`."""
    closed = "{{ if not (and $.IsThinkSet $.Think) }}" if closed_by_default else "{{ if and $.IsThinkSet (not $.Think) }}"
    # (No `{{-` past the first action: each would eat the newline a turn ends with.)
    return (
        "{{- if .Tools }}<|im_start|>system\n"
        "{{ if and .Messages (eq (index .Messages 0).Role \"system\") }}{{ (index .Messages 0).Content }}\n\n{{ end }}"
        + _TOOLS_HEAD + "{{ range .Tools }}\n{{ . }}{{ end }}" + _TOOLS_TAIL +
        "{{ else if and .Messages (eq (index .Messages 0).Role \"system\") }}<|im_start|>system\n"
        "{{ (index .Messages 0).Content }}<|im_end|>\n{{ end }}"
        "{{ $prev := \"\" }}"
        "{{ range $i, $m := .Messages }}{{ $rest := slice $.Messages $i }}"
        "{{ if or (eq .Role \"user\") (and (eq .Role \"system\") (ne $i 0)) }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n"
        "{{ else if eq .Role \"assistant\" }}{{ $later := false }}{{ range $rest }}{{ if eq .Role \"user\" }}"
        "{{ $later = true }}{{ end }}{{ end }}"
        "{{ if and (not $later) (or (eq (len $rest) 1) .Thinking) }}<|im_start|>assistant\n<think>\n{{ .Thinking }}\n"
        "</think>\n\n{{ .Content }}{{ else }}<|im_start|>assistant\n{{ .Content }}{{ end }}"
        "{{ range $j, $c := .ToolCalls }}{{ if or $m.Content $j }}\n{{ end }}<tool_call>\n"
        "{\"name\": \"{{ .Function.Name }}\", \"arguments\": {{ .Function.Arguments }}}\n</tool_call>{{ end }}<|im_end|>\n"
        "{{ else if eq .Role \"tool\" }}{{ if ne $prev \"tool\" }}<|im_start|>user{{ end }}\n<tool_response>\n"
        "{{ .Content }}\n</tool_response>{{ if or (eq (len $rest) 1) (ne (index $rest 1).Role \"tool\") }}<|im_end|>\n{{ end }}"
        "{{ end }}{{ $prev = .Role }}"
        "{{ end }}<|im_start|>assistant\n" + closed + _EMPTY_TRACE + "{{ end }}")


def render(msgs: list[Message], tools: list[Any] | None, closed: bool) -> str:
    """What go_template renders, in Python (`closed`: whether the generation prompt gets the empty trace)."""
    out = ""
    first_system = bool(msgs) and msgs[0]["role"] == "system"
    if tools:
        out += "<|im_start|>system\n" + (msgs[0]["content"] + "\n\n" if first_system else "")
        out += _TOOLS_HEAD + "".join("\n" + go_json(t) for t in tools) + _TOOLS_TAIL
    elif first_system:
        out += f"<|im_start|>system\n{msgs[0]['content']}<|im_end|>\n"
    for i, m in enumerate(msgs):
        rest = msgs[i:]
        if m["role"] == "user" or (m["role"] == "system" and i):
            out += f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n"
        elif m["role"] == "assistant":
            later = any(x["role"] == "user" for x in rest)
            thinking = m.get("reasoning_content") or ""
            if not later and (len(rest) == 1 or thinking):
                out += f"<|im_start|>assistant\n<think>\n{thinking}\n</think>\n\n{m['content']}"
            else:
                out += f"<|im_start|>assistant\n{m['content']}"
            for j, c in enumerate(m.get("tool_calls") or []):
                args = c["function"].get("arguments") or {}
                out += ("\n" if m["content"] or j else "") + \
                    f'<tool_call>\n{{"name": "{c["function"]["name"]}", "arguments": {go_json(args)}}}\n</tool_call>'
            out += "<|im_end|>\n"
        elif m["role"] == "tool":
            out += ("<|im_start|>user" if i == 0 or msgs[i - 1]["role"] != "tool" else "")
            out += f"\n<tool_response>\n{m['content']}\n</tool_response>"
            out += "<|im_end|>\n" if len(rest) == 1 or rest[1]["role"] != "tool" else ""
    return out + "<|im_start|>assistant\n" + (_EMPTY_TRACE if closed else "")


def qwen3_template(chat: Any) -> tuple[str, bool] | None:
    """(the Go template, whether thinking is off unless a request turns it on) where `chat` renders every probe as
    this family does (tool JSON spelled as Ollama spells it); None where it does not."""
    from sftlab.data.templates import with_template_kwargs

    default = chat.default_system or ""
    try:
        closed = chat.render(PROBES[0], add_generation_prompt=True).endswith(_EMPTY_TRACE)
        cases = [(p, [], chat) for p in PROBES + THINKING_PROBES] + [(p, [TOOL], chat) for p in TOOL_PROBES]
        wanted = [(p, tools, c.render(p, tools=tools or None, add_generation_prompt=True), closed) for p, tools, c in cases]
        # The option set the other way must be honoured too (a request's think: true/false).
        other = with_template_kwargs(chat, {"enable_thinking": closed})
        wanted.append((PROBES[2], [], other.render(PROBES[2], add_generation_prompt=True), not closed))
    except Exception:  # noqa: BLE001 - a template that cannot render the probes is not this family
        return None
    if all(render(ollama_messages(default, p), tools, shut) == go_spelling(w, p, tools) for p, tools, w, shut in wanted):
        return go_template(closed), closed
    return None
