"""Resolving model arguments and loading tokenizers (the default model's GGUF, cached conversion)."""

from __future__ import annotations

import pytest

from helpers import FIXTURES
from sftlab.models import DEFAULT_MODEL, load_tokenizer, resolve_model
from sftlab.errors import SftlabError
import json
from pathlib import Path
import shutil
from helpers import ALPACA, SHARED_DATA, _lines, _one_line, _vocab_only_gguf

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


# The default model's conversions are tested in the session's SFTLAB_HOME (tests/conftest.py): whichever test uses
# the default model first converts it there, the others reuse it, as a user's runs do.

def test_default_model_tokenizer_from_gguf_is_converted_once(sftlab_home):
    from sftlab.models import _cache_key

    tok = load_tokenizer(None)
    assert "<|im_start|>" in tok.chat_template
    assert tok.eos_token == "<|im_end|>"
    cached = sftlab_home / "tokenizers" / _cache_key(resolve_model(None).path)
    assert (cached / "tokenizer.json").is_file()
    again = load_tokenizer(DEFAULT_MODEL)
    assert again("你好 world", add_special_tokens=False)["input_ids"] == tok("你好 world", add_special_tokens=False)["input_ids"]


def test_default_model_converts_once_to_a_plain_trainable_checkpoint(sftlab_home):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sftlab.models import load_model, model_path

    path = model_path(None)
    assert Path(path).parent == sftlab_home / "models"
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


# ---- hostile and odd input (issue 25's rounds) ----

def test_a_model_without_weights_is_one_sentence_for_every_command(tmp_path, cli):
    gguf = _vocab_only_gguf(tmp_path / "vocab.gguf")
    data = _lines(tmp_path / "d.jsonl", json.dumps(ALPACA))
    want = f"{gguf}: holds a vocabulary only, no weights"
    for args in (["chat", "--model", gguf, "--prompt", "hi"],
                 ["eval", "--model", gguf, "--data", data, "--out", tmp_path / "ev"],
                 ["serve", "--model", gguf, "--port", "1"],
                 ["merge", "--model", gguf, "--out", tmp_path / "merged"],
                 ["train", "--set", f"model={gguf}", "--set", f"datasets=[{data}]", "--set", f"output_dir={tmp_path / 'r'}"]):
        r = cli(*args)
        assert r.returncode == 2 and want in _one_line(r.stderr), (args[0], r.stderr[-1500:])
    assert not (tmp_path / "merged").exists() and not (tmp_path / "r" / "config.yaml").exists()


def test_a_folder_with_a_tokenizer_but_no_config_is_not_a_model(tmp_path, cli):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "tokenizer.json").write_text('{"stub": true}')
    r = cli("chat", "--model", folder, "--prompt", "hi")
    assert r.returncode == 2 and f"{folder}: not a model folder (it has no config.json)" in _one_line(r.stderr), r.stderr
    r = cli("inspect", "--model", folder, "--data", _lines(tmp_path / "d.jsonl", json.dumps(ALPACA)))
    assert r.returncode == 2 and f"{folder}: cannot load a tokenizer" in _one_line(r.stderr), r.stderr[-2000:]


def test_a_truncated_weight_file_is_said_before_loading(tiny_chat_model, tmp_path, cli):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_chat_model, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    want = f"{broken}: model.safetensors is truncated"
    r = cli("chat", "--model", broken, "--prompt", "hi")
    assert r.returncode == 2 and want in _one_line(r.stderr), r.stderr[-2000:]
    r = cli("train", "--set", f"model={broken}", "--set", f"datasets=[{SHARED_DATA / 'alpaca_en_demo.json'}]",
            "--set", f"output_dir={tmp_path / 'run'}", "--set", "limit=4")
    assert r.returncode == 2 and want in _one_line(r.stderr), r.stderr[-2000:]
    weights.unlink()
    r = cli("chat", "--model", broken, "--prompt", "hi")
    assert r.returncode == 2 and f"{broken}: the folder has no weights" in _one_line(r.stderr), r.stderr[-2000:]


def test_an_adapter_whose_base_is_gone_names_the_base(tmp_path, cli):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "base_model_name_or_path": str(tmp_path / "gone")}))
    (adapter / "adapter_model.safetensors").write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
    r = cli("chat", "--model", adapter, "--prompt", "hi")
    assert r.returncode == 2 and f"its base model {tmp_path / 'gone'} (adapter_config.json, base_model_name_or_path) " \
                                 f"cannot be used" in _one_line(r.stderr), r.stderr


def test_a_model_name_too_long_for_a_file_system_is_one_sentence(tmp_path):
    with pytest.raises(SftlabError) as e:
        resolve_model(str(tmp_path / ("m" * 300)))
    assert str(e.value) == (f"{tmp_path}/{'m' * 300}: "  # (a path is named whole, up to PATH_MAX)
                            "the name 'mmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmm…' is too long for a folder name "
                            "(300 bytes; file systems take at most 255)")


@pytest.mark.parametrize("text, problem", [
    ("[1, 2]", "base_model_name_or_path is empty; cannot tell which model the adapter is for"),
    ('{"base_model_name_or_path": ["a"]}', "base_model_name_or_path must be a model's path or name, not ['a']"),
])
def test_a_forged_adapter_config_is_one_sentence(tmp_path, text, problem):
    from sftlab.models import adapter_base

    (tmp_path / "adapter_config.json").write_text(text)
    with pytest.raises(SftlabError) as e:
        adapter_base(tmp_path)
    assert str(e.value) == f"{tmp_path / 'adapter_config.json'}: {problem}"


def test_an_adapter_config_that_is_a_fifo_is_refused_without_opening(tmp_path):
    import os

    from sftlab.models import adapter_base

    os.mkfifo(tmp_path / "adapter_config.json")
    with pytest.raises(SftlabError) as e:
        adapter_base(tmp_path)
    assert str(e.value) == (f"{tmp_path / 'adapter_config.json'}: adapter config is a FIFO (named pipe), "
                            "not a regular file")


def test_a_cache_folder_that_cannot_be_written_is_one_sentence(tmp_path):
    from sftlab.models import _publish

    (tmp_path / "models").write_text("x")  # (a file where $SFTLAB_HOME/models should be a folder)
    with pytest.raises(SftlabError) as e:
        _publish(tmp_path / "models" / "m-1", lambda folder: Path(folder).mkdir())
    assert str(e.value).startswith(f"{tmp_path / 'models'}: sftlab's cache cannot be written there (")


def test_the_gguf_conversion_says_how_far_it_is(monkeypatch, caplog):
    """transformers' tqdm over the GGUF's tensors becomes sftlab's Phase: after START_AFTER seconds a line with
    n/N tensors and the time left, and one when it is done (piped, a bar is noise; silent, a user waits blind)."""
    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    from sftlab import progress
    from sftlab.models import gguf_progress

    monkeypatch.setattr(progress, "START_AFTER", 0.0)
    original = gguf_utils.tqdm
    with caplog.at_level("INFO", logger="sftlab"), gguf_progress():
        assert list(gguf_utils.tqdm(iter(["a", "b", "c"]), desc="Converting")) == ["a", "b", "c"]
    assert gguf_utils.tqdm is original
    assert [r.getMessage() for r in caplog.records] == [
        "converting the GGUF's tensors: 1/3 tensors, 0 s left", "converting the GGUF's tensors: 3 tensors done in 0 s"]
