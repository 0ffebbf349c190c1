"""Rendering parity: sftlab renders every built-in template exactly as `tokenizer.apply_chat_template`
renders it, on the shipped data (chat, Chinese, multi-turn, tool definitions and calls)."""

from __future__ import annotations

import pytest

from conftest import SHARED_DATA, tokenizer
from sftlab.data.load import load_conversations
from sftlab.data.templates import BUILTIN_TEMPLATES, resolve_template

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
