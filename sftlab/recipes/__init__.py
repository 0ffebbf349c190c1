"""Recipes of other SFT tools (LLaMA-Factory, axolotl, TRL) read into sftlab, and how their training differs.

`import_recipe(path)` reads a recipe, tells its tool from keys only that tool has (`detect`), and translates it with
the tool's table (llamafactory.py, axolotl.py, trl.py; the engine in rules.py and build.py): an `Imported` holding
the sftlab config, one report item per key of the recipe (mapped, ignored or unsupported, and why), and notes.
`import_argv` does the same for a `trl sft --key value …` command line. `sftlab import` writes the config
(output.py); docs/coming-from.md has the tables in prose."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any, Mapping, Optional

from sftlab.errors import SftlabError, echo, echo_path
from sftlab.recipes.files import read_recipe
from sftlab.recipes.rules import Imported, Item

__all__ = ["TOOLS", "Imported", "Item", "detect", "import_argv", "import_recipe", "read_recipe"]

TOOLS = ("llamafactory", "axolotl", "trl")

# Keys only one tool's recipes have, beside the model key each has: two tools never share a whole row.
_MARKERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "llamafactory": ("model_name_or_path", ("stage", "finetuning_type", "template", "cutoff_len", "dataset",
                                            "dataset_dir", "lora_target", "lora_rank", "val_size", "max_samples")),
    "axolotl": ("base_model", ("sequence_len", "micro_batch_size", "num_epochs", "adapter", "sample_packing",
                               "val_set_size", "lora_target_linear", "datasets")),
    "trl": ("model_name_or_path", ("dataset_name", "max_length", "assistant_only_loss", "completion_only_loss",
                                   "dataset_text_field", "use_peft", "packing_strategy", "max_seq_length", "datasets")),
}


def detect(data: Mapping[str, Any]) -> Optional[str]:
    """The tool a recipe is written for ("llamafactory", "axolotl" or "trl"), or None where its keys do not say."""
    if not isinstance(data, Mapping):
        return None
    for tool, (model, telling) in _MARKERS.items():
        if model in data and any(k in data for k in telling):
            return tool
    return None


def import_recipe(path: str | Path, *, tool: Optional[str] = None, dataset_dir: Optional[str] = None,
                  model: Optional[str] = None) -> Imported:
    """The sftlab config of another tool's recipe (YAML), with the report of every key. `tool` when its keys do not
    say; `dataset_dir`: LLaMA-Factory's folder of dataset_info.json (the recipe's, else data/); `model` in place of
    the recipe's."""
    return import_data(read_recipe(path), str(path), tool=tool, dataset_dir=dataset_dir, model=model)


def import_data(recipe: Mapping[str, Any], source: str, *, tool: Optional[str] = None,
                dataset_dir: Optional[str] = None, model: Optional[str] = None) -> Imported:
    """import_recipe for keys already read (`source` names them in sentences)."""
    from sftlab.recipes.build import build

    if not isinstance(recipe, Mapping):
        raise SftlabError(f"{echo_path(source)}: a recipe is a mapping of keys to values")
    if tool is not None and tool not in TOOLS:
        raise SftlabError(f"tool {echo(tool)} is not one sftlab imports; choose one of {', '.join(TOOLS)}")
    chosen = tool or detect(recipe)
    if chosen is None:
        raise SftlabError(f"{echo_path(source)}: its keys are not those of a LLaMA-Factory, axolotl or TRL recipe "
                          f"(model_name_or_path or base_model, with the tool's own keys); name the tool "
                          f"(--tool {' | '.join(TOOLS)})")
    if dataset_dir is not None and chosen != "llamafactory":
        raise SftlabError(f"a dataset folder is LLaMA-Factory's (dataset_info.json); a {chosen} recipe names its "
                          "files itself")
    return build(chosen, _tool(chosen), recipe, source, dataset_dir=dataset_dir, model=model)


def _tool(name: str) -> Any:
    if name == "llamafactory":
        from sftlab.recipes.llamafactory import TOOL
    elif name == "axolotl":
        from sftlab.recipes.axolotl import TOOL
    else:
        from sftlab.recipes.trl import TOOL
    return TOOL


def import_argv(argv: list[str], *, model: Optional[str] = None) -> Imported:
    """The sftlab config of a `trl sft` command line (`["trl", "sft", "--model_name_or_path", "Qwen/…", …]`, or the
    arguments alone; `python trl/scripts/sft.py …` too). `--config FILE` is read first and the other arguments
    override it, as TRL's parser does; a flag without a value is true."""
    from sftlab.recipes.trl import parse_argv

    recipe = parse_argv(argv)
    return import_data(recipe, "the trl sft arguments", tool="trl", model=model)


def split_command(text: str) -> list[str]:
    """A command line as a shell splits it (line continuations and quotes), for import_argv."""
    try:
        return shlex.split(text.replace("\\\n", " "))
    except ValueError as e:
        raise SftlabError(f"the command line cannot be split ({e})") from None
