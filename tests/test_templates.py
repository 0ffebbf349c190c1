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
