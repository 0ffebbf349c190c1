"""TRL's `trl sft` recipes (a `--config` YAML, or the command line's arguments): SFTConfig's, ModelConfig's and
ScriptArguments' keys → sftlab's, and `dataset_name` / `datasets` (a local file or folder) → sftlab's `datasets`.

What each key means was read in TRL's own code: trainer/sft_config.py (defaults, truncation, packing, the loss
masks), trainer/model_config.py (the LoRA and quantisation keys), scripts/sft.py and scripts/utils.py (the script's
datasets, splits and parser)."""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional

from sftlab.errors import SftlabError, echo
from sftlab.recipes import files
from sftlab.recipes.build import Data, Tool
from sftlab.recipes.rules import (Default, Item, Rule, Unmapped, choice, flatten, names, number, of_recipe, shown,
                                  switch, whole)
from sftlab.recipes.training_args import TRAINING_ARGUMENTS, TRAINING_DEFAULTS

NAME = "TRL"
_COMMANDS = ("dpo", "grpo", "kto", "reward", "rloo", "orpo", "ppo", "gkd", "xpo", "nash_md", "online_dpo")


def method(recipe: Mapping[str, Any]) -> str:
    """The sftlab method of use_peft (a full fine-tune without it), load_in_4bit and use_dora."""
    if recipe.get("use_peft") is not True:
        return "full"
    if recipe.get("load_in_4bit") is True:
        return "qlora"
    return "dora" if recipe.get("use_dora") is True else "lora"


_METHOD = of_recipe(method)


def _targets(value: Any, recipe: Mapping[str, Any]) -> Any:
    chosen = names(value)
    return "all-linear" if chosen == ["all-linear"] else chosen


def _template(value: Any, recipe: Mapping[str, Any]) -> str:
    if isinstance(value, str) and value.endswith(".jinja"):
        return value
    raise Unmapped("unsupported", "{value}: a tokenizer's chat template; sftlab's `template` takes a .jinja file or a "
                   "built-in name (save the template as a .jinja file)")


RULES: list[Rule] = [
    Rule("model_name_or_path", "model", "the model to fine-tune ({value}): a folder, or a hub name sftlab loads "
         "offline from the local cache (download it first)"),
    Rule("model_revision", None, "", choice({"main": Unmapped("ignored", "main")},
                                            "a hub revision: sftlab loads the folder or cached model given")),
    Rule("dtype", None, "", choice({
        "float32": Unmapped("mapped", "float32 weights, as sftlab keeps them (bf16 is autocast: see bf16)"),
        "auto": Unmapped("ignored", "auto: sftlab keeps fp32 weights and autocasts (precision)")},
        "{value} weights: sftlab keeps the weights in fp32 and computes in bf16 under autocast (precision: bf16)")),
    Rule("attn_implementation", None, "the attention kernel: sftlab picks one per device (the same attention)",
         status="ignored"),
    Rule("use_peft", "method", "LoRA adapters through peft: sftlab's method lora (dora with use_dora, qlora with "
         "load_in_4bit)", choice({True: _METHOD, False: Unmapped("mapped", "off: a full fine-tune, sftlab's "
                                                                                   "default method")},
                                          "{value}: true or false")),
    Rule("lora_r", "lora_r", "the LoRA rank ({value})", whole),
    Rule("lora_alpha", "lora_alpha", "the LoRA scale numerator ({value}; the update is scaled by alpha/rank)", number),
    Rule("lora_dropout", "lora_dropout", "dropout on the adapter's input ({value})", number),
    Rule("lora_target_modules", "lora_targets", "the layers that get adapters ({value})", _targets),
    Rule("lora_target_parameters", None, "adapters on parameters (MoE experts): sftlab adapts linear layers",
         status="unsupported"),
    Rule("lora_modules_to_save", None, "modules trained in full beside the adapters: sftlab trains the adapters only",
         status="unsupported"),
    Rule("lora_task_type", None, "", choice({"causal_lm": Unmapped("mapped", "CAUSAL_LM, as sftlab's adapters")},
                                            "{value}: sftlab's adapters are for causal language models")),
    Rule("use_rslora", None, "", switch(Unmapped("unsupported", "rank-stabilised LoRA scaling: sftlab's LoRA scales by "
                                               "alpha/rank"))),
    Rule("use_dora", "method", "DoRA (weight-decomposed LoRA): sftlab's method dora",
         choice({True: _METHOD, False: Unmapped("ignored", "off")}, "{value}: true or false")),
    Rule("load_in_4bit", "method", "a 4-bit base (bitsandbytes) under LoRA: sftlab's method qlora (NF4 with double "
         "quantisation)", choice({True: _METHOD, False: Unmapped("ignored", "off")},
                                               "{value}: true or false")),
    Rule("load_in_8bit", None, "", switch(Unmapped("unsupported", "an 8-bit base: sftlab quantises the base to 4-bit "
                                                 "NF4 only (method qlora)"), "off")),
    Rule("bnb_4bit_quant_type", None, "", choice({"nf4": Unmapped("mapped", "NF4, as sftlab's qlora")},
                                                 "{value}: sftlab's qlora quantises to NF4")),
    Rule("use_bnb_nested_quant", None, "", choice({True: Unmapped("mapped", "double quantisation, as sftlab's qlora"),
                                                   False: Unmapped("unsupported", "sftlab's qlora always uses double "
                                                                                  "quantisation")},
                                                  "{value}: true or false")),
    Rule("max_length", "max_length", "the longest example in tokens ({value}); TRL truncates keeping the start "
         "(truncation_mode keep_start), as sftlab does, and sftlab drops (and reports) an example that loses its "
         "whole answer", whole),
    Rule("max_seq_length", "max_length", "TRL's former name of max_length ({value}); truncation keeps the start, as in "
         "sftlab", whole),
    Rule("truncation_mode", None, "", choice({"keep_start": Unmapped("mapped", "keep_start, as sftlab truncates")},
                                             "{value}: sftlab truncates keeping the start")),
    Rule("packing", "packing", "examples packed into rows of max_length, each packed row one batch member: fewer "
         "optimizer steps per epoch, in both", choice({True: True, False: Unmapped("mapped", "off, as sftlab's "
                                                                                        "default")},
                                          "{value}: true or false")),
    Rule("packing_strategy", None, "", choice({
        "bfd": Unmapped("mapped", "bfd: whole examples in rows of max_length, best-fit decreasing, no attention "
                                  "across examples, as sftlab packs")},
        "{value}: sftlab packs whole examples best-fit decreasing (TRL's bfd)")),
    Rule("padding_free", "padding_free", "the batch laid end to end without padding ({value}); a layout, the loss is "
         "the same (sftlab's default is padding-free)"),
    Rule("eval_packing", None, "how the eval batches are laid out: the eval loss is the same", status="ignored"),
    Rule("pad_to_multiple_of", None, "padding to a multiple: a layout; sftlab's batches are padding-free",
         status="ignored"),
    Rule("shuffle_dataset", None, "sftlab samples the examples in a random order every epoch", status="ignored"),
    Rule("dataset_num_proc", "num_proc", "processes that encode the data ({value})", whole),
    Rule("dataset_kwargs.*", None, "options of TRL's dataset preparation (skip_prepare_dataset): sftlab encodes every "
         "file itself", status="unsupported"),
    Rule("eos_token", None, "TRL's end-of-turn token in place of the tokenizer's: sftlab trains the end-of-turn token "
         "the model's template writes (EOS where it writes none)", status="unsupported"),
    Rule("pad_token", None, "the padding token: its positions are never trained; sftlab pads with the tokenizer's own, "
         "or EOS", status="ignored"),
    Rule("chat_template_path", "template", "a chat template for training ({value})", _template),
    Rule("loss_type", None, "", choice({
        "nll": Unmapped("mapped", "nll: cross-entropy over the trained tokens, sftlab's loss"),
        "chunked_nll": Unmapped("mapped", "chunked_nll: the same loss computed in chunks, as sftlab computes it")},
        "{value}: sftlab's loss is cross-entropy over the trained tokens")),
    Rule("activation_offloading", None, "", switch(Unmapped("unsupported", "activations offloaded to the CPU: "
                                                          "gradient_checkpointing saves memory instead"))),
    Rule("model_init_kwargs.*", None, "options for from_pretrained: sftlab loads the model itself",
         status="unsupported"),
    Rule("router_aux_loss_coef", None, "a mixture-of-experts router loss: sftlab trains with the language-model loss "
         "only", status="unsupported"),
    Rule("config", None, "the YAML file of the arguments: its keys are reported one by one", status="mapped"),
    Rule("num_processes", None, "processes for accelerate: `sftlab train --nproc N` (or torchrun)", status="ignored"),
    Rule("accelerate_config", None, "accelerate's launch settings: sftlab runs under torchrun with distributed: "
         "{strategy: ddp | fsdp2 | deepspeed}", status="unsupported"),
    Rule("ignore_bias_buffers", None, "a DDP setting for models with boolean buffers", status="ignored"),
    Rule("env.*", None, "environment variables for the run: set them in the shell", status="ignored"),
    *TRAINING_ARGUMENTS,
]

DEFAULTS: list[Default] = [
    Default("learning_rate", "learning_rate", lambda r: 2e-5, "SFTConfig's learning rate is 2e-5 whatever the method"),
    *TRAINING_DEFAULTS,
    Default("gradient_checkpointing", "gradient_checkpointing", lambda r: True,
            "SFTConfig recomputes activations by default: less memory, the same gradients"),
]


def check(recipe: Mapping[str, Any], source: str) -> None:
    return None


def notes(recipe: Mapping[str, Any], config: dict[str, Any]) -> list[str]:
    out = []
    if "bf16" not in recipe and "fp16" not in recipe:
        out.append("precision: TRL trains in bf16 unless fp16 is set; sftlab's precision auto takes bf16 where the "
                   "device runs it (CUDA with bf16, or a CPU measured faster), else fp32")
    if config.get("method") in ("lora", "dora", "qlora") and "lora_target_modules" not in recipe:
        out.append("lora_targets: TRL leaves the adapters' layers to peft's default for the architecture (q_proj and "
                   "v_proj for Llama and Qwen); sftlab's default is all-linear: set lora_targets: [q_proj, v_proj] "
                   "for the same adapters")
    return out


# ---- datasets ----------------------------------------------------------------------------------------------------

# What TRL trains for each kind of data (sft_config.py): assistant_only_loss masks all but the assistant turns of
# conversational data, completion_only_loss (default: on for prompt-completion data) all but the completion;
# otherwise the whole sequence is trained. sftlab's train_on for each (None: sftlab's default does the same).
_MASKS = {
    ("conversational", True, None): "all_assistant", ("conversational", False, None): "all",
    ("prompt-completion", False, False): "all", ("prompt-completion", False, True): "all_assistant",
    ("prompt-completion", False, None): "all_assistant", ("prompt-completion", True, None): "all_assistant",
}


def data(recipe: Mapping[str, Any], source: str, dataset_dir: Optional[str]) -> Data:
    out = Data()
    mixture = recipe.get("datasets")
    if isinstance(mixture, list) and mixture:
        specs = _mixture(mixture, out)
        if recipe.get("dataset_name"):
            out.items.append(Item("dataset_name", "ignored", None, "TRL loads `datasets` when both are given"))
    elif recipe.get("dataset_name"):
        specs = _one(str(recipe["dataset_name"]), "dataset_name", out)
    else:
        specs = []
        if "dataset_name" in recipe:
            out.items.append(Item("dataset_name", "ignored", None, "left empty"))
    text_field = recipe.get("dataset_text_field")
    kinds = {files.shape(s["path"]) for s in specs}
    if text_field not in (None, "text") and kinds <= {"text", None}:
        for spec in specs:
            spec.update(format="text", columns={"text": text_field})
    _report_text_field(recipe, text_field, kinds, out)
    _report_masks(recipe, kinds, out)
    _report_splits(recipe, specs, out)
    out.config["datasets"] = specs
    return out


def _one(name: str, key: str, out: Data, index: int = 0, data_files: Any = None) -> list[dict[str, Any]]:
    where = files.kind(name)
    if where == "hub":
        out.items.append(Item(key, "unsupported", f"datasets[{index}].path", files.HUB.replace("{value}", shown(name))))
        out.notes.append(files.hub_note(index, "datasets", name))
        return [{"path": name}]
    if where == "other":
        out.items.append(Item(key, "unsupported", None, f"{shown(name)}: sftlab reads {', '.join(files.READABLE)} "
                                                         "files and folders saved by datasets"))
        return []
    if where == "folder":
        found = ([files.joined(name, f) for f in names(data_files)] if data_files else files.folder_files(name))
        out.items.append(Item(key, "mapped" if found else "unsupported", "datasets" if found else None,
                              f"a local folder: its data files, each an entry ({len(found)})" if found else
                              "a folder without .json, .jsonl, .csv or .parquet files"))
        return [{"path": f} for f in found]
    out.items.append(Item(key, "mapped", f"datasets[{index}].path", "a local " + ("data file" if where == "file"
                                                                                  else "saved dataset")))
    return [{"path": name}]


def _mixture(entries: list[Any], out: Data) -> list[dict[str, Any]]:
    """TRL's `datasets` (DatasetMixtureConfig): each entry's path (and data_files), fraction → weight."""
    specs: list[dict[str, Any]] = []
    for i, entry in enumerate(entries):
        at = f"datasets[{i}]"
        if not isinstance(entry, dict) or not entry.get("path"):
            out.items.append(Item(at, "unsupported", None, "a dataset is a mapping with a path"))
            continue
        made = _one(str(entry["path"]), f"{at}.path", out, len(specs), entry.get("data_files"))
        for key, value in flatten(entry):
            if key == "path":
                continue
            out.items.append(_mixture_item(f"{at}.{key}", key, value, f"datasets[{len(specs)}]", made))
        if isinstance(entry.get("fraction"), (int, float)) and not isinstance(entry.get("fraction"), bool):
            for spec in made:
                spec["weight"] = float(entry["fraction"])
        specs += made
    return specs


def _mixture_item(key: str, name: str, value: Any, at: str, made: list[dict[str, Any]]) -> Item:
    if not made:
        return Item(key, "unsupported", None, "the dataset is not read (see its path)")
    if name == "fraction":
        return Item(key, "mapped", f"{at}.weight", "its share of the mixture ({}): sftlab draws that share of the "
                    "examples (repeating rows where a file is short); TRL keeps the first rows of each dataset and "
                    "shrinks the mixture so none repeats".format(shown(value)))
    if name == "split":
        return Item(key, "ignored" if value == "train" else "unsupported", None,
                    "train: a local file's only split" if value == "train" else "sftlab reads the whole file")
    if name.startswith("data_files"):
        return Item(key, "mapped", f"{at}.path", "the data files, each an entry")
    if name == "columns":
        return Item(key, "unsupported", None, "a selection of columns: sftlab reads the fields of the row's format")
    return Item(key, "unsupported", None, "a hub dataset's configuration: sftlab reads local files")


def _report_text_field(recipe: Mapping[str, Any], field: Any, kinds: set[Optional[str]], out: Data) -> None:
    if "dataset_text_field" not in recipe:
        return
    if field in (None, "text"):
        out.items.append(Item("dataset_text_field", "mapped", None, "text: the text field under its own name"))
    elif kinds <= {"text", None}:
        out.items.append(Item("dataset_text_field", "mapped", "datasets[].columns.text",
                              f"raw text in column {shown(field)}: sftlab's format text reads it there"))
    else:
        out.items.append(Item("dataset_text_field", "ignored", None, "the data is conversational or prompt-completion, "
                                                                     "which TRL does not read as text"))


def _report_masks(recipe: Mapping[str, Any], kinds: set[Optional[str]], out: Data) -> None:
    """assistant_only_loss and completion_only_loss → train_on, by the data's kind (read from the first row)."""
    assistant = recipe.get("assistant_only_loss") is True
    completion = recipe.get("completion_only_loss")
    kind = next(iter(kinds)) if len(kinds) == 1 else None
    keys = [k for k in ("assistant_only_loss", "completion_only_loss") if k in recipe]
    if kind == "text":
        for key in keys:
            out.items.append(Item(key, "ignored", None, "raw text: every token is trained, in both"))
        return
    if kind is None:
        train_on = "all_assistant" if assistant else ("all" if completion is False else None)
        if train_on is None:
            out.notes.append("train_on: TRL trains every token of conversational data unless assistant_only_loss, "
                             "and only the completion of prompt-completion data; the data is not here to tell which: "
                             "set train_on: all for conversational data")
    else:
        train_on = _MASKS.get((kind, assistant, completion if kind == "prompt-completion" else None))
    if train_on not in (None, "all_assistant"):
        out.config["train_on"] = train_on
    what = {"all": "every token (train_on: all)", "all_assistant": "the answers only (train_on: all_assistant)",
            None: "as sftlab's default"}[train_on]
    for key in keys:
        out.items.append(Item(key, "mapped", "train_on" if train_on else None,
                              f"{shown(recipe[key])}: on {kind or 'this'} data TRL trains {what}"))
    if not keys and train_on == "all":
        out.notes.append("train_on: all, as TRL trains every token of conversational data without "
                         "assistant_only_loss")


def _report_splits(recipe: Mapping[str, Any], specs: list[dict[str, Any]], out: Data) -> None:
    local = bool(specs) and all(files.kind(s["path"]) != "hub" for s in specs)
    for key, default in (("dataset_train_split", "train"), ("dataset_test_split", "test")):
        if key not in recipe:
            continue
        value = recipe[key]
        if key == "dataset_test_split" and recipe.get("eval_strategy", "no") == "no":
            out.items.append(Item(key, "ignored", None, "TRL evaluates only with an eval_strategy"))
        elif value == default and (local or key == "dataset_train_split"):
            out.items.append(Item(key, "ignored", None, f"{value}: a local file's rows" if local else
                                  f"{value}: the split the download holds"))
        else:
            out.items.append(Item(key, "unsupported", None, f"split {shown(value)}: sftlab reads local files; give "
                                                            "that split's file as eval_datasets"
                                  if key == "dataset_test_split" else f"split {shown(value)}: download that split"))
    for key, why in (("dataset_config", "a hub dataset's configuration: sftlab reads local files"),
                     ("dataset_streaming", "sftlab reads the whole data before training"),
                     ("streaming", "sftlab reads the whole data before training")):
        if key in recipe:
            value = recipe[key]
            out.items.append(Item(key, "ignored", None, "off") if value in (None, False) else
                             Item(key, "unsupported", None, why))
    if "test_split_size" in recipe:
        value = recipe["test_split_size"]
        if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 1:
            out.config["eval_split"] = float(value)
            out.items.append(Item("test_split_size", "mapped", "eval_split", f"the held-out fraction ({value})"))
        else:
            out.items.append(Item("test_split_size", "ignored" if value is None else "unsupported", None,
                                  "left empty" if value is None else "sftlab's eval_split is a fraction below 1"))


_DATA_KEYS = ("dataset_name", "datasets", "dataset_text_field", "assistant_only_loss", "completion_only_loss",
              "dataset_train_split", "dataset_test_split", "dataset_config", "dataset_streaming", "streaming",
              "test_split_size")


def template(recipe: Mapping[str, Any]) -> Optional[str]:
    return None  # (TRL trains with the tokenizer's own chat template, as sftlab does)


TOOL = Tool(NAME, RULES, DEFAULTS, _DATA_KEYS, data, check, template, notes)


# ---- the command line ---------------------------------------------------------------------------------------------

def parse_argv(argv: list[str]) -> dict[str, Any]:
    """`trl sft --key value …` → the recipe's keys, as TRL's parser reads them: `--config FILE` first, the other
    arguments over it; `--flag` alone is true; several values after one key are a list. Values are YAML scalars
    (2.0e-4 a number, true a boolean)."""
    from sftlab.config.load import parse_yaml

    args = _arguments(argv)
    recipe: dict[str, Any] = {}
    i = 0
    while i < len(args):
        token = args[i]
        if not token.startswith("--") or len(token) == 2:
            raise SftlabError(f"trl sft arguments: {echo(token)} is not an --option (values follow their option)")
        key, _, inline = token[2:].partition("=")
        values = [inline] if inline else []
        i += 1
        while not inline and i < len(args) and not args[i].startswith("--"):
            values.append(args[i])
            i += 1
        if key in recipe:
            raise SftlabError(f"trl sft arguments: --{key} is given twice")
        parsed = [_scalar(v, parse_yaml) for v in values]
        recipe[key] = True if not parsed else parsed[0] if len(parsed) == 1 else parsed
    if isinstance(recipe.get("config"), str):
        recipe = {**files.read_recipe(recipe["config"]), **recipe}
    return recipe


def _arguments(argv: list[str]) -> list[str]:
    """The arguments after the program (`trl sft`, `python trl/scripts/sft.py`, `accelerate launch … sft.py`)."""
    start = next((i for i, a in enumerate(argv) if a.startswith("--")), len(argv))
    program = [os.path.basename(a) for a in argv[:start]]
    other = [p for p in program if p in _COMMANDS]
    if other:
        raise SftlabError(f"trl {other[0]} is TRL's {other[0]} training, not SFT; sftlab imports `trl sft` only")
    if program and not any(p in ("sft", "sft.py") for p in program):
        raise SftlabError(f"{echo(' '.join(argv[:start]))} is not a `trl sft` command")
    return argv[start:]


def _scalar(text: str, parse_yaml: Any) -> Any:
    try:
        value = parse_yaml(text)
    except Exception:  # (a value YAML cannot read is text, as argparse keeps it)
        return text
    return value if isinstance(value, (bool, int, float)) or value is None else text
