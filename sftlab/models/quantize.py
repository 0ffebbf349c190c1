"""The 4-bit base of `method: qlora`: its linear layers in NF4 (bitsandbytes) with double quantisation, computed in
the run's precision; LoRA trains on top (sftlab/training/methods.py).

A QLoRA run's adapter folder holds quantization.json beside adapter_config.json, so that chat, eval and serve put
the adapter on the same 4-bit base it was trained on, and `sftlab merge` / `sftlab export` dequantise that base
(the very weights the adapter saw) before folding the adapter in.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from sftlab.errors import SftlabError, echo, first_line

FILE = "quantization.json"
MAX_BYTES = 64 * 1024  # what quantization.json can be: four short keys
COMPUTE_DTYPES = ("bfloat16", "float32")


def settings(bf16: bool) -> dict[str, Any]:
    """What a run quantises with: NF4, double quantisation, the compute dtype of its precision."""
    return {"method": "bitsandbytes", "quant_type": "nf4", "double_quant": True,
            "compute_dtype": "bfloat16" if bf16 else "float32"}


def bnb_config(quantization: dict[str, Any]) -> Any:
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quantization["quant_type"],
                              bnb_4bit_use_double_quant=quantization["double_quant"],
                              bnb_4bit_compute_dtype=getattr(torch, quantization["compute_dtype"]))


def require_bitsandbytes(device: str) -> None:
    """One sentence where bitsandbytes is missing or cannot quantise on `device`."""
    try:
        import bitsandbytes.functional as bnbf
        import torch
    except ImportError:
        raise SftlabError("method qlora needs bitsandbytes, which is not installed: pip install 'sftlab[qlora]'") from None
    try:  # a 4-bit round trip of a few values, on the device the run trains on
        packed, state = bnbf.quantize_4bit(torch.ones(64, device=device), quant_type="nf4", compress_statistics=True)
        bnbf.dequantize_4bit(packed, state)
    except Exception as e:  # noqa: BLE001 (whatever the backend raises, the sentence is the same)
        raise SftlabError(f"method qlora: bitsandbytes cannot run on this machine's {device} ({first_line(e)}); "
                          "use method lora") from None


def device_map() -> dict[str, Any]:
    """Where the 4-bit layers are made: the device the model will run on (the process's own GPU under torchrun;
    sftlab.machine.hardware.pick_device's order), since a quantised model is not moved afterwards."""
    import os

    import torch

    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    else:
        device = torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    require_bitsandbytes(device.type)
    return {"": device}


def write(folder: Path, quantization: dict[str, Any]) -> None:
    from sftlab.files import write_text

    write_text(folder / FILE, json.dumps(quantization, indent=2) + "\n")


def read(folder: Path) -> dict[str, Any] | None:
    """A QLoRA adapter folder's quantisation (checked field by field); None for any other folder."""
    from sftlab import jsonsafe

    path = Path(folder) / FILE
    if not os.path.lexists(path):
        return None
    try:  # (a regular file only, never opened as a FIFO or through a link; a few keys, so a few bytes)
        data = jsonsafe.load(path, max_bytes=MAX_BYTES)
    except jsonsafe.NotAFile as e:
        raise SftlabError(f"{path}: {e.what}") from None
    except (OSError, ValueError) as e:
        raise SftlabError(f"{path}: unreadable ({first_line(e)})") from None
    expected = settings(True)
    if not isinstance(data, dict) or data.keys() != expected.keys():
        raise SftlabError(f"{path}: expected the keys {', '.join(expected)}")
    for key in ("method", "quant_type", "double_quant"):
        if data[key] != expected[key]:
            raise SftlabError(f"{path}: {key} must be {expected[key]!r}, not {echo(data[key])}")
    if not isinstance(data["compute_dtype"], str) or data["compute_dtype"] not in COMPUTE_DTYPES:
        raise SftlabError(f"{path}: compute_dtype must be one of {', '.join(COMPUTE_DTYPES)}, "
                          f"not {echo(data['compute_dtype'])}")
    return data


def dequantize(model: Any) -> Any:
    """The 4-bit linear layers back as ordinary float32 ones, holding exactly the weights the 4-bit layers compute
    with (transformers' own dequantisation, which also drops the model's quantization_config)."""
    import torch

    return model.dequantize(dtype=torch.float32)
