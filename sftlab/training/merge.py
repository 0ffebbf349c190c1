"""`sftlab merge`: fold a LoRA/DoRA/QLoRA adapter (and the rows of any chat tokens it trained) into its base
model and write a plain full model, with the run's tokenizer and generation config."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from sftlab.errors import SftlabError, first_line
from sftlab.files import atomic_folder, require_apart, require_output_dir
from sftlab.config.methods import UNMERGEABLE_PEFT_TYPES
from sftlab.models import adapter_base, head_task, load_model, load_tokenizer, require_model, resolve_model


def model_reads(model: str | Path | None, what: str = "model") -> list[tuple[str, Path]]:
    """The paths a model argument reads, for files.require_apart: its folder or GGUF file and, for an adapter, its
    base model's (a few levels at most: a forged adapter_config.json that names itself ends there)."""
    reads: list[tuple[str, Path]] = []
    for _ in range(4):
        ref = resolve_model(None if model is None else str(model))
        if ref.path is None:  # a hub name: nothing on this disk
            break
        reads.append((what, ref.path))
        model = adapter_base(ref.path) if ref.kind == "dir" else None
        if model is None:
            break
        what = "base model"
    return reads


def adapter_settings(adapter_dir: Path) -> dict[str, Any]:
    """adapter_config.json, checked to be a JSON object, or one sentence."""
    config_file = adapter_dir / "adapter_config.json"
    try:
        settings = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise SftlabError(f"{config_file}: unreadable ({first_line(e)})") from None
    if not isinstance(settings, dict):
        raise SftlabError(f"{config_file}: not a JSON object (peft writes one)")
    return settings


def refuse_head_adapter(adapter_dir: Path, settings: dict[str, Any]) -> None:
    """A head run's LoRA checkpoint holds the head's weights but not its labels; merged onto its causal base it
    would lose the head. The run's own folder is the merged head model (training/heads.py saves it so)."""
    if settings.get("task_type") == "SEQ_CLS":
        raise SftlabError(f"{adapter_dir}: the adapter of a task head run (task_type SEQ_CLS), which does not hold the "
                          "head's labels; the run's own output folder is its merged head model: use that")


def merge_adapter(adapter_dir: str | Path, out_dir: str | Path) -> Path:
    """Merge the adapter in `adapter_dir` into its base and write the full model to `out_dir`; everything is checked
    before the model loads."""
    adapter_dir, out_dir = Path(adapter_dir), Path(out_dir)
    require_model(str(adapter_dir))
    task = head_task(adapter_dir)
    if task:
        raise SftlabError(f"{adapter_dir}: a {task} head model, whole already (a head run merges its adapter when it "
                          "saves); eval and `export --format safetensors` read it as it is")
    if not (adapter_dir / "adapter_config.json").is_file():
        raise SftlabError(f"{adapter_dir}: no adapter_config.json (is it the output of a lora/dora run?)")
    settings = adapter_settings(adapter_dir)
    peft_type = settings.get("peft_type")
    if isinstance(peft_type, str) and peft_type in UNMERGEABLE_PEFT_TYPES:
        raise SftlabError(f"{adapter_dir}: a {peft_type.lower()} adapter adds virtual tokens to the input or its "
                          "attention; there are no weights to merge it into. Use the folder as it is (chat, eval and "
                          "serve load it)")
    refuse_head_adapter(adapter_dir, settings)
    require_apart(out_dir, "--out", model_reads(adapter_dir, "adapter"))
    require_output_dir(out_dir, "--out", keep=False)  # (said now, not after minutes of loading)
    merged = load_model(str(adapter_dir), dequantize=True).merge_and_unload()  # (a QLoRA base: dequantised)
    with atomic_folder(out_dir, "--out") as tmp:
        merged.save_pretrained(str(tmp))
        load_tokenizer(str(adapter_dir)).save_pretrained(str(tmp))
        if (adapter_dir / "generation_config.json").is_file():  # the run's stop tokens
            shutil.copyfile(adapter_dir / "generation_config.json", tmp / "generation_config.json")
    return out_dir
