"""The Ollama Modelfile beside a GGUF: FROM the file, a Go TEMPLATE for the built-in template families, SYSTEM for a
template's default system prompt, and PARAMETER stop for every token generation ends at.

Which family a model's (Jinja) template belongs to is found by rendering, not by name: each family's Go template
comes with `render`, the text it produces written out in Python (Ollama gives a Go template the joined system
messages as .System and all messages as .Messages), and a family is chosen only where that text equals the Jinja
template's on probe conversations (with and without a system message, one and several turns). Ollama adds BOS
itself where the GGUF says add_bos_token, so a family's BOS is written into the Go template only where it does
not. A template no family renders gets no Go template: recent Ollama renders the Jinja template embedded in the
GGUF."""

from __future__ import annotations

from typing import Any, Callable

Message = dict[str, str]

PROBES: list[list[Message]] = [
    [{"role": "user", "content": "Hi there"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
     {"role": "user", "content": "How are you?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
     {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "你好"}],
]

def _chatml(bos: str, eos: str) -> tuple[str, Callable[[str, list[Message]], str]]:
    go = ("{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}\n"
          "{{- range .Messages }}\n{{- if ne .Role \"system\" }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n"
          "{{ end }}\n{{- end }}<|im_start|>assistant\n")

    def render(system: str, msgs: list[Message]) -> str:
        head = f"<|im_start|>system\n{system}<|im_end|>\n" if system else ""
        return head + "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in msgs) + \
            "<|im_start|>assistant\n"
    return go, render


def _llama3(bos: str, eos: str) -> tuple[str, Callable[[str, list[Message]], str]]:
    go = (bos + "{{- if .System }}<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}<|eot_id|>\n{{- end }}\n"
          "{{- range .Messages }}\n{{- if ne .Role \"system\" }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n"
          "{{ .Content }}<|eot_id|>\n{{- end }}\n{{- end }}<|start_header_id|>assistant<|end_header_id|>\n\n")

    def render(system: str, msgs: list[Message]) -> str:
        turns = ([{"role": "system", "content": system}] if system else []) + msgs
        return bos + "".join(f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n{m['content']}<|eot_id|>"
                             for m in turns) + "<|start_header_id|>assistant<|end_header_id|>\n\n"
    return go, render


def _llama2(bos: str, eos: str, bos_text: str) -> tuple[str, Callable[[str, list[Message]], str]]:
    go = ("{{- $first := true }}\n{{- range .Messages }}\n{{- if eq .Role \"user\" }}"
          f"{{{{ if $first }}}}{bos}{{{{ else }}}}{bos_text}{{{{ end }}}}[INST] "
          "{{ if and $first $.System }}<<SYS>>\n{{ $.System }}\n<</SYS>>\n\n{{ end }}{{ .Content }} [/INST]\n"
          "{{- $first = false }}\n"
          f"{{{{- else if eq .Role \"assistant\" }}}} {{{{ .Content }}}} {eos}\n"
          "{{- end }}\n{{- end }}")

    def render(system: str, msgs: list[Message]) -> str:
        out, first = "", True
        for m in msgs:
            if m["role"] == "user":
                sys_block = f"<<SYS>>\n{system}\n<</SYS>>\n\n" if first and system else ""
                out += (bos if first else bos_text) + f"[INST] {sys_block}{m['content']} [/INST]"
                first = False
            elif m["role"] == "assistant":
                out += f" {m['content']} {eos}"
        return out
    return go, render


def _phi3(bos: str, eos: str) -> tuple[str, Callable[[str, list[Message]], str]]:
    go = ("{{- if .System }}<|system|>\n{{ .System }}<|end|>\n{{ end }}\n"
          "{{- range .Messages }}\n{{- if ne .Role \"system\" }}<|{{ .Role }}|>\n{{ .Content }}<|end|>\n"
          "{{ end }}\n{{- end }}<|assistant|>\n")

    def render(system: str, msgs: list[Message]) -> str:
        head = f"<|system|>\n{system}<|end|>\n" if system else ""
        return head + "".join(f"<|{m['role']}|>\n{m['content']}<|end|>\n" for m in msgs) + "<|assistant|>\n"
    return go, render


def _alpaca(bos: str, eos: str) -> tuple[str, Callable[[str, list[Message]], str]]:
    go = ("{{- if .System }}{{ .System }}\n\n{{ end }}\n{{- $first := true }}\n{{- range .Messages }}\n"
          "{{- if ne .Role \"system\" }}{{ if not $first }}\n\n{{ end }}"
          "{{ if eq .Role \"assistant\" }}### Response:\n{{ else }}### Instruction:\n{{ end }}{{ .Content }}\n"
          "{{- $first = false }}\n{{- end }}\n{{- end }}\n\n### Response:\n")

    def render(system: str, msgs: list[Message]) -> str:
        head = f"{system}\n\n" if system else ""
        body = "\n\n".join(("### Response:\n" if m["role"] == "assistant" else "### Instruction:\n") + m["content"]
                           for m in msgs)
        return head + body + "\n\n### Response:\n"
    return go, render


def _plain(bos: str, eos: str) -> tuple[str, Callable[[str, list[Message]], str]]:
    go = ("{{- if .System }}{{ .System }}\n\n{{ end }}\n{{- range .Messages }}\n"
          "{{- if eq .Role \"user\" }}USER: {{ .Content }}\n{{ else if eq .Role \"assistant\" }}ASSISTANT: "
          "{{ .Content }}\n{{ end }}\n{{- end }}ASSISTANT:")

    def render(system: str, msgs: list[Message]) -> str:
        head = f"{system}\n\n" if system else ""
        return head + "".join(("ASSISTANT: " if m["role"] == "assistant" else "USER: ") + m["content"] + "\n"
                              for m in msgs) + "ASSISTANT:"
    return go, render


def go_template(chat: Any, bos_text: str, eos_text: str, add_bos: bool) -> tuple[str | None, str | None]:
    """(family, Go template) whose rendering equals `chat`'s on every probe, or (None, None)."""
    default = chat.default_system or ""
    try:
        wanted = [chat.render(p, add_generation_prompt=True) for p in PROBES]
    except Exception:  # noqa: BLE001 - a template that cannot render the probes gets no Go template
        return None, None
    # Where the GGUF says add_bos_token, Ollama puts BOS in front of the prompt itself.
    strip = bos_text if add_bos and bos_text else ""
    families = {
        "chatml": _chatml, "llama3": _llama3, "phi3": _phi3, "alpaca": _alpaca, "plain": _plain,
        "llama2": lambda b, e: _llama2(b, e, bos_text),
    }
    for family, make in families.items():
        for bos in ("", bos_text) if bos_text and not strip else ("",):
            go, render = make(bos, eos_text)
            if all(_ollama_render(render, default, p) == w.removeprefix(strip) for p, w in zip(PROBES, wanted)):
                return family, go
    return None, None


def _ollama_render(render: Callable[[str, list[Message]], str], default: str, msgs: list[Message]) -> str:
    """What Ollama's chat gives the Go template: the Modelfile's SYSTEM where the request has no system message,
    the system messages joined as .System."""
    system = "\n\n".join(m["content"] for m in msgs if m["role"] == "system") or default
    return render(system, [m for m in msgs if m["role"] != "system"])


def modelfile(gguf_name: str, source: Any, vocab: Any) -> tuple[str, str | None]:
    """The Modelfile's text and the template family it writes a Go template for (None: none)."""
    tok = source.tokenizer
    stops = list(dict.fromkeys(tok.convert_ids_to_tokens(source.stop_ids)))
    lines = [f"# Written by `sftlab export` from {source.name}. Load it with: ollama create NAME -f Modelfile",
             f"FROM ./{gguf_name}"]
    family = None
    if source.chat is not None:
        family, go = go_template(source.chat, tok.bos_token or "", tok.eos_token or "", vocab.add_bos)
        if go is not None:
            lines.append(f"# chat template family '{family}': this Go template renders what the model's Jinja "
                         "template does (checked on probe conversations)")
            lines.append(f'TEMPLATE """{go}"""')
            if source.chat.default_system:
                lines.append(f'SYSTEM """{source.chat.default_system}"""')
        else:
            lines.append("# The chat template is not one of sftlab's built-in families, so no Go TEMPLATE is written: "
                         "recent Ollama versions render the Jinja template embedded in the GGUF (tokenizer.chat_template).")
    lines += [f'PARAMETER stop "{s}"' for s in stops]
    return "\n".join(lines) + "\n", family
