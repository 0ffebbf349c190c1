"""`sftlab merge`: fold a LoRA/DoRA adapter into its base model and write a plain full model."""

from __future__ import annotations

import json
from pathlib import Path

from sftlab.errors import SftlabError
from sftlab.models import load_model


def merge_adapter(adapter_dir: str | Path, out_dir: str | Path) -> Path:
    from peft import PeftModel
    from transformers import AutoTokenizer

    adapter_dir, out_dir = Path(adapter_dir), Path(out_dir)
    config_file = adapter_dir / "adapter_config.json"
    if not config_file.is_file():
        raise SftlabError(f"{adapter_dir}: no adapter_config.json (is it the output of a lora/dora run?)")
    base = json.loads(config_file.read_text())["base_model_name_or_path"]
    if not base:
        raise SftlabError(f"{config_file}: base_model_name_or_path is empty; cannot tell which model to merge into")
    model = load_model(base)
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    out_dir.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(str(out_dir))
    AutoTokenizer.from_pretrained(str(adapter_dir)).save_pretrained(str(out_dir))
    return out_dir
