"""sftlab.models.quantize: QLoRA's 4-bit settings, the file an adapter keeps them in, and the one sentence where
bitsandbytes cannot run."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from sftlab.models import quantize
from sftlab.errors import SftlabError


def test_settings_follow_the_precision_and_round_trip_through_the_adapter_folder(tmp_path):
    assert quantize.settings(True) == {"method": "bitsandbytes", "quant_type": "nf4", "double_quant": True,
                                       "compute_dtype": "bfloat16"}
    assert quantize.settings(False)["compute_dtype"] == "float32"
    assert quantize.read(tmp_path) is None  # not a QLoRA folder
    quantize.write(tmp_path, quantize.settings(False))
    assert json.loads((tmp_path / "quantization.json").read_text())["compute_dtype"] == "float32"
    assert quantize.read(tmp_path) == quantize.settings(False)
    config = quantize.bnb_config(quantize.read(tmp_path))
    assert config.load_in_4bit and config.bnb_4bit_quant_type == "nf4" and config.bnb_4bit_use_double_quant
    assert config.bnb_4bit_compute_dtype == torch.float32


@pytest.mark.parametrize("text, message", [
    ("{", "quantization.json: unreadable"),
    ("[]", "quantization.json: expected the keys method, quant_type, double_quant, compute_dtype"),
    ('{"method": "bitsandbytes", "quant_type": "fp4", "double_quant": true, "compute_dtype": "float32"}',
     "quantization.json: quant_type must be 'nf4', not 'fp4'"),
    ('{"method": "bitsandbytes", "quant_type": "nf4", "double_quant": true, "compute_dtype": "<b>float8</b>"}',
     "quantization.json: compute_dtype must be one of bfloat16, float32, not '<b>float8</b>'"),
])
def test_a_damaged_quantization_file_is_one_sentence(tmp_path, text, message):
    (tmp_path / "quantization.json").write_text(text)
    with pytest.raises(SftlabError, match=message) as e:
        quantize.read(tmp_path)
    assert "\n" not in str(e.value)


def test_bitsandbytes_runs_here_on_cpu():
    quantize.require_bitsandbytes("cpu")  # installed by `make setup` (the qlora extra), with its CPU kernels


def test_without_bitsandbytes_qlora_is_refused_in_one_sentence(monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # (import then raises ImportError)
    monkeypatch.setitem(sys.modules, "bitsandbytes.functional", None)
    with pytest.raises(SftlabError, match=r"^method qlora needs bitsandbytes, which is not installed: "
                                          r"pip install 'sftlab\[qlora\]'$"):
        quantize.require_bitsandbytes("cpu")


def test_a_device_bitsandbytes_cannot_quantise_on_is_refused_in_one_sentence(monkeypatch):
    import bitsandbytes.functional as bnbf

    def fails(*args, **kwargs):
        raise RuntimeError("no kernel for this device\nsecond line")

    monkeypatch.setattr(bnbf, "quantize_4bit", fails)
    with pytest.raises(SftlabError) as e:
        quantize.require_bitsandbytes("cpu")
    assert str(e.value) == ("method qlora: bitsandbytes cannot run on this machine's cpu (no kernel for this device); "
                            "use method lora")


def test_a_quantization_file_that_is_not_a_regular_file_is_refused_without_opening(tmp_path):
    import os

    os.mkfifo(tmp_path / "quantization.json")  # (opening it to read would block forever)
    with pytest.raises(SftlabError) as e:
        quantize.read(tmp_path)
    assert str(e.value) == f"{tmp_path / 'quantization.json'}: is a FIFO, not a file sftlab writes"


@pytest.mark.parametrize("text, message", [
    ("[" * 20_000 + "]" * 20_000, "unreadable (nested too deeply)"),
    ('{"method": "bitsandbytes", "quant_type": "' + "q" * 50_000 + '", "double_quant": true, '
     '"compute_dtype": "float32"}', "quant_type must be 'nf4', not '" + "q" * 80 + "…(50000 characters)'"),
    (" " * 70_000, "is larger than 65,536 bytes, more than sftlab writes there"),
])
def test_a_forged_quantization_file_is_one_short_sentence(tmp_path, text, message):
    (tmp_path / "quantization.json").write_text(text)
    with pytest.raises(SftlabError) as e:
        quantize.read(tmp_path)
    assert str(e.value) == f"{tmp_path / 'quantization.json'}: {message}"
