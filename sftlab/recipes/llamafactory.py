"""LLaMA-Factory's recipes (`llamafactory-cli train recipe.yaml`): its keys → sftlab's, and its datasets, named in
`dataset_info.json` in `dataset_dir`, → sftlab's `datasets` entries (format, columns, message_keys, roles).

What each key means was read in LLaMA-Factory's own code: hparams/{data,finetuning,model}_args.py (names and
defaults), data/parser.py and data/converter.py (dataset_info.json), data/processor/supervised.py and
processor_utils.py (truncation and masks), data/processor/pretrain.py (stage pt), hparams/parser.py (packing)."""

from __future__ import annotations

import difflib
import json
import os
from typing import Any, Mapping, Optional

from sftlab.errors import SftlabError, echo, echo_path
from sftlab.files import read_text
from sftlab.recipes import files
from sftlab.recipes.build import Data, Tool
from sftlab.recipes.rules import (Default, Item, Rule, Unmapped, choice, flatten, names, number, of_recipe, shown,
                                  switch, whole)
from sftlab.recipes.training_args import TRAINING_ARGUMENTS, TRAINING_DEFAULTS

NAME = "LLaMA-Factory"
STAGES = {"sft": "supervised fine-tuning", "pt": "continued pre-training on raw text", "rm": "reward modelling",
          "dpo": "DPO preference training", "kto": "KTO preference training", "ppo": "PPO reinforcement learning"}


def method(recipe: Mapping[str, Any]) -> str:
    """The sftlab method of LLaMA-Factory's finetuning_type (lora by default), use_dora and quantization_bit."""
    kind = recipe.get("finetuning_type") or "lora"
    if kind in ("full", "freeze"):
        return kind
    if kind != "lora":
        raise Unmapped("unsupported", f"finetuning_type {kind!r}: sftlab has full, freeze, lora, dora and qlora; the "
                       "config keeps sftlab's default method (full): set `method` by hand")
    if recipe.get("quantization_bit") == 4:
        return "qlora"
    return "dora" if recipe.get("use_dora") is True else "lora"


_METHOD = of_recipe(method)


def _targets(value: Any, recipe: Mapping[str, Any]) -> Any:
    chosen = names(value)
    return "all-linear" if chosen == ["all"] else chosen


def _per_dataset_limit(value: Any, recipe: Mapping[str, Any]) -> int:
    """max_samples × the datasets named (`data` sets it again to × the datasets sftlab reads, once it knows them)."""
    return whole(value, recipe) * max(1, len(names(recipe.get("dataset") or [])))


def _val_size(value: Any, recipe: Mapping[str, Any]) -> float:
    size = number(value, recipe)
    if size >= 1:
        raise Unmapped("unsupported", "{value} held-out examples: sftlab's eval_split is a fraction of the examples; "
                       "set it to {value} ÷ the number of examples")
    return float(size)


def _freeze_layers(value: Any, recipe: Mapping[str, Any]) -> int:
    layers = whole(value, recipe)
    if layers < 0:
        raise Unmapped("unsupported", "{value}: a negative count trains the first layers in LLaMA-Factory; sftlab's "
                       "freeze trains the top freeze_trainable_layers layers only")
    return layers


_MULTIMODAL = "a multimodal model's setting: sftlab trains text-only language models"
MULTIMODAL_KEYS = ("image_max_pixels", "image_min_pixels", "image_do_pan_and_scan", "crop_to_patches",
                   "video_max_pixels", "video_min_pixels", "video_fps", "video_maxlen", "use_audio_in_video",
                   "audio_sampling_rate", "media_dir", "freeze_vision_tower", "freeze_multi_modal_projector",
                   "freeze_language_model")
_LORA_ONLY = "not in sftlab's LoRA (peft's plain LoRA, DoRA or QLoRA)"

RULES: list[Rule] = [
    Rule("model_name_or_path", "model", "the model to fine-tune ({value}): a folder, or a hub name sftlab loads "
         "offline from the local cache (download it first)"),
    Rule("stage", None, "", choice({
        "sft": Unmapped("mapped", "sft: supervised fine-tuning, what sftlab trains"),
        "pt": Unmapped("mapped", "pt: continued pre-training on raw text; the datasets become format text (every "
                                 "token trained, EOS appended, as LLaMA-Factory's pretraining adds EOS)")},
        "{value}: not SFT")),
    Rule("finetuning_type", "method", "which weights train ({value}): lora → sftlab's lora (qlora with "
         "quantization_bit 4, dora with use_dora), full and freeze as they are", _METHOD),
    Rule("use_dora", "method", "DoRA (weight-decomposed LoRA): sftlab's method dora", choice({
        True: _METHOD, False: Unmapped("ignored", "off")}, "{value}: true or false")),
    Rule("quantization_bit", "method", "a 4-bit NF4 base (bitsandbytes, double quantisation) under LoRA: sftlab's "
         "qlora", choice({4: _METHOD}, "{value}-bit: sftlab quantises the base to 4 bits only (method qlora)")),
    Rule("quantization_method", None, "", choice({"bnb": Unmapped("mapped", "bitsandbytes, as sftlab's qlora"),
                                                  "bitsandbytes": Unmapped("mapped", "as sftlab's qlora")},
                                                 "{value}: sftlab quantises with bitsandbytes only")),
    Rule("quantization_type", None, "", choice({"nf4": Unmapped("mapped", "NF4, as sftlab's qlora")},
                                               "{value}: sftlab's qlora quantises to NF4")),
    Rule("double_quantization", None, "", choice({True: Unmapped("mapped", "as sftlab's qlora")},
                                                 "sftlab's qlora always uses double quantisation")),
    Rule("lora_rank", "lora_r", "the LoRA rank ({value})", whole),
    Rule("lora_alpha", "lora_alpha", "the LoRA scale numerator ({value}; the update is scaled by alpha/rank)", number),
    Rule("lora_dropout", "lora_dropout", "dropout on the adapter's input ({value})", number),
    Rule("lora_target", "lora_targets", "the layers that get adapters ({value}); LLaMA-Factory's `all` is every linear "
         "layer but the output head, which is peft's all-linear, sftlab's default", _targets),
    Rule("additional_target", None, "modules trained in full beside the adapters: " + _LORA_ONLY,
         status="unsupported"),
    Rule("use_rslora", None, "", switch(Unmapped("unsupported", "rank-stabilised scaling (alpha/√rank): "
                                                  + _LORA_ONLY), "off, as in sftlab")),
    Rule("pissa_init", None, "", switch(Unmapped("unsupported", "PiSSA initialisation: " + _LORA_ONLY),
                                         "off, as in sftlab")),
    Rule("pissa_iter", None, "PiSSA's initialisation: " + _LORA_ONLY, status="ignored"),
    Rule("pissa_convert", None, "PiSSA's initialisation: " + _LORA_ONLY, status="ignored"),
    Rule("loraplus_lr_ratio", None, "LoRA+ (a higher learning rate for B): " + _LORA_ONLY, status="unsupported"),
    Rule("create_new_adapter", None, "", switch(Unmapped("unsupported", "sftlab trains one new adapter"), "off")),
    Rule("adapter_name_or_path", None, "training on from an existing adapter: sftlab's lora starts a new adapter "
         "(merge it into the model first: sftlab merge)", status="unsupported"),
    Rule("freeze_trainable_layers", "freeze_trainable_layers", "method freeze: the top {value} layers train",
         _freeze_layers),
    Rule("freeze_trainable_modules", None, "", choice({"all": Unmapped("mapped", "all: every module of the trained "
                                                                               "layers, as sftlab's freeze")},
                                                      "{value}: sftlab's freeze trains whole layers")),
    Rule("freeze_extra_modules", "freeze_train_embeddings", "modules trained beside the top layers ({value}): sftlab "
         "can add the input embeddings and the head (both)", lambda value, recipe: True),
    Rule("use_llama_pro", None, "", switch(Unmapped("unsupported", "LLaMA Pro's added blocks: sftlab trains the "
                                                     "model's own layers"), "off")),
    Rule("template", None, "LLaMA-Factory's rendering of the model's chat format ({value}). sftlab renders with the "
         "model's own chat template (its tokenizer_config.json), the one the model is prompted with at inference; "
         "`template` in the config picks a built-in one or a .jinja file instead", status="ignored"),
    Rule("cutoff_len", "max_length", "the longest example in tokens ({value}). LLaMA-Factory cuts a longer example's "
         "prompt and answer in proportion to their lengths, turn by turn (infer_seqlen); sftlab keeps the start and "
         "cuts the end, and drops (and reports) an example that loses its whole answer", whole),
    Rule("max_samples", "limit", "LLaMA-Factory keeps the first {value} rows of each dataset; sftlab's limit counts "
         "the first rows of all files together, so it is {value} × the number of datasets (a file of fewer rows "
         "leaves its share to the next file)", _per_dataset_limit),
    Rule("val_size", "eval_split", "the held-out fraction for the eval loss ({value}), split at random with the seed",
         _val_size),
    Rule("packing", "packing", "examples packed into rows of cutoff_len, each packed row one batch member: fewer "
         "optimizer steps per epoch, in both; sftlab packs whole examples best-fit decreasing, none attending to "
         "another", choice({
        True: True, False: Unmapped("mapped", "off, as sftlab's default")}, "{value}: true or false")),
    Rule("neat_packing", "packing", "packing without attention across examples: what sftlab's packing always is",
         choice({
        True: True, False: Unmapped("ignored", "off")}, "{value}: true or false")),
    Rule("train_on_prompt", "train_on", "the prompts are trained too: sftlab's train_on all trains every token (the "
         "template's markers as well)", choice({
        True: "all", False: Unmapped("mapped", "off: prompts are not trained, as in sftlab")},
        "{value}: true or false")),
    Rule("mask_history", "train_on", "only the last answer of a conversation is trained: sftlab's train_on "
         "last_assistant", choice({
        True: "last_assistant", False: Unmapped("mapped", "off: every answer is trained, as in sftlab")},
        "{value}: true or false")),
    Rule("enable_thinking", "template_kwargs.enable_thinking", "reasoning models ({value}): LLaMA-Factory adds an "
         "empty thought to answers without one; sftlab hands enable_thinking to the model's own template, which "
         "writes the thought block as it does at inference"),
    Rule("default_system", "default_system", "the system prompt of conversations without one ({value})"),
    Rule("split_special_tokens", "escape_special_tokens", "special-token text in the data stays text ({value}); "
         "LLaMA-Factory's default (false) reads it as control tokens, sftlab's (true) keeps it text"),
    Rule("tool_format", None, "how tools are written into the prompt: sftlab writes them as the model's own template "
         "does", status="ignored"),
    Rule("preprocessing_num_workers", "num_proc", "processes that encode the data ({value}); sftlab starts them for "
         "2,000 conversations or more", whole),
    Rule("preprocessing_batch_size", None, "encoding batches: the examples are the same", status="ignored"),
    Rule("overwrite_cache", None, "sftlab's encode cache is keyed by the files' contents, the tokenizer, the "
         "template and every data setting: it is never stale", status="ignored"),
    Rule("tokenized_path", None, "sftlab keeps encoded examples in $SFTLAB_HOME/encoded", status="ignored"),
    Rule("streaming", None, "", switch(Unmapped("unsupported", "sftlab reads the whole data before training"),
                                        "off, as in sftlab")),
    Rule("buffer_size", None, "streaming's shuffle buffer: sftlab reads the whole data", status="ignored"),
    Rule("mix_strategy", None, "", choice({"concat": Unmapped("mapped", "concat: the datasets one after the other, "
                                                                        "as sftlab reads them without weights")},
                                          "{value}: sftlab mixes files by `weight` (shares of the examples) instead "
                                          "of interleaving")),
    Rule("interleave_probs", None, "sampling probabilities of interleaved datasets: sftlab's `weight` of each "
         "dataset (shares of the examples) is the nearest; set it by hand", status="unsupported"),
    Rule("plot_loss", None, "sftlab writes loss.png for every run", status="ignored"),
    Rule("disable_gradient_checkpointing", "gradient_checkpointing", "LLaMA-Factory recomputes activations unless "
         "this is true ({value})", lambda value, recipe: not value),
    Rule("flash_attn", None, "the attention kernel: sftlab picks one per device (the same attention)",
         status="ignored"),
    Rule("enable_liger_kernel", None, "kernels with the same loss", status="ignored"),
    Rule("use_unsloth", None, "", switch(Unmapped("unsupported", "unsloth's patched model: sftlab trains the "
                                                   "transformers model"), "off")),
    Rule("upcast_layernorm", None, "numerics of a quantised base", status="ignored"),
    Rule("upcast_lmhead_output", None, "sftlab computes the loss in fp32", status="ignored"),
    Rule("rope_scaling", None, "a longer context by RoPE scaling: sftlab trains the model's own positions",
         status="unsupported"),
    Rule("resize_vocab", None, "", switch(Unmapped("unsupported", "sftlab adds tokens only for a template's "
                                                    "markers (template_tokens)"), "off")),
    Rule("new_special_tokens", None, "added tokens: sftlab adds a custom template's markers (template_tokens)",
         status="unsupported"),
    Rule("add_special_tokens", None, "added tokens: sftlab adds a custom template's markers (template_tokens)",
         status="unsupported"),
    Rule("add_tokens", None, "added tokens: sftlab adds a custom template's markers (template_tokens)",
         status="unsupported"),
    Rule("pure_bf16", None, "", switch(Unmapped("unsupported", "bf16 weights without an fp32 copy: sftlab keeps "
                                                 "fp32 weights under bf16 autocast (precision: bf16)"), "off")),
    Rule("train_from_scratch", None, "", switch(Unmapped("unsupported", "sftlab fine-tunes a trained model"), "off")),
    Rule("model_revision", None, "", choice({"main": Unmapped("ignored", "main")},
                                            "a hub revision: sftlab loads the folder or cached model given")),
    Rule("cache_dir", None, "sftlab loads from the hub cache or a folder", status="ignored"),
    Rule("use_fast_tokenizer", None, "sftlab loads the model's (fast) tokenizer", status="ignored"),
    Rule("print_param_status", None, "a log line", status="ignored"),
    Rule("compute_accuracy", None, "sftlab's eval reports the loss; `sftlab eval` scores answers",
         status="unsupported"),
    Rule("infer_backend", None, "inference", status="ignored"),
    Rule("predict_with_generate", None, "generation during evaluation: `sftlab eval`", status="unsupported"),
    *[Rule(key, None, _MULTIMODAL, status="unsupported") for key in MULTIMODAL_KEYS],
    *TRAINING_ARGUMENTS,
]

# What LLaMA-Factory does with a key left out, where sftlab's own default differs.
DEFAULTS: list[Default] = [
    Default("finetuning_type", "method", method, "finetuning_type defaults to lora"),
    Default("lora_rank", "lora_r", lambda r: 8, "lora_rank defaults to 8; sftlab's lora_r to 16"),
    Default("lora_alpha", "lora_alpha", lambda r: 2 * (r.get("lora_rank") or 8),
            "lora_alpha defaults to 2 × lora_rank; sftlab's to 32"),
    Default("lora_dropout", "lora_dropout", lambda r: 0.0, "no LoRA dropout; sftlab's default is 0.05"),
    Default("cutoff_len", "max_length", lambda r: 2048, "cutoff_len defaults to 2048; sftlab's max_length to 1024"),
    Default("learning_rate", "learning_rate", lambda r: 5e-5, "transformers' default learning rate; sftlab's depends "
            "on the method"),
    *TRAINING_DEFAULTS,
    Default("disable_gradient_checkpointing", "gradient_checkpointing", lambda r: True,
            "it recomputes activations by default: less memory, the same gradients"),
    Default("packing", "packing", lambda r: r.get("stage") == "pt", "stage pt packs by default"),
]


def check(recipe: Mapping[str, Any], source: str) -> None:
    """A stage sftlab does not train is refused before anything else is read."""
    stage = recipe.get("stage") or "sft"  # (left empty: LLaMA-Factory's default)
    if stage not in ("sft", "pt"):
        what = STAGES.get(stage) if isinstance(stage, str) else None
        hint = (" (sftlab's `task: reward` trains a reward model from rows {prompt, chosen, rejected}: "
                "docs/heads.md)" if stage == "rm" else "")
        raise SftlabError(f"{echo_path(source)}: stage {echo(stage)} is LLaMA-Factory's "
                          f"{what or 'unknown stage'}; sftlab trains stage sft (supervised fine-tuning) and "
                          f"stage pt (continued pre-training) only{hint}")


def notes(recipe: Mapping[str, Any], config: dict[str, Any]) -> list[str]:
    out = []
    media = [k for k in recipe if k in MULTIMODAL_KEYS]
    if media:
        out.append(f"a multimodal recipe ({', '.join(media)}): sftlab trains text-only language models, on the text "
                   "datasets of the config; a vision-language model may not load as one")
    if config.get("packing") and not recipe.get("neat_packing") and recipe.get("stage") != "pt":
        out.append("packing: LLaMA-Factory's packing lets packed examples attend to each other unless neat_packing; "
                   "sftlab's never does (each example sees only itself)")
    if recipe.get("stage") == "pt" and config.get("packing"):
        out.append("packing (stage pt): LLaMA-Factory joins all texts and cuts them into blocks of cutoff_len "
                   "tokens (a text may span two blocks); sftlab packs whole texts, each cut to max_length first")
    return out


# ---- datasets ----------------------------------------------------------------------------------------------------

# LLaMA-Factory's `columns` names → sftlab's field of each format (None: no such field in sftlab).
COLUMNS = {
    "alpaca": {"prompt": "instruction", "query": "input", "response": "output", "system": "system",
               "history": "history", "tools": "tools"},
    "sharegpt": {"messages": "conversations", "system": "system", "tools": "tools"},
    "messages": {"messages": "messages", "tools": "tools"},
    "text": {"prompt": "text"},
}
FORMATS = {"alpaca": "alpaca", "sharegpt": "sharegpt", "openai": "messages"}
# LLaMA-Factory's tag defaults (data/parser.py DatasetAttr), and the sftlab role each value tag names.
TAG_DEFAULTS = {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
                "observation_tag": "observation", "function_tag": "function_call", "system_tag": "system"}
TAG_ROLES = {"user_tag": "user", "assistant_tag": "assistant", "system_tag": "system", "observation_tag": "tool",
             "function_tag": "function_call"}
# sftlab's role values of each format when `roles` is not given (docs/data.md).
SFTLAB_ROLES = {"sharegpt": {"user": "human", "assistant": "gpt", "system": "system", "tool": "observation",
                             "function_call": "function_call"},
                "messages": {"user": "user", "assistant": "assistant", "system": "system", "tool": "tool"}}
_MEDIA = "multimodal data: sftlab trains on text only"
_UNREAD_COLUMNS = {"images": _MEDIA, "videos": _MEDIA, "audios": _MEDIA,
                   "chosen": "preference data (stage rm/dpo)", "rejected": "preference data (stage rm/dpo)",
                   "kto_tag": "KTO's labels (stage kto)"}
_HUB_KEYS = ("hf_hub_url", "ms_hub_url", "om_hub_url", "script_url", "cloud_file_name")


def data(recipe: Mapping[str, Any], source: str, dataset_dir: Optional[str]) -> Data:
    """`dataset` and `eval_dataset` looked up in dataset_info.json of the dataset folder (`dataset_dir`, default
    data/ in the working folder as LLaMA-Factory has it; the import's dataset_dir wins)."""
    out = Data()
    folder = dataset_dir or recipe.get("dataset_dir") or "data"
    if "dataset_dir" in recipe:
        why = (f"the folder of dataset_info.json ({shown(recipe['dataset_dir'])}); the files' paths are written as "
               "that folder + file_name, relative to the working folder as LLaMA-Factory opens them")
        if dataset_dir is not None:
            why += f"; the dataset folder given to the import ({shown(dataset_dir)}) is used instead"
        out.items.append(Item("dataset_dir", "mapped", "datasets", why))
    info: Optional[dict[str, Any]] = None
    for key, target in (("dataset", "datasets"), ("eval_dataset", "eval_datasets")):
        if key not in recipe:
            continue
        chosen = names(recipe[key] or [])
        if chosen and info is None:
            info = _dataset_info(folder, source)
        specs: list[dict[str, Any]] = []
        summary = []
        entries = Data()  # (the entries' own items go after the key that names them)
        for name in chosen:
            if name not in (info or {}):
                close = difflib.get_close_matches(name, list(info or {}), n=3, cutoff=0.5)
                hint = f" (close names: {', '.join(close)})" if close else ""
                raise SftlabError(f"{echo_path(source)}: {key}: {echo(name)} is not in "
                                  f"{echo_path(os.path.join(folder, 'dataset_info.json'))}{hint}")
            spec = _entry(name, (info or {})[name], folder, target, len(specs), recipe.get("stage"), entries)
            if spec is not None:
                specs.append(spec)
                summary.append(f"{name} → {spec['path']} ({spec.get('format') or 'format detected'})")
            else:
                summary.append(f"{name}: not read (see dataset_info[{name}])")
        out.items.append(Item(key, "mapped" if specs else "unsupported", target if specs else None,
                              f"datasets named in dataset_info.json: {'; '.join(summary) or 'none'}"))
        out.items += entries.items
        out.notes += entries.notes
        out.config[target] = specs
    limit = recipe.get("max_samples")
    if isinstance(limit, int) and not isinstance(limit, bool) and out.config.get("datasets"):
        out.config["limit"] = limit * len(out.config["datasets"])  # (max_samples is per dataset)
    return out


def _dataset_info(folder: str, source: str) -> dict[str, Any]:
    path = os.path.join(folder, "dataset_info.json")
    if not os.path.isfile(path):
        raise SftlabError(f"{echo_path(source)}: no dataset_info.json in the dataset folder {echo_path(folder)} "
                          "(LLaMA-Factory's dataset_dir, default data/ in the working folder): give the folder that "
                          "holds it")
    try:
        info = json.loads(read_text(path, "dataset_info.json"))
    except json.JSONDecodeError as e:
        raise SftlabError(f"{echo_path(path)}: not valid JSON (line {e.lineno}: {e.msg})") from None
    if not isinstance(info, dict):
        raise SftlabError(f"{echo_path(path)}: must be a JSON object of dataset names")
    return info


def _entry(name: str, entry: Any, folder: str, target: str, index: int, stage: Any, out: Data
           ) -> Optional[dict[str, Any]]:
    """One dataset_info.json entry → a datasets entry (or None where sftlab cannot read it), every key reported."""
    prefix = f"dataset_info[{name}]"
    at = f"{target}[{index}]"
    if not isinstance(entry, dict):
        out.items.append(Item(prefix, "unsupported", None, "not a JSON object describing a dataset"))
        return None
    flat = dict(flatten(entry))
    fmt = "text" if stage == "pt" else FORMATS.get(entry.get("formatting", "alpaca"))
    columns = entry.get("columns") if isinstance(entry.get("columns"), dict) else {}
    problem = _unreadable(entry, columns, fmt)
    spec: dict[str, Any] = {"path": _location(entry, folder)}
    hub = any(entry.get(k) for k in _HUB_KEYS)
    for key, value in flat.items():
        out.items.append(_entry_item(f"{prefix}.{key}", key, value, entry, fmt, at, problem, hub))
    if problem:
        return None
    if hub:
        out.notes.append(files.hub_note(index, target, spec["path"]))
    spec["format"] = fmt
    mapped = {COLUMNS[fmt][k]: v for k, v in columns.items() if COLUMNS[fmt].get(k) and v != COLUMNS[fmt][k]}
    if fmt == "text" and "prompt" not in columns:
        mapped = {"text": "instruction"}  # (pretraining reads the prompt column, whose default name is instruction)
    if mapped:
        spec["columns"] = mapped
    spec.update(_turn_keys(entry.get("tags") if isinstance(entry.get("tags"), dict) else {}, fmt))
    return spec


def _location(entry: Mapping[str, Any], folder: str) -> str:
    for key in _HUB_KEYS:
        if entry.get(key):
            return str(entry[key])
    return files.joined(folder, str(entry.get("file_name", "")))


def _unreadable(entry: Mapping[str, Any], columns: Mapping[str, Any], fmt: Optional[str]) -> Optional[str]:
    """Why sftlab cannot train on this dataset, or None."""
    if fmt is None:
        return f"formatting {entry.get('formatting')!r}: LLaMA-Factory's formats are alpaca, sharegpt and openai"
    if entry.get("ranking") is True:
        return "a preference dataset (ranking: chosen and rejected answers) for stage rm/dpo"
    unread = [c for c in columns if c in _UNREAD_COLUMNS]
    if unread:
        return f"its {unread[0]} column: {_UNREAD_COLUMNS[unread[0]]}"
    if any(entry.get(k) for k in _HUB_KEYS):
        return None
    if not entry.get("file_name"):
        return "no file_name, hf_hub_url, ms_hub_url or script_url"
    suffix = os.path.splitext(str(entry["file_name"]))[1].lower()
    if suffix and suffix not in files.READABLE:
        return f"a {suffix} file: sftlab reads {', '.join(files.READABLE)} files and folders saved by datasets"
    return None


def _entry_item(key: str, name: str, value: Any, entry: Mapping[str, Any], fmt: Optional[str], at: str,
                problem: Optional[str], hub: bool) -> Item:
    """The report's line for one key of a dataset_info.json entry."""
    if problem:
        return Item(key, "unsupported", None, f"the dataset is not read: {problem}")
    if name in _HUB_KEYS:
        first = next(k for k in _HUB_KEYS if entry.get(k))
        if name != first:
            return Item(key, "ignored", None, f"LLaMA-Factory loads {first} first")
        return Item(key, "unsupported", f"{at}.path", files.HUB.replace("{value}", shown(value)))
    if name == "file_name":
        if hub:
            return Item(key, "ignored", None, "LLaMA-Factory loads the hub dataset instead")
        return Item(key, "mapped", f"{at}.path", "the data file, in the dataset folder")
    if name == "formatting":
        return Item(key, "mapped", f"{at}.format", f"{shown(value)} rows → sftlab's format {fmt}")
    if name == "ranking":
        return Item(key, "ignored", None, "false: instruction data")
    if name.startswith("columns."):
        return _column_item(key, name.split(".", 1)[1], value, fmt, at)
    if name.startswith("tags."):
        return _tag_item(key, name.split(".", 1)[1], value, fmt, at)
    if name == "split":
        if value == "train":
            return Item(key, "ignored", None, "train: a local file's only split")
        return Item(key, "unsupported", None, f"split {shown(value)}: sftlab reads the whole file")
    if name in ("subset", "folder"):
        return Item(key, "unsupported" if hub else "ignored", None,
                    "a part of a hub dataset" + ("" if hub else ": a local file is read whole"))
    if name == "num_samples":
        return Item(key, "unsupported", None, "LLaMA-Factory samples that many rows of the dataset; sftlab reads "
                    "every row (a `weight` with mixture_examples sets shares of the examples)")
    return Item(key, "unsupported", None, "not a dataset_info.json key sftlab's importer knows")


def _column_item(key: str, column: str, value: Any, fmt: Optional[str], at: str) -> Item:
    field = COLUMNS.get(fmt or "", {}).get(column)
    if field is None:
        return Item(key, "unsupported", None, f"LLaMA-Factory's {column} column has no field in sftlab's format {fmt}")
    if value == field:
        return Item(key, "mapped", None, f"the {field} field, under its own name")
    if fmt == "text" and column == "prompt":
        return Item(key, "mapped", f"{at}.columns.text", f"pretraining reads the text of column {shown(value)}")
    return Item(key, "mapped", f"{at}.columns.{field}", f"column {shown(value)} holds the {field} field")


def _tag_item(key: str, tag: str, value: Any, fmt: Optional[str], at: str) -> Item:
    if fmt not in SFTLAB_ROLES:
        return Item(key, "ignored", None, f"tags are for rows of turns; format {fmt} has none")
    if tag in ("role_tag", "content_tag"):
        return Item(key, "mapped", f"{at}.message_keys.{tag.split('_')[0]}", f"each turn's {tag.split('_')[0]} key")
    role = TAG_ROLES.get(tag)
    if role is None:
        return Item(key, "unsupported", None, "not a tag LLaMA-Factory defines")
    if role not in SFTLAB_ROLES[fmt]:
        return Item(key, "unsupported", None, "a function call of openai-shaped data is an assistant turn's "
                                              "tool_calls in sftlab's messages format")
    return Item(key, "mapped", f"{at}.roles.{role}", f"the {role} turns' role value")


def _turn_keys(tags: Mapping[str, Any], fmt: str) -> dict[str, Any]:
    """message_keys and roles of a dataset from its tags: LLaMA-Factory's own default for every tag not given (so the
    roles, which replace sftlab's defaults when given, are complete), written where they differ from sftlab's."""
    if fmt not in SFTLAB_ROLES:
        return {}
    out: dict[str, Any] = {}
    own = {"sharegpt": ("from", "value"), "messages": ("role", "content")}[fmt]
    keys = {"role": tags.get("role_tag") or TAG_DEFAULTS["role_tag"],
            "content": tags.get("content_tag") or TAG_DEFAULTS["content_tag"]}
    if (keys["role"], keys["content"]) != own:
        out["message_keys"] = keys
    roles = {role: tags.get(tag) or TAG_DEFAULTS[tag] for tag, role in TAG_ROLES.items()
             if role in SFTLAB_ROLES[fmt]}
    if roles != SFTLAB_ROLES[fmt]:
        out["roles"] = roles
    return out


def template(recipe: Mapping[str, Any]) -> Optional[str]:
    """LLaMA-Factory's chat template by name (its own rendering of a model's format)."""
    name = recipe.get("template")
    return name if isinstance(name, str) and name else None


TOOL = Tool(NAME, RULES, DEFAULTS, ("dataset", "eval_dataset", "dataset_dir"), data, check, template, notes)
