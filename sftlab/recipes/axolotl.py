"""axolotl's recipes (`axolotl train recipe.yml`): its keys → sftlab's, and its `datasets` entries (path, type,
field_messages, message_property_mappings, roles, roles_to_train, train_on_eos …) → sftlab's `datasets`.

What each key means was read in axolotl's own code: utils/schemas/{config,datasets,peft,training}.py (names and
defaults), prompt_strategies/chat_template.py (roles, roles_to_train, train_on_eos, message fields),
prompt_strategies/completion.py and prompters.py (type completion and alpaca), core/builders/base.py (warmup)."""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional

from sftlab.errors import SftlabError, echo, echo_path
from sftlab.recipes import files
from sftlab.recipes.build import Data, Tool
from sftlab.recipes.rules import (Default, Item, Rule, Unmapped, choice, flatten, names, number, of_recipe, shown,
                                  switch, whole)
from sftlab.recipes.training_args import ADAMW, SCHEDULERS, TRAINING_ARGUMENTS

NAME = "axolotl"


def method(recipe: Mapping[str, Any]) -> str:
    """The sftlab method of axolotl's adapter (none: a full fine-tune), load_in_4bit and peft_use_dora."""
    adapter = recipe.get("adapter")
    if not adapter:
        return "full"
    if adapter not in ("lora", "qlora"):
        raise Unmapped("unsupported", f"adapter {adapter!r}: sftlab's adapters are lora, dora and qlora")
    if adapter == "qlora" or recipe.get("load_in_4bit") is True:
        return "qlora"
    return "dora" if recipe.get("peft_use_dora") is True else "lora"


_METHOD = of_recipe(method)


def _targets(value: Any, recipe: Mapping[str, Any]) -> Any:
    if recipe.get("lora_target_linear") is True:
        raise Unmapped("mapped", "lora_target_linear already gives every linear layer an adapter, these among them")
    if isinstance(value, str):
        return value  # (a regular expression over module names: peft reads a string target so, as axolotl passes it)
    return names(value)


def _linear(value: Any, recipe: Mapping[str, Any]) -> str:
    if value is not True:
        raise Unmapped("ignored", "{value}: the adapters go where lora_target_modules says")
    return "all-linear"


def _val_size(value: Any, recipe: Mapping[str, Any]) -> float:
    size = number(value, recipe)
    if size >= 1:
        raise Unmapped("unsupported", "{value}: sftlab's eval_split is a fraction below 1")
    return float(size)


def _per_epoch(key: str) -> Any:
    def convert(value: Any, recipe: Mapping[str, Any]) -> Any:
        if whole(value, recipe) == 1:
            raise Unmapped("mapped", "once per epoch: what sftlab does without " + key)
        raise Unmapped("unsupported", "{value} times per epoch: sftlab counts " + key + " in steps; set it to the "
                       "steps of an epoch ÷ {value} (the run logs its step count)")
    return convert


def _reporters(value: Any, recipe: Mapping[str, Any]) -> Any:
    chosen = [name for key, name in (("wandb_project", "wandb"), ("use_tensorboard", "tensorboard"),
                                     ("use_mlflow", "mlflow")) if recipe.get(key)]
    return chosen[0] if len(chosen) == 1 else chosen


_KNOWN_PLUGINS = ("cut_cross_entropy", "liger")


def _plugins(value: Any, recipe: Mapping[str, Any]) -> Any:
    unknown = [p for p in names(value) if not any(k in p.lower() for k in _KNOWN_PLUGINS)]
    if unknown:
        raise Unmapped("unsupported", f"axolotl plugins ({', '.join(unknown)}): integrations of axolotl's own")
    raise Unmapped("ignored", "kernels with the same loss (sftlab's loss evaluates the head on trained tokens only, "
                              "in chunks, so the full logits never exist either)")


def _template_file(value: Any, recipe: Mapping[str, Any]) -> str:
    if isinstance(value, str) and value.endswith(".jinja") and os.path.isfile(value):
        return value
    raise Unmapped("unsupported", "an inline Jinja template: save it as a .jinja file and set `template` to it")


_ATTENTION = "the attention kernel: sftlab picks one per device (the same attention)"
_WANDB = "wandb's own setting: set the WANDB_* environment variables; report_to: wandb sends the metrics"

RULES: list[Rule] = [
    Rule("base_model", "model", "the model to fine-tune ({value}): a folder, or a hub name sftlab loads offline "
         "from the local cache (download it first)"),
    Rule("base_model_config", None, "the model's config from elsewhere: sftlab reads the model folder's own",
         status="unsupported"),
    Rule("model_type", None, "sftlab loads with AutoModelForCausalLM, which reads the class from the model's config",
         status="ignored"),
    Rule("tokenizer_type", None, "sftlab loads the model's own tokenizer with AutoTokenizer", status="ignored"),
    Rule("tokenizer_config", None, "a tokenizer from elsewhere: sftlab loads the model folder's own",
         status="unsupported"),
    Rule("strict", None, "axolotl's config checking: sftlab refuses every unknown key", status="ignored"),
    Rule("load_in_8bit", None, "", switch(Unmapped("unsupported", "an 8-bit base: sftlab quantises the base to 4-bit "
                                                 "NF4 only (method qlora); the config trains the base unquantised"),
                                        "off")),
    Rule("load_in_4bit", "method", "a 4-bit NF4 base (bitsandbytes) under LoRA: sftlab's method qlora (NF4 with "
         "double quantisation)", choice({True: _METHOD, False: Unmapped("ignored", "off")},
                                               "{value}: true or false")),
    Rule("adapter", "method", "which weights train ({value}): lora → sftlab's lora (dora with peft_use_dora), qlora "
         "→ qlora; no adapter is a full fine-tune", _METHOD),
    Rule("peft_use_dora", "method", "DoRA (weight-decomposed LoRA): sftlab's method dora",
         choice({True: _METHOD, False: Unmapped("ignored", "off")},
                                               "{value}: true or false")),
    Rule("peft_use_rslora", None, "", switch(Unmapped("unsupported", "rank-stabilised LoRA scaling: sftlab's LoRA "
                                                    "scales by alpha/rank"))),
    Rule("lora_model_dir", None, "training on from an existing adapter: sftlab's lora starts a new adapter (merge it "
         "into the model first: sftlab merge)", status="unsupported"),
    Rule("lora_r", "lora_r", "the LoRA rank ({value})", whole),
    Rule("lora_alpha", "lora_alpha", "the LoRA scale numerator ({value}; the update is scaled by alpha/rank)", number),
    Rule("lora_dropout", "lora_dropout", "dropout on the adapter's input ({value})", number),
    Rule("lora_target_modules", "lora_targets", "the layers that get adapters ({value}); a string is a regular "
         "expression over module names, as peft reads it", _targets),
    Rule("lora_target_linear", "lora_targets", "every linear layer but the output head gets an adapter: peft's "
         "all-linear, sftlab's default", _linear),
    Rule("lora_target_parameters", None, "adapters on parameters (MoE experts): sftlab adapts linear layers",
         status="unsupported"),
    Rule("lora_modules_to_save", None, "modules trained in full beside the adapters: sftlab trains the adapters only",
         status="unsupported"),
    Rule("lora_fan_in_fan_out", None, "", switch(Unmapped("unsupported", "Conv1D-style weights (GPT-2): sftlab lets "
                                                        "peft read the layer's own layout"))),
    Rule("unfrozen_parameters", None, "parameters trained by name pattern: sftlab's methods choose the trained "
         "parameters (freeze: the top layers)", status="unsupported"),
    Rule("sequence_len", "max_length", "the longest example in tokens ({value}). axolotl drops a longer example "
         "(excess_length_strategy drop, its default); sftlab truncates it, keeping the start, and drops it only when "
         "its whole answer is cut off", whole),
    Rule("excess_length_strategy", None, "", choice({
        "truncate": Unmapped("mapped", "truncate: keep the start, as sftlab does"),
        "drop": Unmapped("unsupported", "drop: sftlab truncates a long example (keeping the start) rather than "
                                        "dropping it")}, "{value}: sftlab truncates, keeping the start")),
    Rule("sample_packing", "packing", "examples packed into rows of sequence_len, none attending to another, each "
         "packed row one of micro_batch_size: fewer optimizer steps per epoch, in both", choice({
        True: True, False: Unmapped("mapped", "off, as sftlab's default")}, "{value}: true or false")),
    Rule("eval_sample_packing", None, "how the eval batches are laid out: the eval loss is the same",
         status="ignored"),
    Rule("pad_to_sequence_len", None, "padding every batch to sequence_len: a layout; sftlab's batches are "
         "padding-free and the loss is the same", status="ignored"),
    Rule("micro_batch_size", "batch_size", "examples per device per micro-step ({value}; with sample_packing, packed "
         "rows); with gradient_accumulation_steps an optimizer step sees batch_size × grad_accum per device",
         whole),
    Rule("batch_size", None, "axolotl's total batch (it derives gradient_accumulation_steps from it): set grad_accum "
         "to batch_size ÷ micro_batch_size ÷ processes", status="unsupported"),
    Rule("eval_batch_size", None, "sftlab evaluates with batch_size; the eval loss does not depend on it",
         status="ignored"),
    Rule("num_epochs", "epochs", "passes over the data ({value}); a max_steps above 0 overrides it, in both", number),
    Rule("optimizer", None, "", choice({name: Unmapped("mapped", "{value}: AdamW, as sftlab trains with torch's "
                                                       "(fused) AdamW") for name in ADAMW},
                                       "{value}: sftlab trains with torch's AdamW only (no 8-bit, paged or other "
                                       "optimizers): the update is AdamW's, its state takes full-precision memory")),
    Rule("lr_scheduler", "lr_scheduler", "the learning-rate schedule after warmup ({value})",
         choice({s: s for s in SCHEDULERS}, "{value}: not one of transformers' schedulers, which sftlab runs")),
    Rule("cosine_min_lr_ratio", None, "a floor under the cosine schedule: sftlab's cosine goes to 0 (lr_scheduler "
         "cosine_with_min_lr has a floor with transformers' defaults)", status="unsupported"),
    Rule("cosine_constant_lr_ratio", None, "a constant phase in the cosine schedule: not in sftlab's schedulers",
         status="unsupported"),
    Rule("train_on_inputs", "train_on", "the prompts are trained too: sftlab's train_on all trains every token (the "
         "template's markers as well)", choice({
        True: "all", False: Unmapped("mapped", "off: prompts are not trained, as in sftlab")},
        "{value}: true or false")),
    Rule("gradient_checkpointing", "gradient_checkpointing", "activations recomputed in the backward pass "
         "({value}): less memory, the same gradients",
         choice({True: True, False: False, "unsloth": True, "offload": True}, "{value}: true or false")),
    Rule("early_stopping_patience", None, "stopping on the eval loss: sftlab trains the steps it is given",
         status="unsupported"),
    Rule("auto_resume_from_checkpoints", "resume", "continue from output_dir's newest checkpoint: sftlab's resume: "
         "true (exact: data order and optimizer state)", choice({True: True, False: Unmapped("ignored", "off")},
                                                               "{value}: true or false")),
    Rule("loss_watchdog_threshold", None, "stopping when the loss passes a threshold: sftlab stops only on an "
         "exception or a signal", status="unsupported"),
    Rule("loss_watchdog_patience", None, "the loss watchdog's steps: sftlab has no watchdog", status="unsupported"),
    Rule("evals_per_epoch", None, "", _per_epoch("eval_steps")),
    Rule("saves_per_epoch", None, "", _per_epoch("save_steps")),
    Rule("val_set_size", "eval_split", "the held-out fraction for the eval loss ({value})", _val_size),
    Rule("dataset_prepared_path", None, "sftlab keeps encoded examples in $SFTLAB_HOME/encoded, keyed by the files' "
         "contents and every data setting", status="ignored"),
    Rule("dataset_processes", "num_proc", "processes that encode the data ({value})", whole),
    Rule("dataset_num_proc", "num_proc", "processes that encode the data ({value})", whole),
    Rule("shuffle_merged_datasets", None, "sftlab samples the examples in a random order every epoch",
         status="ignored"),
    Rule("wandb_project", "report_to", "metrics to Weights & Biases (project {value}: WANDB_PROJECT)", _reporters),
    Rule("use_tensorboard", "report_to", "metrics to TensorBoard ({value})", _reporters),
    *[Rule(key, None, _WANDB, status="ignored") for key in (
        "wandb_entity", "wandb_watch", "wandb_name", "wandb_log_model", "wandb_run_id", "wandb_mode")],
    Rule("special_tokens.pad_token", None, "the padding token: its positions are never trained, and sftlab pads with "
         "the tokenizer's own, or EOS where it has none (padding-free batches need none)", status="ignored"),
    Rule("special_tokens.*", None, "changing the tokenizer's special tokens: sftlab keeps the model's",
         status="unsupported"),
    Rule("tokens", None, "added tokens: sftlab adds a custom template's markers (template_tokens) only",
         status="unsupported"),
    Rule("eot_tokens", None, "the tokens that end a turn, for train_on_eos: sftlab finds each turn's end from the "
         "template itself and trains it", status="ignored"),
    Rule("chat_template", None, "", lambda value, recipe: _chat_template(value)),
    Rule("chat_template_jinja", "template", "a custom Jinja chat template ({value})", _template_file),
    Rule("default_system_message", "default_system", "the system prompt of conversations without one ({value})"),
    Rule("chat_template_kwargs.*", "template_kwargs", "options every render of the template gets",
         lambda value, recipe: dict(recipe.get("chat_template_kwargs") or {})),
    Rule("plugins", None, "", _plugins),
    Rule("rl", None, "", choice({}, "not SFT")),
    *[Rule(key, None, _ATTENTION, status="ignored") for key in (
        "xformers_attention", "flash_attention", "sdp_attention", "attn_implementation", "flash_attn_cross_entropy",
        "flash_attn_rms_norm", "flash_attn_fuse_qkv", "flash_attn_fuse_mlp", "s2_attention", "eager_attention")],
    *[Rule(key, None, "how the run is executed or logged, not what it learns", status="ignored") for key in (
        "debug", "save_first_step", "logging_dir", "hub_strategy", "fsdp_version", "torch_compile",
        "embeddings_skip_upcast", "bf16_full_eval", "dataloader_prefetch_factor", "dataloader_drop_last")],
    *TRAINING_ARGUMENTS,
]


# axolotl's chat templates that are the model's own: sftlab's default.
_OWN_TEMPLATE = ("tokenizer_default",)


def _chat_template(value: Any) -> Any:
    if isinstance(value, str) and (value in _OWN_TEMPLATE or value.startswith("tokenizer_default")):
        raise Unmapped("mapped", "{value}: the model's own chat template, sftlab's default")
    if value == "jinja":
        raise Unmapped("mapped", "jinja: the template of chat_template_jinja")
    raise Unmapped("ignored", "axolotl's copy of a chat format ({value}). sftlab renders with the model's own chat "
                   "template (its tokenizer_config.json), the one the model is prompted with at inference; `template` "
                   "in the config picks a built-in one or a .jinja file instead")


DEFAULTS: list[Default] = [
    Default("sequence_len", "max_length", lambda r: 512, "sequence_len defaults to 512; sftlab's max_length to 1024"),
    Default("micro_batch_size", "batch_size", lambda r: 1, "micro_batch_size defaults to 1; sftlab's batch_size to 4"),
    Default("num_epochs", "epochs", lambda r: 1.0, "num_epochs defaults to 1; sftlab's epochs to 3"),
    Default("lora_dropout", "lora_dropout", lambda r: 0.0, "no LoRA dropout; sftlab's default is 0.05"),
]


def check(recipe: Mapping[str, Any], source: str) -> None:
    rl = recipe.get("rl")
    if rl:
        raise SftlabError(f"{echo_path(source)}: rl {echo(rl)} is axolotl's preference or reinforcement training; "
                          "sftlab trains supervised fine-tuning only (a recipe without rl)")


def notes(recipe: Mapping[str, Any], config: dict[str, Any]) -> list[str]:
    out = []
    if not recipe.get("warmup_steps") and not recipe.get("warmup_ratio"):
        out.append("warmup: axolotl warms up over 3% of the steps (at most 100) without warmup_steps or warmup_ratio; "
                   "sftlab's warmup_ratio default is 0.03, the same below 3,334 steps")
    return out


# ---- datasets ----------------------------------------------------------------------------------------------------

# axolotl's dataset types sftlab reads, and the format their rows are.
TYPES = {"alpaca": "alpaca", "chat_template": "messages", "completion": "text"}
# axolotl's role names when a dataset gives no `roles` (chat_template.py ChatTemplatePrompter): written into the
# config, since sftlab's messages format reads only its own names by default.
ROLES = {"user": ["human", "user"], "assistant": ["gpt", "assistant"], "system": ["system"], "tool": ["tool"]}
_ALL_ROLES = {"user", "assistant", "system", "tool"}


def data(recipe: Mapping[str, Any], source: str, dataset_dir: Optional[str]) -> Data:
    out = Data()
    masks: list[str] = []
    for key, target in (("datasets", "datasets"), ("test_datasets", "eval_datasets")):
        entries = recipe.get(key)
        if entries is None:
            continue
        if not isinstance(entries, list):
            out.items.append(Item(key, "unsupported", None, "a list of datasets ({path, type, …})"))
            continue
        specs: list[dict[str, Any]] = []
        for i, entry in enumerate(entries):
            specs += _entry(f"{key}[{i}]", entry, target, len(specs), out, masks)
        out.config[target] = specs
    templates = {s.get("format") for s in out.config.get("datasets", [])}
    if "alpaca" in templates and len(templates) == 1:
        out.config["template"] = "alpaca"
        out.notes.append("template: alpaca (sftlab's built-in Stanford Alpaca template), the prompt axolotl's type "
                         "alpaca writes (### Instruction / ### Input / ### Response, with its preamble)")
    elif "alpaca" in templates:
        out.notes.append("axolotl writes type alpaca datasets in the Alpaca prompt and the others in the chat "
                         "template; sftlab renders every file with one template (the model's own here)")
    if masks and len(set(masks)) == 1 and masks[0] != "all_assistant":
        out.config["train_on"] = masks[0]
    return out


def _entry(at: str, entry: Any, target: str, index: int, out: Data, masks: list[str]) -> list[dict[str, Any]]:
    """One axolotl dataset → sftlab datasets entries (none where sftlab cannot read it), every key reported."""
    if not isinstance(entry, dict):
        out.items.append(Item(at, "unsupported", None, "a dataset is a mapping ({path, type, …})"))
        return []
    kind_of_type = entry.get("type")
    fmt = TYPES.get(kind_of_type) if isinstance(kind_of_type, str) else None
    path = str(entry.get("path") or "")
    where = files.kind(path) if path else "hub"
    paths, problem = _paths(entry, path, where)
    if fmt is None:
        problem = (f"type {shown(kind_of_type)}: sftlab reads axolotl's types alpaca, chat_template and completion"
                   if not isinstance(kind_of_type, dict) else "a user-defined prompt format: sftlab renders with "
                   "the chat template")
    spec: dict[str, Any] = {"format": fmt}
    spec.update(_mapping(entry, fmt))
    for key, value in flatten(entry):
        out.items.append(_item(f"{at}.{key}", key, value, entry, fmt, f"{target}[{index}]", problem, where, masks))
    if problem:
        return []
    if where == "hub":
        out.notes.append(files.hub_note(index, target, path))
    return [{"path": p, **{k: v for k, v in spec.items() if v is not None}} for p in paths]


def _paths(entry: Mapping[str, Any], path: str, where: str) -> tuple[list[str], Optional[str]]:
    """The files of a dataset and, where sftlab cannot read them, why."""
    data_files = names(entry["data_files"]) if entry.get("data_files") else []
    if where == "hub":
        return [path], None
    if where == "folder":
        found = [files.joined(path, f) for f in data_files] if data_files else files.folder_files(path)
        return (found, None) if found else ([], "a folder without .json, .jsonl, .csv or .parquet files")
    if where == "other":
        return [], f"a {os.path.splitext(path)[1] or 'extensionless'} file: sftlab reads {', '.join(files.READABLE)}"
    return [path], None


def _mapping(entry: Mapping[str, Any], fmt: Optional[str]) -> dict[str, Any]:
    """columns, message_keys and roles of a dataset, from its field names."""
    out: dict[str, Any] = {}
    if fmt == "text" and entry.get("field") not in (None, "text"):
        out["columns"] = {"text": entry["field"]}
    if fmt != "messages":
        return out
    columns = {name: entry[key] for key, name in (("field_messages", "messages"), ("field_tools", "tools"))
               if entry.get(key) not in (None, name)}
    if columns:
        out["columns"] = columns
    props = dict(entry.get("message_property_mappings") or {})
    for old, key in (("message_field_role", "role"), ("message_field_content", "content")):
        if entry.get(old):
            props.setdefault(key, entry[old])
    keys = {k: props.get(k, k) for k in ("role", "content")}
    if keys != {"role": "role", "content": "content"}:
        out["message_keys"] = keys
    out["roles"] = {role: list(values) if isinstance(values, list) else [values]
                    for role, values in (entry.get("roles") or ROLES).items()}
    return out


def _item(key: str, name: str, value: Any, entry: Mapping[str, Any], fmt: Optional[str], at: str,
          problem: Optional[str], where: str, masks: list[str]) -> Item:
    """The report's line for one key of an axolotl dataset."""
    if problem:
        return Item(key, "unsupported", None, f"the dataset is not read: {problem}")
    head = name.split(".")[0]
    handler = _DATASET_KEYS.get(head)
    if handler is None:
        return Item(key, "unsupported", None, "not an axolotl dataset key sftlab's importer knows")
    return handler(key, name, value, entry, fmt, at, where, masks)


def _path_item(key, name, value, entry, fmt, at, where, masks) -> Item:
    if where == "hub":
        return Item(key, "unsupported", f"{at}.path", files.HUB.replace("{value}", shown(value)))
    return Item(key, "mapped", f"{at}.path", "a local " + ("data file" if where == "file" else "folder, each data "
                                                           "file an entry" if where == "folder" else "saved dataset"))


def _type_item(key, name, value, entry, fmt, at, where, masks) -> Item:
    what = {"alpaca": "instruction/input/output rows in the Alpaca prompt, which sftlab's built-in template alpaca "
                      "writes (template: alpaca where every dataset is alpaca)",
            "messages": "rows of turns rendered with the chat template",
            "text": "raw text, every token trained, EOS appended"}[fmt]
    return Item(key, "mapped", f"{at}.format", f"{shown(value)}: {what} → sftlab's format {fmt}")


def _field_item(key, name, value, entry, fmt, at, where, masks) -> Item:
    field = {"field_messages": "messages", "field_tools": "tools", "field": "text"}.get(name)
    if field is None or (name == "field" and fmt != "text") or (name != "field" and fmt != "messages"):
        return Item(key, "unsupported", None, f"{name} has no field in sftlab's format {fmt}")
    if value == field:
        return Item(key, "mapped", None, f"the {field} field, under its own name")
    return Item(key, "mapped", f"{at}.columns.{field}", f"column {shown(value)} holds the {field} field")


def _message_item(key, name, value, entry, fmt, at, where, masks) -> Item:
    prop = {"message_field_role": "role", "message_field_content": "content"}.get(name) or name.split(".", 1)[-1]
    if fmt != "messages" or prop not in ("role", "content"):
        return Item(key, "unsupported", None, f"the turn's {prop} property: sftlab maps a turn's role and content keys")
    return Item(key, "mapped", f"{at}.message_keys.{prop}", f"each turn's {prop} key ({shown(value)})")


def _roles_item(key, name, value, entry, fmt, at, where, masks) -> Item:
    role = name.split(".", 1)[-1]
    if fmt != "messages" or role not in _ALL_ROLES:
        return Item(key, "unsupported", None, f"role {shown(role)}: sftlab's roles are {', '.join(sorted(_ALL_ROLES))}")
    return Item(key, "mapped", f"{at}.roles.{role}", f"the values that mean {role} (they replace the defaults, in "
                                                     "both)")


def _train_item(key, name, value, entry, fmt, at, where, masks) -> Item:
    roles = {v: role for role, values in (entry.get("roles") or ROLES).items()
             for v in (values if isinstance(values, list) else [values])}
    trained = {roles.get(r, r) for r in names(value)}
    if trained == {"assistant"}:
        masks.append("all_assistant")
        return Item(key, "mapped", None, "assistant turns only: sftlab's train_on all_assistant")
    masks.append("unsupported")
    return Item(key, "unsupported", None, f"roles {shown(value)}: sftlab trains the assistant turns "
                                          "(train_on: all_assistant / last_assistant) or every token (train_on: all)")


def _eos_item(key, name, value, entry, fmt, at, where, masks) -> Item:
    if value == "turn":
        return Item(key, "mapped", None, "turn: the end-of-turn token of each trained turn is trained, as sftlab does")
    return Item(key, "unsupported", None, f"{shown(value)}: sftlab always trains the end-of-turn token of each trained "
                                          "turn (axolotl's turn), so the model learns to stop")


def _template_item(key, name, value, entry, fmt, at, where, masks) -> Item:
    try:
        _chat_template(value)
    except Unmapped as e:
        return Item(key, e.status, None, e.why.replace("{value}", shown(value)))
    raise AssertionError("unreachable")  # (_chat_template always raises)


def _split_item(key, name, value, entry, fmt, at, where, masks) -> Item:
    if where == "hub":
        return Item(key, "unsupported", None, f"split {shown(value)} of a hub dataset: download that split")
    if value == "train":
        return Item(key, "ignored", None, "train: a local file's only split")
    return Item(key, "unsupported", None, f"split {shown(value)}: sftlab reads the whole file")


def _local_item(what: str) -> Any:
    def item(key, name, value, entry, fmt, at, where, masks) -> Item:
        if where == "hub":
            return Item(key, "unsupported", None, f"{what} of a hub dataset: download the data")
        return Item(key, "ignored", None, f"{what}: sftlab tells a local file's format by its name")
    return item


def _data_files_item(key, name, value, entry, fmt, at, where, masks) -> Item:
    if where == "hub":
        return Item(key, "unsupported", None, "files of a hub dataset: download them")
    return Item(key, "mapped", f"{at}.path", "the folder's data files, each an entry")


def _unsupported(why: str) -> Any:
    def item(key, name, value, entry, fmt, at, where, masks) -> Item:
        if value in (None, False):
            return Item(key, "ignored", None, "off")
        return Item(key, "unsupported", None, why)
    return item


def _ignored(why: str) -> Any:
    return lambda key, name, value, entry, fmt, at, where, masks: Item(key, "ignored", None, why)


def _field_training(key, name, value, entry, fmt, at, where, masks) -> Item:
    if value == "train":
        return Item(key, "mapped", None, "a turn's `train` key: sftlab's messages format reads it under that name")
    return Item(key, "unsupported", None, f"sftlab reads a turn's training switch from its `train` key, not "
                                          f"{shown(value)}")


_DATASET_KEYS = {
    "path": _path_item, "type": _type_item, "field_messages": _field_item, "field_tools": _field_item,
    "field": _field_item, "message_property_mappings": _message_item, "message_field_role": _message_item,
    "message_field_content": _message_item, "roles": _roles_item, "roles_to_train": _train_item,
    "train_on_eos": _eos_item, "train_on_eot": _eos_item, "chat_template": _template_item, "split": _split_item,
    "ds_type": _local_item("the file type"), "name": _local_item("a configuration name"),
    "data_files": _data_files_item, "revision": _local_item("a revision"),
    "trust_remote_code": _ignored("sftlab never runs a dataset's own code"),
    "message_field_training": _field_training,
    "field_system": _unsupported("a system column beside the turns: sftlab's messages format reads the system "
                                 "prompt from a system turn"),
    "field_thinking": _unsupported("a reasoning column: sftlab reads a turn's reasoning_content"),
    "drop_system_message": _unsupported("sftlab keeps the system turn"),
    "message_field_training_detail": _unsupported("per-character training spans: sftlab trains whole turns"),
    "shards": _unsupported("a shard of the data: sftlab reads the whole file"),
    "shards_idx": _unsupported("a shard of the data: sftlab reads the whole file"),
    "preprocess_shards": _ignored("how the encoding is split up; the examples are the same"),
    "chat_template_jinja": _unsupported("a per-dataset Jinja template: sftlab renders every file with one template"),
    "split_thinking": _unsupported("sftlab reads reasoning from reasoning_content or <think> blocks as the template "
                                   "does"),
}


def template(recipe: Mapping[str, Any]) -> Optional[str]:
    """axolotl's chat template by name, where it is its own copy of a model's format (not the tokenizer's)."""
    name = recipe.get("chat_template")
    if not isinstance(name, str) or name == "jinja" or name.startswith("tokenizer_default"):
        return None
    return name


TOOL = Tool(NAME, RULES, DEFAULTS, ("datasets", "test_datasets"), data, check, template, notes)
