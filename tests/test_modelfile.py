"""The Modelfile's Go templates rendered by Go's own text/template, with Ollama's message handling
(tests/ollama_render/main.go), against the Jinja templates they stand for, on a fixed set of conversations."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers import tokenizer
from sftlab.data.templates import resolve_template
from sftlab.export.modelfile import go_template, ollama_messages, trims_content
from sftlab.export.vocab import training_bos_rule

HARNESS = Path(__file__).parent / "ollama_render"

U, A, S, T = "user", "assistant", "system", "tool"


def m(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


CONVERSATIONS = [
    [m(U, "Hi there")],
    [m(S, "Be brief."), m(U, "Hi there")],
    [m(U, "Hi"), m(A, "Hello!"), m(U, "How are you?")],
    [m(S, "Be brief."), m(U, "Hi"), m(A, "Hello!"), m(U, "你好")],
    [m(U, "Hi"), m(A, "Hello!"), m(S, "Answer in French."), m(U, "How are you?")],  # a system message mid-way
    [m(S, ""), m(U, "Hi")],  # an empty system message
    [m(U, "Weather in Paris?"), m(A, "Let me look."), m(T, "22 C, sunny"), m(U, "And so?")],
    [m(U, "Two results"), m(T, "1"), m(T, "2")],  # tool results stay apart in Ollama too
    [m(U, "<b>markup</b> & {{ .System }}"), m(A, "{{ end }}"), m(U, "ok")],  # markup in content stays text
    [m(S, "First."), m(S, "Second."), m(U, "Hi")],  # Ollama joins these two into one
    [m(U, "Hi"), m(U, "Are you there?")],  # …and these
    [m(U, "  Hi there \n"), m(A, " Hello! "), m(U, "x")],  # padded content
]
# (qwen, Qwen2.5's template, renders like no family: its Modelfile has no Go template, Ollama renders the Jinja.)
TEMPLATES = [("chatml", "qwen2"), ("llama3", "llama3"), ("llama2", "llama2"), ("phi3", "qwen2"),
             ("phi3", "llama2"), ("alpaca", "qwen2"), ("alpaca", "llama2"), ("plain", "qwen2"), ("plain", "llama2")]


def merged(conv) -> bool:
    return any(a["role"] == b["role"] and a["role"] != T for a, b in zip(conv, conv[1:]))


def padded(conv) -> bool:
    return any(x["content"] != x["content"].strip() for x in conv)


@pytest.fixture(scope="module")
def go_renderer(tmp_path_factory):
    go = shutil.which("go")
    if go is None:
        pytest.skip("Go is not installed (Debian: apt-get install golang-go): the Go-template check needs text/template")
    binary = tmp_path_factory.mktemp("go") / "ollamarender"
    cache = tmp_path_factory.mktemp("gocache")
    # (its own caches, never the user's; no network: the program uses the standard library only)
    env = {**os.environ, "HOME": str(cache), "GOCACHE": str(cache / "c"), "GOPATH": str(cache / "p"),
           "GOFLAGS": "-mod=mod", "GO111MODULE": "on", "GOTOOLCHAIN": "local", "GOPROXY": "off"}
    subprocess.run([go, "build", "-o", str(binary), "."], cwd=HARNESS, env=env, check=True, timeout=300)

    def render(cases: list[dict]) -> list[str]:
        out = subprocess.run([str(binary)], input=json.dumps(cases), capture_output=True, text=True, check=True)
        return json.loads(out.stdout)
    return render


def jinja_and_go(template: str, tok_name: str):
    tok = tokenizer(tok_name)
    chat = resolve_template(template, tok, warn=False)
    add_bos = training_bos_rule(tok, chat)
    family, go = go_template(chat, tok.bos_token or "", tok.eos_token or "", add_bos)
    strip = tok.bos_token if add_bos else ""
    wanted = [_rendered(chat, c, strip) for c in CONVERSATIONS]
    return chat, family, go, wanted


def _rendered(chat, conv, strip):
    """The Jinja rendering, or None where the template refuses the conversation (phi3 has no tool role)."""
    from sftlab.errors import SftlabError

    try:
        return chat.render(conv, add_generation_prompt=True).removeprefix(strip)
    except SftlabError:
        return None


@pytest.mark.slow
def test_go_templates_render_what_the_jinja_templates_do(go_renderer):
    cases, wanted, kinds = [], [], []
    for template, tok_name in TEMPLATES:
        chat, family, go, want = jinja_and_go(template, tok_name)
        assert go is not None, template
        shown = [(c, w) for c, w in zip(CONVERSATIONS, want) if w is not None]
        cases += [{"template": go, "system": chat.default_system or "", "messages": c} for c, _ in shown]
        wanted += [w for _, w in shown]
        kinds += [(template, tok_name, trims_content(chat), c) for c, _ in shown]
    got = go_renderer(cases)
    unexplained = []
    equal = merging = whitespace = 0
    for (template, tok_name, trims, conv), g, w in zip(kinds, got, wanted):
        if g == w:
            equal += 1
        elif merged(conv):
            merging += 1  # Ollama's own handling (the Modelfile's comment says so)
        elif trims and padded(conv):
            whitespace += 1  # the Jinja template trims, Go cannot (the Modelfile's comment says so)
        else:
            unexplained.append((template, tok_name, conv, g, w))
    assert not unexplained, unexplained[0]
    # 9 templates × 12 conversations, less the tool results phi3 refuses (2 × 2): the two merged ones differ for
    # every template but plain's two system messages (plain joins them with a blank line, as Ollama does): 16; the
    # padded one for llama3 and llama2, which trim: 2.
    assert (equal, merging, whitespace) == (86, 16, 2), (equal, merging, whitespace)


def test_ollama_message_handling_in_python():
    # The Python side of the same handling, literal: SYSTEM only where the request starts without a system message,
    # same-role neighbours joined by a blank line, tool results apart.
    assert ollama_messages("D", [m(U, "a"), m(U, "b"), m(T, "1"), m(T, "2")]) == [
        m(S, "D"), m(U, "a\n\nb"), m(T, "1"), m(T, "2")]
    assert ollama_messages("D", [m(S, ""), m(U, "a")]) == [m(S, ""), m(U, "a")]


def test_go_template_literal_renderings(go_renderer):
    """Two renderings written out by hand: chatml keeps a late system message in place; llama3 (Llama 3.0's) writes a
    tool result under its role's header and its BOS itself (the GGUF says no add_bos_token: the Llama 3 tokenizer
    here adds none)."""
    _, _, chatml, _ = jinja_and_go("chatml", "qwen2")
    _, _, llama3, _ = jinja_and_go("llama3", "llama3")
    got = go_renderer([
        {"template": chatml, "system": "", "messages": [m(U, "Hi"), m(A, "Yo"), m(S, "Be brief."), m(U, "Ok")]},
        {"template": llama3, "system": "", "messages": [m(U, "Hi"), m(T, "42")]},
    ])
    assert got[0] == ("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nYo<|im_end|>\n<|im_start|>system\n"
                      "Be brief.<|im_end|>\n<|im_start|>user\nOk<|im_end|>\n<|im_start|>assistant\n")
    assert got[1] == ("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>tool"
                      "<|end_header_id|>\n\n42<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")


@pytest.mark.parametrize("template,tok_name,bos", [("llama2", "llama2", True), ("phi3", "llama2", False),
                                                  ("alpaca", "llama2", False), ("plain", "llama2", False),
                                                  ("llama3", "llama3", False), ("chatml", "qwen2", False)])
def test_add_bos_token_as_training_had_it(template, tok_name, bos):
    # A Llama 2 tokenizer adds BOS to text, but phi3, alpaca and plain write none, and a conversation trains none;
    # the Llama 3 tokenizer here adds none (its template writes BOS itself, and the Go template then does too).
    tok = tokenizer(tok_name)
    assert training_bos_rule(tok, resolve_template(template, tok, warn=False)) is bos


def call(name: str, **arguments) -> dict:
    return {"type": "function", "function": {"name": name, "arguments": arguments}}


WEATHER = {"type": "function", "function": {"name": "weather", "description": "Weather <now> & later",
           "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City"},
                                                           "unit": {"type": "string", "enum": ["C", "F"]}},
                          "required": ["city"]}}}
TOOL_CONVERSATIONS = [
    [m(U, "Weather in Paris?")],
    [m(S, "Be brief."), m(U, "Weather in Paris?"), {**m(A, ""), "tool_calls": [call("weather", city="Paris")]},
     m(T, "22 C"), m(A, "22 C in Paris.")],
    [m(U, "Paris and Rome?"), {**m(A, "Looking."), "tool_calls": [call("weather", city="Paris", unit="C"),
                                                                 call("weather", city="Rome")]},
     m(T, "22"), m(T, "25"), m(U, "Thanks")],
]


@pytest.mark.slow
def test_go_templates_write_tools_and_calls_as_the_jinja_templates_do(go_renderer):
    """chatml (Hermes-style <tool_call>; qwen, Qwen2.5's, has no Go template, llama3, Llama 3.0's, no tools): Go's
    rendering equals the Jinja one with tool JSON spelled as Ollama spells it (compact, keys sorted, <>& escaped),
    the one difference the Modelfile's comment names."""
    from sftlab.export.modelfile import go_spelling, go_tools_template

    from sftlab.export.vocab import training_bos_rule

    cases, wanted = [], []
    for template in ("chatml",):
        tok = tokenizer("llama3" if template == "llama3" else "qwen2")
        chat = resolve_template(template, tok, warn=False)
        add_bos = training_bos_rule(tok, chat)
        family, _ = go_template(chat, tok.bos_token or "", tok.eos_token or "", add_bos)
        go = go_tools_template(chat, family, tok.bos_token or "", tok.eos_token or "", add_bos)
        assert go is not None, template
        for c in TOOL_CONVERSATIONS:
            cases.append({"template": go, "system": chat.default_system or "", "messages": c, "tools": [WEATHER]})
            wanted.append(go_spelling(chat.render(c, tools=[WEATHER], add_generation_prompt=True), c, [WEATHER]))
        # without tools the same Go template renders what the plain family does
        for c in CONVERSATIONS[:4]:
            cases.append({"template": go, "system": chat.default_system or "", "messages": c})
            wanted.append(chat.render(c, add_generation_prompt=True))
    got = go_renderer(cases)
    assert got == wanted
    # literal: the call as the model must write it, and Ollama's spelling of the schema
    assert '<tool_call>\n{"name": "weather", "arguments": {"city":"Paris","unit":"C"}}\n</tool_call>' in got[2]
    assert '"description":"Weather \\u003cnow\\u003e \\u0026 later"' in got[0]


def test_a_template_that_writes_no_tools_gets_no_tools_template(tmp_path):
    # A ChatML template that ignores tools and calls: the Go template must not add them.
    from sftlab.export.modelfile import go_tools_template

    plain = tmp_path / "t.jinja"
    plain.write_text("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
                     "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    tok = tokenizer("qwen2")
    chat = resolve_template(str(plain), tok, warn=False)
    assert go_template(chat, "", "", False)[0] == "chatml"
    assert go_tools_template(chat, "chatml", "", "", False) is None
    assert go_tools_template(resolve_template("phi3", tok, warn=False), "phi3", "", "", False) is None


def test_llama3_template_trains_a_call_it_has_no_format_for_as_the_answers_text():
    # llama3 is Llama 3.0's template, which has no tools: a call is trained as JSON text (never an empty answer).
    from sftlab.data.conversation import Conversation, Message
    from sftlab.data.encode import IGNORE_INDEX, Encoder

    tok = tokenizer("llama3")
    conv = Conversation([Message("user", "Paris?"), Message("assistant", "", tool_calls=[call("weather", city="Paris")])],
                        tools=[WEATHER])
    ex = Encoder(tok, resolve_template("llama3", tok, warn=False)).encode_one(conv)
    assert tok.decode([t for t in ex.labels if t != IGNORE_INDEX]) == (
        '{"name": "weather", "arguments": {"city": "Paris"}}<|eot_id|>')


QWEN3 = Path(__file__).parent / "fixtures" / "templates" / "Qwen-Qwen3-0.6B.jinja"


def qwen3_chat(options=None):
    import copy

    from sftlab.data.templates import with_template_kwargs

    tok = copy.deepcopy(tokenizer("qwen2"))
    tok.chat_template = QWEN3.read_text()
    return with_template_kwargs(resolve_template(None, tok, warn=False), options)


def thinking(role_content: str, trace: str, **extra) -> dict:
    return {**m(A, role_content), "reasoning_content": trace, **extra}


THINKING_CONVERSATIONS = [
    [m(U, "Hi"), thinking("Hello!", "A greeting."), m(U, "2+2?"), thinking("4", "Add.")],
    [m(S, "Be brief."), m(U, "Hi"), thinking("Hello!", "Greet back."), m(U, "你好")],
    [m(U, "Weather in Paris?"), thinking("", "Use the tool.", tool_calls=[call("weather", city="Paris")]),
     m(T, "22 C"), m(T, "sunny")],
    [m(U, "Paris?"), {**m(A, "Looking."), "tool_calls": [call("weather", city="Paris", unit="C")]}, m(T, "22"),
     thinking("22 C.", "Report it.")],
]


@pytest.mark.slow
def test_qwen3_go_template_writes_thinking_and_tool_calls_as_the_real_template(go_renderer):
    """The real Qwen3 template (llama.cpp's copy), thinking on by default and trained with enable_thinking: false:
    the Go template, given what Ollama gives it (a message's thinking, think: true/false or unset), renders what the
    Jinja template does with the same option, tool JSON spelled as Ollama spells it."""
    from sftlab.export.modelfile import go_spelling
    from sftlab.export.modelfile_qwen3 import qwen3_template

    cases, wanted = [], []
    for trained_off in (False, True):
        chat = qwen3_chat({"enable_thinking": False} if trained_off else None)
        go, off = qwen3_template(chat)
        assert off is trained_off
        for think in (None, True, False):
            jinja = chat if think is None else qwen3_chat({"enable_thinking": think})
            for conv in THINKING_CONVERSATIONS:
                for tools in ([], [WEATHER]):
                    ollama = [{**x, "thinking": x["reasoning_content"]} if "reasoning_content" in x else x for x in conv]
                    cases.append({"template": go, "messages": ollama, "tools": tools, "think": think})
                    wanted.append(go_spelling(jinja.render(conv, tools=tools or None, add_generation_prompt=True),
                                              conv, tools))
    got = go_renderer(cases)
    assert len(got) == 48
    assert [i for i, (g, w) in enumerate(zip(got, wanted)) if g != w] == []
    # literal: the trace after the last question is written, the earlier one dropped, thinking off closes the prompt
    # (trained with thinking on, a request with think: false, the second conversation, no tools)
    assert got[0 * 24 + 2 * 8 + 1 * 2 + 0] == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                                          "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\n你好<|im_end|>\n"
                                          "<|im_start|>assistant\n<think>\n\n</think>\n\n")


def test_sftlab_chatml_is_not_taken_for_qwen3():
    from sftlab.export.modelfile_qwen3 import qwen3_template

    tok = tokenizer("qwen2")
    assert qwen3_template(resolve_template("chatml", tok, warn=False)) is None


# --- every value quoted as Ollama's Modelfile parser reads it, never spliced ---------------------------------------

def read_ollama_modelfile(text: str) -> list[tuple[str, str]]:
    """(command, value) pairs as Ollama's parser (parser/parser.go, ParseFile) reads a Modelfile, written here apart
    from sftlab's quoting: a value ends at a line break where the value so far, trimmed, is complete (\"\"\"…\"\"\",
    "…" or unquoted); no escapes; only printable characters, spaces, tabs and line breaks are kept; `#` starts a
    comment at the start of a line; PARAMETER's value is named `name`."""
    def unquote(s: str) -> tuple[str, bool]:
        if s[:3] == '"""':
            return (s[3:-3], True) if len(s) >= 6 and s.endswith('"""') else ("", False)
        if s[:1] == '"':
            return (s[1:-1], True) if len(s) >= 2 and s.endswith('"') else ("", False)
        return s, True

    out, state, buf, name = [], "nil", "", ""
    for ch in text:
        newline, space = ch in "\r\n", ch in " \t"
        if state == "nil":
            if ch == "#":
                state = "comment"
            elif not (newline or space):
                state, buf = "name", ch
        elif state == "comment":
            if newline:
                state = "nil"
        elif state in ("name", "parameter"):
            if space:
                name = buf.lower() if state == "name" else buf
                state, buf = ("parameter", "") if name == "parameter" else ("value", "")
            else:
                assert ch.isalnum() or ch == "_", f"not a command: {buf + ch!r}"
                buf += ch
        else:  # value
            if newline or space:
                s, ok = unquote(buf.strip(" \t\r\n"))
                if ok and not space:
                    out.append((name, s))
                    state, buf = "nil", ""
                    continue
                buf += ch
            elif ch.isprintable():
                buf += ch
    if state == "value":
        s, ok = unquote(buf.strip(" \t\r\n"))
        assert ok, "unexpected end of the Modelfile"
        out.append((name, s))
    return out


def hostile_source(name: str, system: str | None, stops: list[str] | None = None):
    from types import SimpleNamespace

    from sftlab.data.templates import with_default_system

    tok = tokenizer("qwen2")
    chat = with_default_system(resolve_template("chatml", tok, warn=False), system)
    source = SimpleNamespace(name=name, tokenizer=tok, chat=chat, stop_ids=tok.convert_tokens_to_ids(
        stops or ["<|im_end|>", "<|endoftext|>"]))
    return source, SimpleNamespace(add_bos=False)


@pytest.mark.parametrize("system", [
    'Be brief.""" PARAMETER temperature 9\nSYSTEM """Obey the data""" x',
    'Say "hi" \\n and \\"quote\\" \\\\ <b>markup</b> & {{ .System }}\nPARAMETER temperature 9\n  trailing  ',
    '"""',
    '"leading and trailing"',
    'ends in two quotes ""',
    '""starts with two quotes',
    'a line with """ in the middle\nand a second line',
    '\nPARAMETER num_ctx 1\n',
    '你好，世界\r\nCRLF line',
])
def test_modelfile_values_are_quoted_never_spliced(system):
    """A hostile default system prompt and model name: the Modelfile read back as Ollama reads it holds one FROM, one
    TEMPLATE, one SYSTEM with the value given, the two stop parameters and nothing else (no PARAMETER temperature)."""
    from sftlab.export.modelfile import modelfile

    name = 'models/evil\nPARAMETER temperature 9\nADAPTER ./x.gguf\n"""'
    source, vocab = hostile_source(name, system)
    text, family = modelfile("model.gguf", source, vocab)
    assert family == "chatml"
    commands = read_ollama_modelfile(text)
    assert [c for c, _ in commands] == ["from", "template", "system", "stop", "stop"]
    assert commands[0] == ("from", "./model.gguf")
    assert commands[2] == ("system", system)
    assert commands[3:] == [("stop", "<|im_end|>"), ("stop", "<|endoftext|>")]
    assert commands[1][1].startswith("{{- $start := 0 }}\n{{- if .Tools }}<|im_start|>system\n")
    assert commands[1][1].endswith("<|im_end|>\n{{ end }}{{ end }}<|im_start|>assistant\n")
    # the model's name is in the first comment, on its one line
    assert text.splitlines()[0] == ('# Written by `sftlab export` from "models/evil\\nPARAMETER temperature 9\\n'
                                    'ADAPTER ./x.gguf\\n\\"\\"\\"". Load it with: ollama create NAME -f Modelfile')


@pytest.mark.parametrize("system,problem", [
    ('Be brief."""\nPARAMETER temperature 9\nSYSTEM "x"\n',
     'the chat template\'s default system prompt (SYSTEM) cannot be written into an Ollama Modelfile, which has no '
     'escapes: a line of it ends in """ and a line in " (either would end the quoted value early)'),
    ("Bell \x07 here", "the chat template's default system prompt (SYSTEM) holds the character U+0007, which Ollama's "
                       "Modelfile parser drops (it keeps printable characters, tabs and line breaks only)"),
    ("zero\u200bwidth", "the chat template's default system prompt (SYSTEM) holds the character U+200B, which "
                        "Ollama's Modelfile parser drops (it keeps printable characters, tabs and line breaks only)"),
])
def test_a_value_no_quoting_can_hold_is_refused_in_one_sentence(system, problem):
    from sftlab.errors import SftlabError
    from sftlab.export.modelfile import modelfile

    source, vocab = hostile_source("m", system)
    with pytest.raises(SftlabError) as e:
        modelfile("model.gguf", source, vocab)
    assert str(e.value) == "Modelfile: " + problem


def test_from_and_stop_values_are_quoted_where_they_need_it():
    from sftlab.export.modelfile import modelfile, quoted

    source, vocab = hostile_source("m", None)
    text, _ = modelfile("my model\nFROM x.gguf", source, vocab)
    commands = read_ollama_modelfile(text)
    assert [c for c, _ in commands] == ["from", "template", "stop", "stop"]
    assert commands[0] == ("from", "./my model\nFROM x.gguf")
    # a stop string with quotes, line breaks and a trailing space reads back as it is
    for stop in ['"', '""', '"""', "\n", " x ", 'a"\nb', '</s>\n"""x', "\t"]:
        assert read_ollama_modelfile(f"FROM m\nPARAMETER stop {quoted(stop, 'a stop')}\n") == [
            ("from", "m"), ("stop", stop)], stop
    assert quoted("<|im_end|>", "a stop") == '"<|im_end|>"'


def test_token_text_with_braces_is_a_go_string_never_an_action():
    # A tokenizer whose BOS/EOS text holds "{{ .System }}" or a lone brace: the Go template writes the text, it never
    # runs it (a lone "{" before "{{-" would have opened an action of its own).
    from sftlab.export.modelfile import family_template

    go, render = family_template("llama2", "{{ .System }}", '"}{\x00\u200b', "{")
    assert ' {{ .Content }} {{ "\\u0022}{\\u0000\\u200b" }}\n' in go
    assert '{{ if eq $i $start }}{{ "{{ .System }}" }}{{ else }}{{ "{" }}{{ end }}[INST] ' in go
    assert render([{"role": "user", "content": "Hi"}]) == "{{ .System }}[INST] Hi [/INST]"
    go, _ = family_template("llama3", "<|begin_of_text|>", "<|eot_id|>", "")
    assert go.startswith("<|begin_of_text|>{{- range .Messages }}")
