"""`sftlab merge`: fold a LoRA/DoRA/QLoRA adapter (and the rows of any chat tokens it trained) into its base
model and write a plain full model, with the run's tokenizer and generation config."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from sftlab.errors import SftlabError
from sftlab.files import atomic_folder, require_output_dir
from sftlab.config.methods import UNMERGEABLE_PEFT_TYPES
from sftlab.models import load_model, load_tokenizer, require_model


def merge_adapter(adapter_dir: str | Path, out_dir: str | Path) -> Path:
    adapter_dir, out_dir = Path(adapter_dir), Path(out_dir)
    require_model(str(adapter_dir))
    if not (adapter_dir / "adapter_config.json").is_file():
        raise SftlabError(f"{adapter_dir}: no adapter_config.json (is it the output of a lora/dora run?)")
    peft_type = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8")).get("peft_type")
    if peft_type in UNMERGEABLE_PEFT_TYPES:
        raise SftlabError(f"{adapter_dir}: a {peft_type.lower()} adapter adds virtual tokens to the input or its "
                          "attention; there are no weights to merge it into. Use the folder as it is (chat, eval and "
                          "serve load it)")
    require_output_dir(out_dir, "--out")
    merged = load_model(str(adapter_dir), dequantize=True).merge_and_unload()  # (a QLoRA base: dequantised)
    with atomic_folder(out_dir, "--out") as tmp:
        merged.save_pretrained(str(tmp))
        load_tokenizer(str(adapter_dir)).save_pretrained(str(tmp))
        if (adapter_dir / "generation_config.json").is_file():  # the run's stop tokens
            shutil.copyfile(adapter_dir / "generation_config.json", tmp / "generation_config.json")
    return out_dir
