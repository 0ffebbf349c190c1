"""Rendering parity: sftlab renders every built-in template exactly as `tokenizer.apply_chat_template`
renders it, on the shipped data (chat, Chinese, multi-turn, tool definitions and calls)."""

from __future__ import annotations

import re

import pytest
from jinja2 import TemplateError

from helpers import SHARED_DATA, tokenizer
from sftlab.data.load import load_conversations
from sftlab.data.templates import (BUILTIN_TEMPLATES, resolve_template, system_prompt_line, system_prompt_use,
                                   with_default_system)
from sftlab.errors import SftlabError

FILES = ["alpaca_en_demo.json", "alpaca_zh_demo.json", "glaive_toolcall_en_demo.json", "identity.json"]


def conversations():
    out = []
    for name in FILES:
        out += load_conversations(SHARED_DATA / name).conversations[:25]
    return out


@pytest.mark.parametrize("template", BUILTIN_TEMPLATES)
def test_every_builtin_template_renders_as_apply_chat_template(template):
    tok = tokenizer("llama3" if template == "llama3" else "qwen2")
    chat = resolve_template(template, tok, warn=False)
    for conv in conversations():
        msgs = [m.to_template_dict() for m in conv.messages]
        for prompt in (False, True):
            part = msgs[:-1] if prompt else msgs
            try:
                expected = tok.apply_chat_template(part, tools=conv.tools, tokenize=False, add_generation_prompt=prompt,
                                                   chat_template=chat.source)
            except TemplateError as e:  # the template's own refusal (phi3 has no tool role): sftlab's, word for word
                with pytest.raises(SftlabError, match=f"^chat template '{template}' failed to render: {re.escape(str(e))}$"):
                    chat.render(part, conv.tools, add_generation_prompt=prompt)
                continue
            assert chat.render(part, conv.tools, add_generation_prompt=prompt) == expected, (template, conv.row)


# --- the default system prompt (with_default_system) -------------------------------------------------------------

USER = [{"role": "user", "content": "hi"}]


def test_the_default_system_prompt_is_found_by_rendering():
    qwen2, llama3 = tokenizer("qwen2"), tokenizer("llama3")
    assert resolve_template(None, qwen2).default_system == "You are a helpful assistant"  # Qwen2's own template
    assert resolve_template("qwen", qwen2, warn=False).default_system == (  # Qwen2.5's
        "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.")
    assert resolve_template("chatml", qwen2, warn=False).default_system is None
    assert resolve_template("llama3", llama3, warn=False).default_system is None


def test_default_system_replaces_the_templates_own_in_conversations_without_one():
    tok = tokenizer("qwen2")
    chat = with_default_system(resolve_template(None, tok), 'You are Lumi. "Quoted" \\ {{ x }} %} 你好')
    expected = ('<|im_start|>system\nYou are Lumi. "Quoted" \\ {{ x }} %} 你好<|im_end|>\n'
                "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    assert chat.render(USER, add_generation_prompt=True) == expected
    # the template as saved with a trained model renders the same in transformers
    assert tok.apply_chat_template(USER, chat_template=chat.source, tokenize=False, add_generation_prompt=True) == expected
    # a conversation that has a system message keeps it
    own = [{"role": "system", "content": "Be brief."}, *USER]
    assert chat.render(own) == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"


def test_an_empty_default_system_removes_the_default_and_a_template_without_one_is_left_alone():
    tok = tokenizer("qwen2")
    chat = with_default_system(resolve_template(None, tok), "")
    assert chat.render(USER) == "<|im_start|>system\n<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
    assert chat.default_system is None
    chatml = resolve_template("chatml", tok, warn=False)
    assert with_default_system(chatml, "").source == chatml.source
    assert with_default_system(chatml, "Hi.").render(USER) == "<|im_start|>system\nHi.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"


def test_a_template_that_writes_its_default_even_for_an_empty_system_message_cannot_drop_it():
    alpaca = resolve_template("alpaca", tokenizer("qwen2"), warn=False)
    with pytest.raises(SftlabError, match=r"chat template 'alpaca' writes its system prompt \"Below is an instruction"):
        with_default_system(alpaca, "")


def test_the_system_prompt_line_says_where_the_system_prompt_comes_from():
    tok = tokenizer("qwen2")
    convs = conversations()[:3]  # alpaca rows: none has a system message
    use = system_prompt_use(resolve_template(None, tok), convs)
    assert system_prompt_line(use) == (
        "3 of 3 conversations have no system message; the tokenizer's own template gives them its default system "
        "prompt \"You are a helpful assistant\" (default_system / --default-system replaces it, \"\" removes it)")
    use = system_prompt_use(with_default_system(resolve_template(None, tok), "You are Lumi."), convs)
    assert system_prompt_line(use) == ("3 of 3 conversations have no system message; default_system gives them the "
                                       "system prompt \"You are Lumi.\" instead of the template's \"You are a helpful assistant\"")
    assert system_prompt_use(resolve_template("chatml", tok, warn=False), convs) is None


# --- the answer-span check on the models' own templates (tests/fixtures/templates/) --------------------

from helpers import family_tokenizer, real_template  # noqa: E402
from sftlab.data.conversation import Conversation, Message  # noqa: E402
from sftlab.data.encode import IGNORE_INDEX, Encoder  # noqa: E402
from sftlab.data.templates import ChatTemplate  # noqa: E402
import json
import re
from helpers import ALPACA, QWEN, _lines, _one_line


@pytest.mark.parametrize("name, base, eos, trained", [
    # Text between the generation prompt and the answer that the model writes itself, trained as its output.
    ("Qwen-Qwen3-0.6B", "qwen2", None, "<think>\n\n</think>\n\nThe answer.<|im_end|>"),
    ("Qwen3.5-4B", "qwen2", None, "\n</think>\n\nThe answer.<|im_end|>"),
    ("CohereForAI-c4ai-command-r7b-12-2024-tool_use", "qwen2", "<|END_OF_TURN_TOKEN|>",
     "<|START_RESPONSE|>The answer.<|END_RESPONSE|><|END_OF_TURN_TOKEN|>"),
    ("openai-gpt-oss-120b", "qwen2", None, "<|channel|>final<|message|>The answer.<|return|>"),
    ("GLM-4.6", "qwen2", None, "\n<think></think>\nThe answer.<|endoftext|>"),
    ("Kimi-K2-Thinking", "qwen2", None, "<think></think>The answer.<|im_end|>"),
    ("StepFun3.5-Flash", "qwen2", None, "\n</think>\nThe answer.<|im_end|>"),
    ("meetkai-functionary-medium-v3.2", "llama3", None, "all\nThe answer.<|eot_id|>"),
])
def test_templates_whose_model_writes_text_before_the_answer_are_accepted_and_train_it(name, base, eos, trained):
    tok = family_tokenizer(base)
    saved = tok.eos_token
    tok.eos_token = eos or saved
    try:
        chat = real_template(name, tok, bos_token="")  # (check_answer_span refused all eight before)
        ex = Encoder(tok, chat, max_length=4096).encode_one(
            Conversation([Message("user", "The question?"), Message("assistant", "The answer.")]))
    finally:
        tok.eos_token = saved
    labels = [t for t in ex.labels if t != IGNORE_INDEX]
    assert tok.decode(labels) == trained
    first = ex.labels.index(labels[0])
    assert ex.labels[first : first + len(labels)] == labels == ex.input_ids[first : first + len(labels)]


def test_a_template_that_writes_no_generation_prompt_is_still_refused_one_that_always_writes_it_is_not(tmp_path):
    from sftlab.data.templates import check_answer_span

    header = ChatTemplate("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}",
                          "no prompt", {})
    with pytest.raises(SftlabError, match="writes '<|im_start|>assistant' before an answer but not for add_generation_prompt"):
        check_answer_span(header)
    always = ChatTemplate("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
                          "{{ '<|im_start|>assistant\\n' }}", "always", {})
    check_answer_span(always)
    assert always.always_prompts and not header.always_prompts
    tok = tokenizer("qwen2")
    conv = Conversation([Message("user", "a"), Message("assistant", "b"), Message("user", "c"), Message("assistant", "d")])
    ex = Encoder(tok, ChatTemplate(always.source, "always", {"eos_token": "<|endoftext|>"})).encode([conv]).examples
    # The generation prompt it writes after the last turn is the next prompt, not the answer's.
    assert [tok.decode([t for t in e.labels if t != IGNORE_INDEX]) for e in ex] == ["b<|im_end|>d<|im_end|>"]


# ---- hostile and odd input (issue 25's rounds) ----

def test_a_template_without_the_generation_prompt_is_refused(tmp_path):
    from helpers import tokenizer
    from sftlab.data.templates import resolve_template

    no_prompt = tmp_path / "t.jinja"
    no_prompt.write_text("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}")
    with pytest.raises(SftlabError, match=re.escape(
            f"chat template '{no_prompt}' writes '<|im_start|>assistant' before an answer but not for "
            "add_generation_prompt")):
        resolve_template(str(no_prompt), tokenizer("qwen2"))
    empty = tmp_path / "e.jinja"
    empty.write_text("")
    with pytest.raises(SftlabError, match=f"^chat template '{re.escape(str(empty))}' renders nothing"):
        resolve_template(str(empty), tokenizer("qwen2"))
    no_answer = tmp_path / "n.jinja"
    no_answer.write_text("{% for m in messages %}{{ m.role }}: ...\n{% endfor %}")
    with pytest.raises(SftlabError, match="does not write the assistant's answer"):
        resolve_template(str(no_answer), tokenizer("qwen2"))


def test_a_template_file_that_is_not_utf8(tmp_path, cli):
    t = tmp_path / "t.jinja"
    t.write_bytes(b"{{ bos_token }}\n\xff\xfe")
    f = _lines(tmp_path / "d.jsonl", json.dumps(ALPACA))
    r = cli("inspect", "--model", QWEN, "--template", t, "--data", f)
    assert r.returncode == 2 and f"{t}: template file is not valid UTF-8 (byte 16, line 2)" in _one_line(r.stderr)


# ---- template_kwargs that break the template or that it never reads (issue 46) ----

CHATML_THINKING = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
                   "{% if add_generation_prompt %}<|im_start|>assistant\n"
                   "{% if enable_thinking is defined and not enable_thinking %}<think>\n\n</think>\n\n{% endif %}{% endif %}")


@pytest.mark.parametrize("kwargs, sentence", [
    # Jinja's own words: `{% set none = 1 %}` is "can't assign to 'const'" in every row.
    ({"none": 1}, "template_kwargs (--template-kwargs): chat template 't' never reads 'none', so it would change "
                  "nothing; the options it reads: enable_thinking"),
    ({"True": 1, "enable_thinking": False}, "template_kwargs (--template-kwargs): chat template 't' never reads "
                                            "'True', so it would change nothing; the options it reads: "
                                            "enable_thinking"),
    ({"not": 1}, "template_kwargs (--template-kwargs): chat template 't' never reads 'not', so it would change "
                 "nothing; the options it reads: enable_thinking"),
    ({"enable_thinkng": False}, "template_kwargs (--template-kwargs): chat template 't' never reads "
                                "'enable_thinkng', so it would change nothing; the options it reads: "
                                "enable_thinking"),
])
def test_template_kwargs_the_template_cannot_read_are_refused_naming_the_option(kwargs, sentence):
    from sftlab.data.templates import with_template_kwargs

    with pytest.raises(SftlabError) as e:
        with_template_kwargs(ChatTemplate(CHATML_THINKING, "t", {}), kwargs)
    assert str(e.value) == sentence


def test_template_kwargs_that_break_rendering_are_refused_naming_the_option():
    from sftlab.data.templates import with_template_kwargs

    chat = ChatTemplate(CHATML_THINKING.replace("{% for m in messages %}", "{% for s in stops %}{{ s }}{% endfor %}"
                                                "{% for m in messages %}"), "t", {})
    with pytest.raises(SftlabError) as e:
        with_template_kwargs(chat, {"stops": 5})
    assert str(e.value) == ("template_kwargs (--template-kwargs) {\"stops\": 5} break chat template 't': it fails to "
                            "render: 'int' object is not iterable")
    works = with_template_kwargs(ChatTemplate(CHATML_THINKING, "t", {}), {"enable_thinking": False})
    assert works.render([{"role": "user", "content": "hi"}], add_generation_prompt=True) == (
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n")


# ---- built-in templates equal their family's real template for every role (issue 47, item 3) ----
# The real templates are fixtures (tests/fixtures/templates/README.md names their sources): qwen is Qwen2.5's, llama3
# is Llama 3.0's (Meta-Llama-3-8B-Instruct), phi3 is Phi-3-mini-4k-instruct's.

WEATHER = {"type": "function", "function": {"name": "weather", "description": "The \"weather\" <b>now</b>",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
CALL = {"type": "function", "function": {"name": "weather", "arguments": {"city": "Paris"}}}
PLAIN = [  # the roles every family has
    ([{"role": "user", "content": "hi"}], None),
    ([{"role": "system", "content": "Be brief."}, {"role": "user", "content": " hi \n"}, {"role": "assistant", "content": "yo"},
      {"role": "user", "content": "again"}, {"role": "assistant", "content": " yo yo "}], None),
    ([{"role": "system", "content": ""}, {"role": "user", "content": "hi"}], None),
    ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "system", "content": "late"},
      {"role": "user", "content": "c"}], None),
    ([{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "<think>\nAdd.\n</think>\n\n4"}], None),
]
TOOLS = [  # tool definitions, calls and results: Qwen2.5's
    ([{"role": "user", "content": "Weather?"}, {"role": "assistant", "content": "", "tool_calls": [CALL, CALL]},
      {"role": "tool", "content": "21"}, {"role": "tool", "content": "22"}, {"role": "assistant", "content": "Warm."}], [WEATHER]),
    ([{"role": "system", "content": "S"}, {"role": "user", "content": "Weather?"},
      {"role": "assistant", "content": "Looking.", "tool_calls": [CALL]}, {"role": "tool", "content": "{\"c\": 21}"},
      {"role": "user", "content": "ok"}], [WEATHER]),
    ([{"role": "user", "content": "Weather?"}, {"role": "assistant", "content": "", "tool_calls": [CALL]},
      {"role": "tool", "content": "21"}], None),
]


@pytest.mark.parametrize("name, tok_name, real, cases", [
    ("qwen", "qwen2", "Qwen-Qwen2.5-7B-Instruct", PLAIN + TOOLS),
    ("llama3", "llama3", "meta-llama-Meta-Llama-3-8B-Instruct", PLAIN + [(c[:2], t) for c, t in TOOLS]),
    ("phi3", "qwen2", "microsoft-Phi-3-mini-4k-instruct", PLAIN),
])
def test_builtin_templates_render_as_their_familys_real_template(name, tok_name, real, cases):
    tok = tokenizer(tok_name)
    chat = resolve_template(name, tok, warn=False)
    source = real_template(real, tok).source
    for messages, tools in cases:
        for prompt in (False, True):
            expected = tok.apply_chat_template(messages, tools=tools, chat_template=source, tokenize=False,
                                               add_generation_prompt=prompt)
            assert chat.render(messages, tools, add_generation_prompt=prompt) == expected, (messages, prompt)


def test_qwen_is_qwen25_for_every_role():
    tok = tokenizer("qwen2")
    chat = resolve_template("qwen", tok, warn=False)
    qwen = "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
    assert chat.render([{"role": "user", "content": "hi"}], add_generation_prompt=True) == (
        qwen + "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    messages, tools = TOOLS[0]
    call = '<tool_call>\n{"name": "weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    assert chat.render(messages, tools) == (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.\n\n# Tools\n\n"
        "You may call one or more functions to assist with the user query.\n\n"
        "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
        '{"type": "function", "function": {"name": "weather", "description": "The \\"weather\\" <b>now</b>", '
        '"parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}\n</tools>\n\n'
        "For each function call, return a json object with function name and arguments within <tool_call></tool_call> "
        'XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\nWeather?<|im_end|>\n"
        f"<|im_start|>assistant\n{call}\n{call}<|im_end|>\n"
        "<|im_start|>user\n<tool_response>\n21\n</tool_response>\n<tool_response>\n22\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\nWarm.<|im_end|>\n")
    messages, _ = TOOLS[1]
    assert chat.render(messages) == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nWeather?<|im_end|>\n"
        f"<|im_start|>assistant\nLooking.\n{call}<|im_end|>\n"
        '<|im_start|>user\n<tool_response>\n{"c": 21}\n</tool_response><|im_end|>\n<|im_start|>user\nok<|im_end|>\n')
    messages, _ = PLAIN[3]
    assert chat.render(messages) == (qwen + "<|im_start|>user\na<|im_end|>\n<|im_start|>assistant\nb<|im_end|>\n"
                                     "<|im_start|>system\nlate<|im_end|>\n<|im_start|>user\nc<|im_end|>\n")
    # Qwen2.5 has no reasoning field: a trace is written in front of the answer (as sftlab gives it to such templates).
    assert chat.render([{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4", "reasoning_content": "Add."}]) == (
        qwen + "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n<think>\nAdd.\n</think>\n\n4<|im_end|>\n")


def test_qwen_trains_a_tool_call_and_the_answer_after_grouped_tool_results():
    tok = tokenizer("qwen2")
    conv = Conversation([Message("user", "Weather?"), Message("assistant", "", tool_calls=[CALL, CALL]),
                         Message("tool", "21"), Message("tool", "22"), Message("assistant", "Warm.")],
                        tools=[WEATHER])
    ex = Encoder(tok, resolve_template("qwen", tok, warn=False), train_on="all_assistant").encode_one(conv)
    call = '<tool_call>\n{"name": "weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    assert [tok.decode(run) for run in _runs(ex)] == [f"{call}\n{call}<|im_end|>", "Warm.<|im_end|>"]
    assert tok.decode(ex.input_ids).endswith(
        "<|im_start|>user\n<tool_response>\n21\n</tool_response>\n<tool_response>\n22\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\nWarm.<|im_end|>\n")


def _runs(ex):
    runs, run = [], []
    for t in ex.labels:
        if t == IGNORE_INDEX:
            runs, run = runs + [run] if run else runs, []
        else:
            run.append(t)
    return runs + [run] if run else runs


def test_llama3_is_llama30_for_every_role():
    tok = tokenizer("llama3")
    chat = resolve_template("llama3", tok, warn=False)
    messages, _ = PLAIN[1]
    assert chat.render(messages) == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nyo<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nagain<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nyo yo<|eot_id|>")
    assert chat.render([{"role": "user", "content": "hi"}], add_generation_prompt=True) == (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n")
    # Llama 3.0 has no tool format: no tool definitions, a tool result under its own role's header.
    assert chat.render(TOOLS[2][0][:1] + [{"role": "tool", "content": "21"}], [WEATHER]) == (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nWeather?<|eot_id|>"
        "<|start_header_id|>tool<|end_header_id|>\n\n21<|eot_id|>")
    assert not chat.handles_tools and not chat.handles_tool_calls  # (sftlab writes a call as JSON text, and warns)


def test_phi3_is_phi3_for_every_role_and_refuses_a_tool_result():
    tok = tokenizer("qwen2")
    chat = resolve_template("phi3", tok, warn=False)
    messages, _ = PLAIN[1]
    assert chat.render(messages[:3]) == (
        "<|system|>\nBe brief.<|end|>\n<|user|>\n hi \n<|end|>\n<|assistant|>\nyo<|end|>\n<|endoftext|>")
    assert chat.render(messages[:2], add_generation_prompt=True) == (
        "<|system|>\nBe brief.<|end|>\n<|user|>\n hi \n<|end|>\n<|assistant|>\n")
    with pytest.raises(SftlabError) as e:
        chat.render(TOOLS[2][0])
    assert str(e.value) == ("chat template 'phi3' failed to render: Phi-3's template has no 'tool' role (its own "
                            "template leaves such messages out); use a template with tool results, such as qwen or chatml")
    # Trained: the answer, <|end|>, and the EOS that Phi-3's template writes after the last message.
    conv = Conversation([Message("user", "hi"), Message("assistant", "yo")])
    ex = Encoder(tok, chat).encode_one(conv)
    assert [tok.decode(run) for run in _runs(ex)] == ["yo<|end|>\n<|endoftext|>"]


def test_phi3_differs_from_phi35_only_in_an_empty_system_message():
    tok = tokenizer("qwen2")
    chat = resolve_template("phi3", tok, warn=False)
    phi35 = real_template("microsoft-Phi-3.5-mini-instruct", tok).source
    for messages, _ in PLAIN:
        ours = chat.render(messages)
        theirs = tok.apply_chat_template(messages, chat_template=phi35, tokenize=False)
        if messages[0] == {"role": "system", "content": ""}:
            assert (ours, theirs) == ("<|system|>\n<|end|>\n<|user|>\nhi<|end|>\n<|endoftext|>",
                                      "<|user|>\nhi<|end|>\n<|endoftext|>")
        else:
            assert ours == theirs, messages


def test_template_kwargs_nested_too_deep_are_refused_before_anything_recurses():
    from sftlab.data.templates import with_template_kwargs

    value: list = []
    for _ in range(3000):  # (a RecursionError traceback in the Jinja literal, before)
        value = [value]
    with pytest.raises(SftlabError) as e:
        with_template_kwargs(ChatTemplate(CHATML_THINKING, "t", {}), {"enable_thinking": value})
    assert str(e.value) == ("template_kwargs (--template-kwargs): the value of 'enable_thinking' is nested more than 64 "
                            "levels deep (sftlab reads JSON up to 64 levels)")
