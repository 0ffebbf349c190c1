"""The Ollama Modelfile beside a GGUF: FROM the file, a Go TEMPLATE for the built-in template families, SYSTEM for a
template's default system prompt, and PARAMETER stop for every token generation ends at.

Which family a model's (Jinja) template belongs to is found by rendering, not by name: each family's Go template
comes with `render`, the text it produces written out in Python, and a family is chosen only where that text equals
the Jinja template's on probe conversations. What the Go template is given is what Ollama's chat gives it
(`ollama_messages`): the Modelfile's SYSTEM as a first system message where the request starts with none, consecutive
messages of one role joined by a blank line (tool results apart), and every message, system ones included, in
.Messages. tests/test_modelfile.py renders each family with Go's own text/template and compares.

Ollama puts BOS in front of the prompt itself where the GGUF says add_bos_token, so a family's leading BOS is written
into the Go template only where it does not. A template no family renders gets no Go template: recent Ollama renders
the Jinja template embedded in the GGUF."""

from __future__ import annotations

import json
import re
from typing import Any, Callable

from sftlab.errors import SftlabError
from sftlab.export.ollama import (PROBES, TOOL, TOOL_PROBES, Message, call_list, go_json, go_spelling,  # noqa: F401
                                  ollama_messages)

Render = Callable[[list[Message]], str]

# …and these too, where the Jinja template renders them at all (some refuse a tool role or a late system message).
EXTRA_PROBES: list[list[Message]] = [
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
     {"role": "system", "content": "Answer in French."}, {"role": "user", "content": "How are you?"}],
    [{"role": "system", "content": ""}, {"role": "user", "content": "Hi"}],
    [{"role": "user", "content": "Weather in Paris?"}, {"role": "assistant", "content": "Let me look."},
     {"role": "tool", "content": "22 C, sunny"}, {"role": "user", "content": "And so?"}],
]
PADDED = [{"role": "user", "content": "  Hi there \n"}]  # tells whether the Jinja template trims content

_ALPACA_PREAMBLE = "Below is an instruction that describes a task. Write a response that appropriately completes the request."


def _go_text(text: str) -> str:
    """A token's text (BOS, EOS) written into a Go template: as it is, or where it holds a brace (which would start or
    join an action, as "{{ .System }}" in a token's text would) or a character the Modelfile cannot carry (a control
    or zero-width one) as a Go string literal action, `{{ "…" }}`, so it is written out, never run."""
    if text.isprintable() and "{" not in text and "}" not in text:
        return text
    escaped = "".join(c if c.isprintable() and c not in '"\\' else f"\\u{ord(c):04x}" if ord(c) < 0x10000
                      else f"\\U{ord(c):08x}" for c in text)  # (Go's escapes; a surrogate is not a Python str's)
    return '{{ "' + escaped + '" }}'


def _chatml(bos: str, eos: str) -> tuple[str, Render]:
    # Ollama's own chatml template: every message in place, system ones included.
    go = ("{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
          "<|im_start|>assistant\n")

    def render(msgs: list[Message]) -> str:
        return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in msgs) + "<|im_start|>assistant\n"
    return go, render


def _llama3(bos: str, eos: str) -> tuple[str, Render]:
    # Llama 3.0's template (sftlab's llama3): every message under its own role's header, a tool result's too.
    go = (_go_text(bos) + "{{- range .Messages }}<|start_header_id|>{{ .Role }}"
          "<|end_header_id|>\n\n{{ .Content }}<|eot_id|>\n{{- end }}<|start_header_id|>assistant<|end_header_id|>\n\n")

    def render(msgs: list[Message]) -> str:
        return bos + "".join(f"<|start_header_id|>{m['role']}<|end_header_id|>"
                             f"\n\n{m['content']}<|eot_id|>" for m in msgs) + "<|start_header_id|>assistant<|end_header_id|>\n\n"
    return go, render


def _llama2(bos: str, eos: str, bos_text: str) -> tuple[str, Render]:
    # A first system message goes into the first [INST] block; every other message that is not the assistant's
    # (a later system message, a tool result) is an [INST] block of its own.
    go = ("{{- $start := 0 }}{{ $system := \"\" }}\n"
          "{{- if and .Messages (eq (index .Messages 0).Role \"system\") }}{{ $start = 1 }}"
          "{{ $system = (index .Messages 0).Content }}{{ end }}\n"
          "{{- range $i, $m := .Messages }}{{ if ge $i $start }}\n"
          f"{{{{- if eq .Role \"assistant\" }}}} {{{{ .Content }}}} {_go_text(eos)}\n"
          f"{{{{- else }}}}{{{{ if eq $i $start }}}}{_go_text(bos)}{{{{ else }}}}{_go_text(bos_text)}{{{{ end }}}}[INST] "
          "{{ if and (eq $i $start) $system }}<<SYS>>\n{{ $system }}\n<</SYS>>\n\n{{ end }}{{ .Content }} [/INST]\n"
          "{{- end }}{{ end }}\n{{- end }}")

    def render(msgs: list[Message]) -> str:
        system, start = (msgs[0]["content"], 1) if msgs and msgs[0]["role"] == "system" else ("", 0)
        out = ""
        for i, m in enumerate(msgs[start:], start):
            if m["role"] == "assistant":
                out += f" {m['content']} {eos}"
            else:
                sys_block = f"<<SYS>>\n{system}\n<</SYS>>\n\n" if i == start and system else ""
                out += (bos if i == start else bos_text) + f"[INST] {sys_block}{m['content']} [/INST]"
        return out
    return go, render


def _phi3(bos: str, eos: str) -> tuple[str, Render]:
    # Ollama's own phi-3 template.
    go = "{{- range .Messages }}<|{{ .Role }}|>\n{{ .Content }}<|end|>\n{{ end }}<|assistant|>\n"

    def render(msgs: list[Message]) -> str:
        return "".join(f"<|{m['role']}|>\n{m['content']}<|end|>\n" for m in msgs) + "<|assistant|>\n"
    return go, render


def _alpaca(bos: str, eos: str) -> tuple[str, Render]:
    # A first system message replaces the preamble (an empty one gives the standard preamble); a later one is an
    # instruction; a tool result is an input.
    go = ("{{- $start := 0 }}{{ $preamble := \"\" }}\n"
          "{{- if and .Messages (eq (index .Messages 0).Role \"system\") }}{{ $start = 1 }}"
          "{{ $preamble = (index .Messages 0).Content }}{{ end }}\n"
          "{{- range $i, $m := .Messages }}{{ if ge $i $start }}\n"
          "{{- if gt $i $start }}\n\n{{ end }}\n"
          "{{- if eq .Role \"assistant\" }}### Response:\n{{ .Content }}\n"
          "{{- else }}{{ if eq $i $start }}{{ if $preamble }}{{ $preamble }}{{ else }}" + _ALPACA_PREAMBLE +
          "{{ end }}\n\n{{ end }}{{ if eq .Role \"tool\" }}### Input:\n{{ else }}### Instruction:\n{{ end }}{{ .Content }}\n"
          "{{- end }}{{ end }}\n{{- end }}\n\n### Response:\n")

    def render(msgs: list[Message]) -> str:
        preamble, start = (msgs[0]["content"], 1) if msgs and msgs[0]["role"] == "system" else ("", 0)
        parts = []
        for i, m in enumerate(msgs[start:], start):
            if m["role"] == "assistant":
                parts.append("### Response:\n" + m["content"])
            else:
                head = (preamble or _ALPACA_PREAMBLE) + "\n\n" if i == start else ""
                parts.append(head + ("### Input:\n" if m["role"] == "tool" else "### Instruction:\n") + m["content"])
        return "\n\n".join(parts) + "\n\n### Response:\n"
    return go, render


def _plain(bos: str, eos: str) -> tuple[str, Render]:
    go = ("{{- range .Messages }}\n"
          "{{- if eq .Role \"system\" }}{{ .Content }}\n\n{{ else if eq .Role \"assistant\" }}ASSISTANT: {{ .Content }}\n"
          "{{ else if eq .Role \"tool\" }}TOOL: {{ .Content }}\n{{ else }}USER: {{ .Content }}\n{{ end }}\n"
          "{{- end }}ASSISTANT:")

    def render(msgs: list[Message]) -> str:
        heads = {"assistant": "ASSISTANT: ", "tool": "TOOL: "}
        return "".join(m["content"] + "\n\n" if m["role"] == "system" else heads.get(m["role"], "USER: ") + m["content"] + "\n"
                       for m in msgs) + "ASSISTANT:"
    return go, render


_CHATML_TOOLS_HEAD = ("# Tools\n\nYou may call one or more functions. Their signatures are inside <tools></tools>:\n<tools>")
_CHATML_TOOLS_TAIL = ("\n</tools>\n\nTo call a function, reply with a JSON object inside <tool_call></tool_call> tags:\n"
                      "<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n")
_LLAMA3_TOOLS = ("\n\nYou have access to the following functions. To call one, reply with a JSON object "
                 "{\"name\": function name, \"parameters\": arguments}.\n")


def _chatml_tools(bos: str, eos: str) -> tuple[str, Render]:
    # sftlab's chatml and qwen templates with tools (Hermes style): the schemas in the system turn, each call in
    # <tool_call> tags after the answer's text.
    go = ("{{- $start := 0 }}\n"
          "{{- if .Tools }}<|im_start|>system\n"
          "{{ if and .Messages (eq (index .Messages 0).Role \"system\") }}{{ (index .Messages 0).Content }}\n\n"
          "{{ $start = 1 }}{{ end }}" + _CHATML_TOOLS_HEAD + "{{ range .Tools }}\n{{ . }}{{ end }}" + _CHATML_TOOLS_TAIL +
          "{{ end }}\n"
          "{{- range $i, $m := .Messages }}{{ if ge $i $start }}<|im_start|>{{ .Role }}\n{{ .Content }}\n"
          "{{- range $j, $c := .ToolCalls }}{{ if or $m.Content $j }}\n{{ end }}<tool_call>\n"
          "{\"name\": \"{{ .Function.Name }}\", \"arguments\": {{ .Function.Arguments }}}\n</tool_call>{{ end }}"
          "<|im_end|>\n{{ end }}{{ end }}<|im_start|>assistant\n")

    def render(msgs: list[Message], tools: list[Any] | None = None) -> str:
        out, start = "", 0
        if tools:
            out += "<|im_start|>system\n"
            if msgs and msgs[0]["role"] == "system":
                out, start = out + msgs[0]["content"] + "\n\n", 1
            out += _CHATML_TOOLS_HEAD + "".join("\n" + go_json(t) for t in tools) + _CHATML_TOOLS_TAIL
        for m in msgs[start:]:
            out += f"<|im_start|>{m['role']}\n{m['content']}"
            for j, (name, args) in enumerate(call_list(m)):
                out += ("\n" if m["content"] or j else "") + f'<tool_call>\n{{"name": "{name}", "arguments": {go_json(args)}}}\n</tool_call>'
            out += "<|im_end|>\n"
        return out + "<|im_start|>assistant\n"
    return go, render


def _llama3_tools(bos: str, eos: str) -> tuple[str, Render]:
    # Llama 3.1 style: the schemas after a first system message, each call a JSON object in the answer.
    go = (_go_text(bos) + "{{- range $i, $m := .Messages }}<|start_header_id|>{{ if eq .Role \"tool\" }}ipython{{ else }}"
          "{{ .Role }}{{ end }}<|end_header_id|>\n\n{{ .Content }}\n"
          "{{- if and (eq $i 0) (eq .Role \"system\") $.Tools }}" + _LLAMA3_TOOLS + "{{ range $.Tools }}\n{{ . }}{{ end }}{{ end }}\n"
          "{{- range $j, $c := .ToolCalls }}{{ if or $m.Content $j }}\n{{ end }}"
          "{\"name\": \"{{ .Function.Name }}\", \"parameters\": {{ .Function.Arguments }}}{{ end }}<|eot_id|>\n"
          "{{- end }}<|start_header_id|>assistant<|end_header_id|>\n\n")

    def render(msgs: list[Message], tools: list[Any] | None = None) -> str:
        out = bos
        for i, m in enumerate(msgs):
            content = m["content"]
            if i == 0 and m["role"] == "system" and tools:
                content += _LLAMA3_TOOLS + "".join("\n" + go_json(t) for t in tools)
            for j, (name, args) in enumerate(call_list(m)):
                content += ("\n" if m["content"] or j else "") + f'{{"name": "{name}", "parameters": {go_json(args)}}}'
            out += f"<|start_header_id|>{'ipython' if m['role'] == 'tool' else m['role']}<|end_header_id|>\n\n{content}<|eot_id|>"
        return out + "<|start_header_id|>assistant<|end_header_id|>\n\n"
    return go, render


FAMILIES = ("chatml", "llama3", "phi3", "alpaca", "plain", "llama2")


def family_template(family: str, bos: str, eos: str, bos_text: str) -> tuple[str, Render]:
    """A family's Go template and its rendering in Python, BOS written as `bos` at the start."""
    if family == "llama2":
        return _llama2(bos, eos, bos_text)
    return {"chatml": _chatml, "llama3": _llama3, "phi3": _phi3, "alpaca": _alpaca, "plain": _plain}[family](bos, eos)


def _renders(chat: Any, probes: list[list[Message]], required: bool) -> list[tuple[list[Message], str]]:
    out = []
    for probe in probes:
        try:
            out.append((probe, chat.render(probe, add_generation_prompt=True)))
        except Exception:  # noqa: BLE001 - a template may refuse a tool role or a late system message
            if required:
                raise
    return out


def go_template(chat: Any, bos_text: str, eos_text: str, add_bos: bool) -> tuple[str | None, str | None]:
    """(family, Go template) whose rendering equals `chat`'s on every probe, or (None, None)."""
    default = chat.default_system or ""
    try:
        wanted = _renders(chat, PROBES, True) + _renders(chat, EXTRA_PROBES, False)
    except Exception:  # noqa: BLE001 - a template that cannot render the probes gets no Go template
        return None, None
    # Where the GGUF says add_bos_token, Ollama puts BOS in front of the prompt itself.
    strip = bos_text if add_bos and bos_text else ""
    for family in FAMILIES:
        for bos in ("", bos_text) if bos_text and not strip else ("",):
            go, render = family_template(family, bos, eos_text, bos_text)
            if all(render(ollama_messages(default, p)) == w.removeprefix(strip) for p, w in wanted):
                return family, go
    return None, None


_TOOL_FAMILIES = {"chatml": _chatml_tools, "llama3": _llama3_tools}


def go_tools_template(chat: Any, family: str | None, bos_text: str, eos_text: str, add_bos: bool) -> str | None:
    """The family's Go template that writes tools and tool calls too, where it renders every probe and every tool
    probe as the Jinja template does (tool JSON spelled as Ollama spells it); None where the family has none or
    the Jinja template writes tools some other way."""
    if family not in _TOOL_FAMILIES:
        return None
    default = chat.default_system or ""
    strip = bos_text if add_bos and bos_text else ""
    try:
        wanted = [(p, [], chat.render(p, add_generation_prompt=True)) for p in PROBES]
        wanted += [(p, [TOOL], chat.render(p, tools=[TOOL], add_generation_prompt=True)) for p in TOOL_PROBES]
    except Exception:  # noqa: BLE001 - a template that cannot render a tool conversation writes no tools
        return None
    for bos in ("", bos_text) if bos_text and not strip else ("",):
        go, render = _TOOL_FAMILIES[family](bos, eos_text)
        if all(render(ollama_messages(default, p), tools) == go_spelling(w, p, tools).removeprefix(strip)
               for p, tools, w in wanted):
            return go
    return None


def trims_content(chat: Any) -> bool:
    """Whether the Jinja template strips the whitespace around a message's content (Go's template cannot)."""
    try:
        padded = chat.render(PADDED, add_generation_prompt=True)
        plain = chat.render([{"role": "user", "content": PADDED[0]["content"].strip()}], add_generation_prompt=True)
    except Exception:  # noqa: BLE001
        return False
    return padded == plain


def quoted(value: str, what: str, multiline: bool = False) -> str:
    """`value` written so that Ollama's Modelfile parser (parser/parser.go) reads it back exactly, or SftlabError.

    The parser has no escapes: a value ends at the first line break where the value so far, trimmed, is complete
    (\"\"\"…\"\"\" or "…" or a bare word), and it keeps only printable characters, spaces, tabs and line breaks.
    So a quoting is usable where no line of the value ends (trailing whitespace aside) in its closing quote; a value
    no quoting holds is refused rather than written so that its rest becomes commands of its own."""
    bad = next((c for c in value if not (c.isprintable() or c in "\t\r\n")), None)
    if bad is not None:
        raise SftlabError(f"Modelfile: {what} holds the character U+{ord(bad):04X}, which Ollama's Modelfile parser "
                          "drops (it keeps printable characters, tabs and line breaks only)")
    lines = re.split(r"[\r\n]", value)[:-1]  # each part that a line break follows
    ends = [line.rstrip(" \t") for line in lines]
    triple = not any(e.endswith('"""') for e in ends)
    # ("…" must not open as \"\"\": a value that starts with "" or is a lone ")
    single = not (value + '"').startswith('""') and not any(e.endswith('"') for e in ends)
    forms = [('"""', triple), ('"', single)]
    for quote, usable in forms if multiline else forms[::-1]:
        if usable:
            return quote + value + quote
    raise SftlabError(f"Modelfile: {what} cannot be written into an Ollama Modelfile, which has no escapes: a line of "
                      'it ends in """ and a line in " (either would end the quoted value early)')


def _bare(value: str, what: str) -> str:
    """A value written unquoted where it reads back so (a path), else quoted."""
    plain = value.isprintable() and value == value.strip() and not value.startswith('"')
    return value if plain else quoted(value, what)


def modelfile(gguf_name: str, source: Any, vocab: Any) -> tuple[str, str | None]:
    """The Modelfile's text and the template family it writes a Go template for (None: none). Every value is quoted
    for Ollama's parser (`quoted`); the model's name goes into a comment as a JSON string, on its one line."""
    tok = source.tokenizer
    stops = list(dict.fromkeys(tok.convert_ids_to_tokens(source.stop_ids)))
    name = json.dumps(str(source.name), ensure_ascii=False)
    lines = [f"# Written by `sftlab export` from {name}. Load it with: ollama create NAME -f Modelfile",
             f"FROM {_bare('./' + gguf_name, 'the GGUF file name (FROM)')}"]
    family = None
    if source.chat is not None:
        from sftlab.export.modelfile_qwen3 import qwen3_template

        family, go = go_template(source.chat, tok.bos_token or "", tok.eos_token or "", vocab.add_bos)
        with_tools = go_tools_template(source.chat, family, tok.bos_token or "", tok.eos_token or "", vocab.add_bos)
        # A Qwen3-style template renders plain conversations as chatml does; its own family writes traces too.
        qwen3 = qwen3_template(source.chat) if family in (None, "chatml") and not with_tools else None
        if qwen3 is not None:
            (go, off_by_default), family, with_tools = qwen3, "qwen3", None
            lines.append("# chat template family 'qwen3': this Go template renders what the model's Jinja template "
                         "does (checked on probe conversations): a message's thinking inside <think></think> after the "
                         "last user question, Hermes tool calls, tool results in one user turn, and the empty trace "
                         "of thinking off (think: false" + (", the trained default" if off_by_default else "")
                         + "). Tool JSON is spelled as Ollama writes it (compact, keys sorted); a thinking or content "
                         "padded with newlines is written as sent (the Jinja template strips them).")
        if go is not None:
            if family != "qwen3":
                lines.append(f"# chat template family '{family}': this Go template renders what the model's Jinja "
                             "template does (checked on probe conversations, system messages in place).")
            lines.append("# Ollama joins consecutive messages of one role with a blank line before rendering (the Jinja "
                         "template renders each apart).")
            if family == "qwen3":
                pass  # (its comment above says how it treats whitespace)
            elif trims_content(source.chat):
                lines.append("# Whitespace: the Jinja template strips each message's leading and trailing whitespace; "
                             "this Go template writes content as sent, so padded content renders differently.")
            else:
                lines.append("# Whitespace: content is written as sent, as the Jinja template writes it.")
            if with_tools:
                go = with_tools
                lines.append("# Tools and tool calls: written where the Jinja template writes them; their JSON as Ollama "
                             "writes it (compact, keys sorted), where the Jinja template's has spaces after ',' and ':'.")
            lines.append("TEMPLATE " + quoted(go, "the Go template (TEMPLATE)", multiline=True))
            if source.chat.default_system:
                lines.append("SYSTEM " + quoted(source.chat.default_system,
                                                "the chat template's default system prompt (SYSTEM)", multiline=True))
        else:
            lines.append("# The chat template is not one of sftlab's built-in families, so no Go TEMPLATE is written: "
                         "recent Ollama versions render the Jinja template embedded in the GGUF (tokenizer.chat_template).")
    lines += ["PARAMETER stop " + quoted(s, f"the stop token {json.dumps(s[:40], ensure_ascii=False)} (PARAMETER stop)")
              for s in stops]
    return "\n".join(lines) + "\n", family
