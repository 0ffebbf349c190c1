"""Resolving model arguments and loading tokenizers (the default model's GGUF, cached conversion)."""

from __future__ import annotations

import pytest

from conftest import FIXTURES
from sftlab.models import DEFAULT_MODEL, load_tokenizer, resolve_model
from sftlab.errors import SftlabError

pytestmark = pytest.mark.slow  # real trainings, models, servers and subprocess CLIs


def test_resolve_forms(tmp_path):
    assert resolve_model(None).name == DEFAULT_MODEL
    assert resolve_model("SmolLM2-135M-Instruct").kind == "gguf"
    assert resolve_model(str(FIXTURES / "tokenizers" / "qwen2")).kind == "dir"
    assert resolve_model("Qwen/Qwen2.5-0.5B").kind == "hub"
    with pytest.raises(SftlabError, match="GGUF file not found"):
        resolve_model(str(tmp_path / "x.gguf"))
    with pytest.raises(SftlabError, match="no such model directory"):
        resolve_model(str(tmp_path / "nothing"))


def test_a_mistyped_local_path_is_not_sent_to_the_hub(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    with pytest.raises(SftlabError, match="runs/nope: no such model directory"):
        resolve_model("runs/nope")
    assert resolve_model("Qwen/Qwen2.5-0.5B").kind == "hub"  # no local folder Qwen/: a hub name


def test_default_model_tokenizer_from_gguf_is_converted_once(tmp_path, monkeypatch):
    monkeypatch.setenv("SFTLAB_HOME", str(tmp_path))
    tok = load_tokenizer(None)
    assert "<|im_start|>" in tok.chat_template
    assert tok.eos_token == "<|im_end|>"
    (cached,) = (tmp_path / "tokenizers").iterdir()
    assert (cached / "tokenizer.json").is_file()
    again = load_tokenizer(DEFAULT_MODEL)
    assert again("你好 world", add_special_tokens=False)["input_ids"] == tok("你好 world", add_special_tokens=False)["input_ids"]


def test_default_model_converts_once_to_a_plain_trainable_checkpoint(tmp_path, monkeypatch):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sftlab.models import load_model, model_path

    monkeypatch.setenv("SFTLAB_HOME", str(tmp_path))
    path = model_path(None)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert not hasattr(model.config, "quantization_config") and not getattr(model, "is_quantized", False)
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(134.5e6, rel=0.01)
    tok = AutoTokenizer.from_pretrained(path)
    assert model_path(DEFAULT_MODEL) == path  # cached: no second conversion
    # The dequantized weights are the real model: it knows the capital of France.
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                     add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = load_model(path).generate(**prompt, max_new_tokens=16, do_sample=False)
    answer = tok.decode(out[0, prompt["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer
