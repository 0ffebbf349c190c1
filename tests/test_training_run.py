"""sftlab.training.run's adapter card: the README.md of an adapter folder (the final one and every checkpoint-N)
names the base model as the user named it, where peft's names the folder the base was loaded from."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest


@pytest.fixture
def peft_folder(tiny_model, tmp_path) -> Path:
    """A tiny LoRA adapter saved by peft itself (whose README.md names `tiny_model`'s folder as the base)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(tiny_model)),
                           LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    folder = tmp_path / "run"
    model.save_pretrained(str(folder))
    assert f"base_model: {tiny_model}" in (folder / "README.md").read_text()  # (what peft wrote)
    return folder


def test_the_adapter_card_names_the_base_as_the_user_did(peft_folder):
    from sftlab.training.run import write_adapter_card

    write_adapter_card(peft_folder, "smollm2-135m-instruct", "lora")
    assert (peft_folder / "README.md").read_text() == f"""---
base_model: "smollm2-135m-instruct"
library_name: peft
tags:
- sftlab
- lora
---

# run

A lora adapter trained with sftlab on `smollm2-135m-instruct`.

- chat with it: `sftlab chat --model {peft_folder}`
- fold it into its base: `sftlab merge --model {peft_folder} --out merged`
- run it elsewhere: `sftlab export --model {peft_folder} --out export` (GGUF for llama.cpp and Ollama)
- in Python: `sftlab.models.load_model("{peft_folder}")` loads the base with the adapter
"""


def test_a_base_path_with_quotes_stays_one_yaml_string(peft_folder):
    import yaml

    from sftlab.training.run import write_adapter_card

    write_adapter_card(peft_folder, 'models/my "base": v2\n', "dora")
    head = (peft_folder / "README.md").read_text().split("---")[1]
    assert yaml.safe_load(head) == {"base_model": 'models/my "base": v2\n', "library_name": "peft",
                                    "tags": ["sftlab", "dora"]}


def test_each_checkpoint_gets_the_card_when_it_is_saved(peft_folder):
    from sftlab.training.run import _checkpoint_cards

    checkpoint = peft_folder.parent / "checkpoint-7"
    peft_folder.rename(checkpoint)
    callback = _checkpoint_cards("smollm2-135m-instruct", "lora")
    callback.on_save(SimpleNamespace(output_dir=str(checkpoint.parent)),
                     SimpleNamespace(global_step=7, is_world_process_zero=True), None)
    card = (checkpoint / "README.md").read_text()
    assert card.startswith('---\nbase_model: "smollm2-135m-instruct"\n') and "\n# checkpoint-7\n" in card


@pytest.mark.slow
def test_a_lora_run_writes_the_card_into_its_folder_and_checkpoints(tiny_model, tmp_path):
    from helpers import SHARED_DATA

    from sftlab.config import load_config
    from sftlab.training import train

    out = tmp_path / "lora"
    sets = {"model": str(tiny_model), "datasets": f"[{SHARED_DATA / 'alpaca_en_demo.json'}]", "template": "llama2",
            "limit": 8, "max_length": 128, "batch_size": 4, "max_steps": 2, "save_steps": 1,
            "keep_checkpoints": "all", "method": "lora", "lora_r": 2, "output_dir": str(out), "precision": "fp32"}
    train(load_config(None, [f"{k}={v}" for k, v in sets.items()]), quiet=True)
    for folder in (out, out / "checkpoint-1", out / "checkpoint-2"):
        card = (folder / "README.md").read_text()
        assert card.startswith(f"---\nbase_model: \"{tiny_model}\"\n"), folder
        assert f"\n# {folder.name}\n\nA lora adapter trained with sftlab on `{tiny_model}`.\n" in card
