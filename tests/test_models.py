"""Resolving model arguments and loading tokenizers (the default model's GGUF, cached conversion)."""

from __future__ import annotations

import pytest

from conftest import FIXTURES
from sftlab.models import DEFAULT_MODEL, load_tokenizer, resolve_model
from sftlab.errors import SftlabError


def test_resolve_forms(tmp_path):
    assert resolve_model(None).name == DEFAULT_MODEL
    assert resolve_model("SmolLM2-135M-Instruct").kind == "gguf"
    assert resolve_model(str(FIXTURES / "tokenizers" / "qwen2")).kind == "dir"
    assert resolve_model("Qwen/Qwen2.5-0.5B").kind == "hub"
    with pytest.raises(SftlabError, match="GGUF file not found"):
        resolve_model(str(tmp_path / "x.gguf"))
    with pytest.raises(SftlabError, match="no such model directory"):
        resolve_model(str(tmp_path / "nothing"))


def test_default_model_tokenizer_from_gguf_is_converted_once(tmp_path, monkeypatch):
    monkeypatch.setenv("SFTLAB_HOME", str(tmp_path))
    tok = load_tokenizer(None)
    assert "<|im_start|>" in tok.chat_template
    assert tok.eos_token == "<|im_end|>"
    (cached,) = (tmp_path / "tokenizers").iterdir()
    assert (cached / "tokenizer.json").is_file()
    again = load_tokenizer(DEFAULT_MODEL)
    assert again("你好 world", add_special_tokens=False)["input_ids"] == tok("你好 world", add_special_tokens=False)["input_ids"]
