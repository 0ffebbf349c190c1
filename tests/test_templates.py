"""Rendering parity: sftlab renders every built-in template exactly as `tokenizer.apply_chat_template`
renders it, on the shipped data (chat, Chinese, multi-turn, tool definitions and calls)."""

from __future__ import annotations

import pytest

from conftest import SHARED_DATA, tokenizer
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
            expected = tok.apply_chat_template(part, tools=conv.tools, tokenize=False, add_generation_prompt=prompt,
                                               chat_template=chat.source)
            assert chat.render(part, conv.tools, add_generation_prompt=prompt) == expected, (template, conv.row)


# --- the default system prompt (with_default_system) -------------------------------------------------------------

USER = [{"role": "user", "content": "hi"}]


def test_the_default_system_prompt_is_found_by_rendering():
    qwen2, llama3 = tokenizer("qwen2"), tokenizer("llama3")
    assert resolve_template(None, qwen2).default_system == "You are a helpful assistant"  # Qwen2's own template
    assert resolve_template("qwen", qwen2, warn=False).default_system == "You are a helpful assistant."
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

from conftest import family_tokenizer, real_template  # noqa: E402
from sftlab.data.conversation import Conversation, Message  # noqa: E402
from sftlab.data.encode import IGNORE_INDEX, Encoder  # noqa: E402
from sftlab.data.templates import ChatTemplate  # noqa: E402
import json
import re
from conftest import ALPACA, QWEN, _lines, _one_line


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
    from conftest import tokenizer
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
