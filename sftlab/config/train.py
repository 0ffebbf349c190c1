"""The training configuration, each key declared once: its type, default, bounds (`Annotated[…, Limit]`), help
(`description`) and the group the UI's form shows it in (`json_schema_extra["group"]`). TrainConfig validates a
run's keys; the UI builds its form from `TrainConfig.model_json_schema()`; the command line's numeric options
share a key's bounds (sftlab/config/bounds.py). Reading YAML and --set: sftlab/config/load.py."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from sftlab.config.bounds import FRACTION, NON_NEGATIVE, POSITIVE, Limit
from sftlab.config.data import MAPPED_FIELDS, MAPPED_ROLES, MESSAGE_KEYS, DataSettings
from sftlab.config.fields import BOOKKEEPING, EVALUATION, HOW, OPTIMISATION, WHAT, Count, OptionalCount, setting
from sftlab.config.methods import (ADAPTER_LEARNING_RATE, DEFAULT_METHOD, FULL_LEARNING_RATE, METHOD_NAMES, METHODS,
                                   OWNERS, Method)
from sftlab.defaults import DEFAULT_MODEL
from sftlab.errors import SftlabError, echo, echo_text
from sftlab.files import child, path_name_problem

class DatasetSpec(BaseModel):
    """One data file of `datasets` / `eval_datasets`: its path, format, mixing weight, and (for a file that names
    its fields its own way) which of its columns, turn keys and role values are which (docs/data.md, "Your own
    column names")."""

    model_config = ConfigDict(extra="forbid")

    path: str
    format: Optional[Literal["alpaca", "sharegpt", "messages", "prompt-completion", "text"]] = None
    weight: Annotated[Optional[float], NON_NEGATIVE] = None
    columns: Optional[dict[str, str]] = None
    message_keys: Optional[dict[str, str]] = None
    roles: Optional[dict[str, Union[str, list[str]]]] = None

    @field_validator("columns")
    @classmethod
    def _columns(cls, value: Optional[dict[str, str]]) -> Optional[dict[str, str]]:
        return _names(value, MAPPED_FIELDS, "field", "the file's column")

    @field_validator("message_keys")
    @classmethod
    def _message_keys(cls, value: Optional[dict[str, str]]) -> Optional[dict[str, str]]:
        return _names(value, MESSAGE_KEYS, "key", "the key each turn has")

    @field_validator("roles", mode="before")
    @classmethod
    def _role_values(cls, value: Any) -> Any:
        for role, values in (value.items() if isinstance(value, dict) else ()):
            if not isinstance(values, str) and not (isinstance(values, list) and all(isinstance(v, str) for v in values)):
                raise ValueError(f"role {echo(role)} must map to the file's value: a string or a list of strings")
        return value

    @field_validator("roles")
    @classmethod
    def _roles(cls, value: Optional[dict[str, Union[str, list[str]]]]) -> Optional[dict[str, Union[str, list[str]]]]:
        _names(value, MAPPED_ROLES, "role", "the file's values")
        for role, values in (value or {}).items():
            listed = [values] if isinstance(values, str) else values
            if not listed or not all(v for v in listed):
                raise ValueError(f"role '{role}' needs the value(s) the file writes for it (a string or a list)")
            for other, others in value.items():
                if other < role and set(listed) & set([others] if isinstance(others, str) else others):
                    raise ValueError(f"a value is listed for both '{other}' and '{role}'")
        return value


def _names(value: Optional[dict[str, Any]], known: tuple[str, ...], what: str, to: str) -> Optional[dict[str, Any]]:
    """A mapping whose keys are sftlab's names (`known`) and whose values are the file's; an unknown name refused."""
    for name, given in (value or {}).items():
        if name not in known:
            raise ValueError(f"'{name}' is no {what} sftlab reads; each key is one of {', '.join(known)} and its "
                             f"value {to}")
        if isinstance(given, str) and not given:
            raise ValueError(f"'{name}' maps to an empty name")
    return value


class DistributedSpec(BaseModel):
    """How the processes of `torchrun` / `accelerate launch` share the work (docs/distributed.md)."""

    model_config = ConfigDict(extra="forbid")

    # ddp: a whole model per process; fsdp2: parameters, gradients and optimizer state sharded over the processes
    # (torch's fully_shard, one unit per transformer layer); deepspeed: ZeRO through its JSON config (CUDA only).
    strategy: Literal["ddp", "fsdp2", "deepspeed"] = "ddp"
    cpu_offload: bool = False  # fsdp2: the shards live in CPU memory between uses
    deepspeed: Optional[str] = None  # deepspeed: its config file (examples/deepspeed/zero2.json, zero3.json)

    @model_validator(mode="after")
    def _consistent(self) -> "DistributedSpec":
        if self.strategy == "deepspeed" and not self.deepspeed:
            raise ValueError("strategy deepspeed needs `deepspeed`: its JSON config file (examples/deepspeed/zero2.json)")
        if self.deepspeed and self.strategy != "deepspeed":
            raise ValueError("`deepspeed` (a config file) is for strategy: deepspeed only")
        if self.cpu_offload and self.strategy != "fsdp2":
            raise ValueError("`cpu_offload` is for strategy: fsdp2 only")
        return self


class StageSpec(BaseModel):
    """One stage of a staged run: its name (the folder it trains into, inside output_dir) and the config keys it
    sets over the config's own (any key but model, output_dir, resume and stages; checked by TrainConfig)."""

    model_config = ConfigDict(extra="allow", coerce_numbers_to_str=True)

    name: Optional[str] = None

    @property
    def keys(self) -> dict[str, Any]:
        """The config keys the stage sets."""
        return dict(self.model_extra or {})

    def folder(self, k: int) -> str:
        """The stage's folder name: its name, or stage-K (K counted from 1)."""
        return str(self.name or f"stage-{k}")


class Inputs(BaseModel):
    """What a run reads: the model and the data files."""

    model: Optional[str] = setting(None, group=WHAT, help=f"Model directory, .gguf file, or \"{DEFAULT_MODEL}\" (default).")
    datasets: list[DatasetSpec] = setting(
        group=WHAT, default_factory=list,
        help="The training data: files and, to mix them, weights (shares of the examples).")


# (pydantic takes the fields of the bases last to first: Inputs' keys, then DataSettings', then the class's own —
# the order of the UI's form.)
class TrainConfig(DataSettings, Inputs):
    """Every key of a training run, flat as YAML and --set give them; its data keys are DataSettings (`.data`).
    Defaults suit a small model on a laptop CPU."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # ---- what to train (and DataSettings' keys) ----
    template_tokens: Optional[list[str]] = setting(
        None, group=WHAT,
        help="Markers a custom .jinja template writes (e.g. [\"<|user|>\", \"<|end|>\"]); those the tokenizer does not "
             "have as one token are added as new special tokens and trained. Built-in templates know their own.")
    padding_free: bool = setting(
        True, group=WHAT,
        help="Batch layout (TRL's name): the members of a batch laid end to end in one row, no padding, no attention "
             "across examples; batch_size still counts examples.")
    encode_cache: bool = setting(
        True, group=WHAT,
        help="The encoded examples kept in $SFTLAB_HOME/encoded, so a re-run or a resumed run does not encode again.")

    # ---- how ----
    task: Literal["sft", "classification", "reward"] = setting(
        "sft", group=HOW,
        help="What the model learns: sft (to answer), or a task head on it (docs/heads.md): classification (a "
             "softmax over the data's labels; rows {text or a conversation, label}) or reward (one score per answer; "
             "rows {prompt or messages, chosen, rejected}, the pairwise loss).")
    class_weights: Optional[Union[Literal["balanced"], dict[str, float]]] = setting(
        None, group=HOW,
        help="task classification: per-label loss weights, \"balanced\" (rows / (labels × rows of the label)) or "
             "{label: weight}.")
    method: Literal[METHOD_NAMES] = setting(  # type: ignore[valid-type]
        DEFAULT_METHOD, group=HOW,
        help="full, freeze, lora, dora, qlora (LoRA on a 4-bit base), hybrid (full then LoRA), or a prompt-based method.")
    num_virtual_tokens: Count = setting(
        20, group=HOW,
        help="prompt_tuning / prefix_tuning / p_tuning (peft): trained virtual tokens in front of every example; "
             "adaption_prompt (LLaMA-Adapter): that many trained prompt tokens attended to, through a "
             "zero-initialised gate, in each of the top `adaption_layers` layers.")
    adaption_layers: Count = setting(8, group=HOW, help="adaption_prompt: the top layers that get the prompt tokens.")
    prompt_init_text: Optional[str] = setting(
        None, group=HOW, help="prompt_tuning: start the virtual tokens from this text's embeddings.")
    lora_r: Count = setting(16, group=HOW, help="LoRA/DoRA rank.")
    lora_alpha: Annotated[float, POSITIVE] = setting(32, group=HOW, help="LoRA/DoRA scaling (alpha / r).")
    lora_dropout: Annotated[float, FRACTION] = setting(0.05, group=HOW, help="Dropout on the adapter's input.")
    lora_targets: Union[str, list[str]] = setting(
        "all-linear", group=HOW, help="Which linear layers get adapters: all-linear, or a list of module names.")
    freeze_trainable_layers: Count = setting(2, group=HOW, help="method freeze: the top N decoder layers are trained.")
    freeze_train_embeddings: bool = setting(
        False, group=HOW, help="method freeze: also train the input embeddings and the head.")
    hybrid_full_fraction: Annotated[float, Limit(gt=0, lt=1)] = setting(
        0.2, group=HOW, help="method hybrid: the fraction of steps trained in full before LoRA.")
    neftune_alpha: Annotated[Optional[float], NON_NEGATIVE] = setting(
        None, group=HOW, help="NEFTune noise on the embeddings (5 is the paper's usual value); empty: off.")

    # ---- optimisation ----
    learning_rate: Annotated[Optional[float], POSITIVE] = setting(
        None, group=OPTIMISATION, transformers="learning_rate",
        help="Default: 2e-4 for lora/dora, 2e-5 for full/freeze/hybrid (resolved, and written to config.yaml).")
    hybrid_lora_learning_rate: Annotated[Optional[float], POSITIVE] = setting(
        None, group=OPTIMISATION, help="method hybrid: the learning rate of its LoRA phase (default: 10× learning_rate).")
    lr_scheduler: str = setting("cosine", group=OPTIMISATION, transformers="lr_scheduler_type",
                                help="transformers' scheduler name.")
    warmup_ratio: Annotated[float, FRACTION] = setting(
        # (transformers ≥ 5 reads a warmup_steps below 1 as a fraction of the steps; pinned in pyproject.toml)
        0.03, group=OPTIMISATION, transformers="warmup_steps",
        help="The fraction of the steps the learning rate warms up over.")
    weight_decay: Annotated[float, NON_NEGATIVE] = setting(0.0, group=OPTIMISATION, transformers="weight_decay",
                                                           help="AdamW's weight decay.")
    max_grad_norm: Annotated[float, NON_NEGATIVE] = setting(
        1.0, group=OPTIMISATION, transformers="max_grad_norm", help="Gradients clipped to this norm (0: not clipped).")
    epochs: Annotated[float, POSITIVE] = setting(
        3, group=OPTIMISATION, transformers="num_train_epochs", help="Passes over the data (max_steps > 0 overrides it).")
    max_steps: Annotated[int, Limit(ge=1, also=(-1,), note="or -1 to train by epochs")] = setting(
        -1, group=OPTIMISATION, transformers="max_steps", help="Optimizer steps in all; -1: as many as the epochs take.")
    batch_size: Count = setting(4, group=OPTIMISATION, transformers=("per_device_train_batch_size",
                                                                     "per_device_eval_batch_size"),
                                help="Examples per device per micro-step.")
    grad_accum: Count = setting(1, group=OPTIMISATION, transformers="gradient_accumulation_steps",
                                help="Micro-steps per optimizer step.")
    gradient_checkpointing: bool = setting(
        False, group=OPTIMISATION,
        help="Activations recomputed in the backward pass (under fsdp2: FSDP's own activation checkpointing).")
    micro_batch_tokens: OptionalCount = setting(
        4096, group=OPTIMISATION,
        help="Forward/backward passes of at most this many tokens (rows of a batch in turn, gradients summed): the "
             "same loss and update as the whole batch at once, with a fraction of the activation memory.")

    # ---- evaluation ----
    eval_split: Annotated[float, FRACTION] = setting(
        0.0, group=EVALUATION, help="Fraction of the examples held out for the eval loss.")
    eval_datasets: list[DatasetSpec] = setting(
        group=EVALUATION, default_factory=list, help="Held-out files for the eval loss (instead of eval_split).")
    eval_steps: OptionalCount = setting(None, group=EVALUATION, transformers="eval_steps",
                                        help="Evaluate every N steps (default: each epoch).")

    # ---- bookkeeping ----
    logging_steps: Count = setting(
        10, group=BOOKKEEPING, transformers="logging_steps",
        help="Log every N steps (step 1 and the last are always logged).")
    save_steps: OptionalCount = setting(None, group=BOOKKEEPING, help="Save a checkpoint every N steps (default: once per epoch).")
    save_total_limit: OptionalCount = setting(2, group=BOOKKEEPING, transformers="save_total_limit",
                                              help="Checkpoints kept while training.")
    keep_checkpoints: Literal["all", "last", "none"] = setting(
        "all", group=BOOKKEEPING,
        help="What stays of checkpoint-N/ once a run has finished (they are for resuming; a full fine-tune's hold the "
             "model and its optimizer state, about 3× the model's size each): all (as save_total_limit left them), "
             "last, none.")
    resume: Union[bool, str] = setting(
        False, group=BOOKKEEPING, help="true: continue from output_dir's last checkpoint; or a checkpoint folder.")
    precision: Literal["auto", "bf16", "fp32"] = setting(
        "auto", group=BOOKKEEPING, help="auto: bf16 where it is supported and measured faster.")
    output_dir: str = setting("runs/sft", group=BOOKKEEPING, transformers="output_dir", help="The run's folder.")
    stages: Optional[list[StageSpec]] = setting(
        None, group=BOOKKEEPING,
        help="A staged run: each entry a partial config (datasets, method, epochs, learning_rate, train_on, …, and an "
             "optional name) over the keys above; stage k starts from stage k-1's model and writes "
             "output_dir/<name>.")
    merge_lora_stages: bool = setting(
        True, group=BOOKKEEPING,
        help="A lora/dora stage followed by another lora/dora stage: false trains the same adapter on in the next "
             "stage instead of merging it into the model first.")
    report_to: Union[str, list[str]] = setting(
        "none", group=BOOKKEEPING, help="Where the metrics also go: none, tensorboard, wandb … (transformers' names).")
    distributed: DistributedSpec = setting(
        group=BOOKKEEPING, default_factory=DistributedSpec,
        help="How the processes of torchrun / accelerate launch share the work: strategy (ddp, fsdp2, deepspeed), "
             "cpu_offload (fsdp2), deepspeed (its JSON config) (docs/distributed.md).")

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        """A dataset list may be one file, and a file its path alone; the learning rates the peers recommend for
        the method, when not given."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for key in ("datasets", "eval_datasets"):
            if isinstance(data.get(key), (str, dict)):
                data[key] = [data[key]]
            if isinstance(data.get(key), list):
                data[key] = [{"path": d} if isinstance(d, str) else d for d in data[key]]
        spec = METHODS.get(data.get("method") or DEFAULT_METHOD)
        if spec is None:  # an unknown name is reported by the field's own validation
            return data
        try:  # (a malformed learning_rate is reported by its own field's validation)
            lr = None if data.get("learning_rate") is None else float(data["learning_rate"])
        except (TypeError, ValueError):
            lr = None
        for key, value in cls.method_defaults(spec.name, lr).items():
            if data.get(key) is None:
                data[key] = value
        return data

    @staticmethod
    def method_defaults(method: str, learning_rate: float | None = None) -> dict[str, Any]:
        """What a method gives the keys it decides when they are not set: its learning rate, hybrid's adapter rate
        (the learning rate × ADAPTER/FULL, 10×) and the batch layout (the prompt methods: one example per row)."""
        spec = METHODS[method]
        lr = spec.learning_rate if learning_rate is None else learning_rate
        return {"learning_rate": spec.learning_rate, "padding_free": not spec.one_example_per_row,
                "hybrid_lora_learning_rate": lr * ADAPTER_LEARNING_RATE / FULL_LEARNING_RATE if spec.lora_phase else None}

    @field_validator("lora_targets")
    @classmethod
    def _lora_targets(cls, value: Union[str, list[str]]) -> Union[str, list[str]]:
        for name in [value] if isinstance(value, str) else value:
            if name in ("all", "all_linear", "linear"):  # (LLaMA-Factory's `lora_target: all`; peft's spelling differs)
                raise ValueError(f"'{name}' is no module name; every linear layer (but the output head) is all-linear")
            if not name:
                raise ValueError("a module name is empty")
        return value

    @field_validator("class_weights", mode="before")
    @classmethod
    def _weights_are_numbers(cls, value: Any) -> Any:
        for label, weight in (value.items() if isinstance(value, dict) else ()):
            if isinstance(weight, bool):  # (pydantic would take true as 1)
                raise ValueError(f"the weight of {echo(label)} must be a number, not true or false")
        return value

    @field_validator("class_weights")
    @classmethod
    def _weights_within_bounds(cls, value: Any) -> Any:
        for label, weight in (value.items() if isinstance(value, dict) else ()):
            problem = NON_NEGATIVE.problem(weight)
            if problem:
                raise ValueError(f"the weight of {echo(label)} {problem}")
        return value

    @field_validator("model", "output_dir")
    @classmethod
    def _names_fit_a_file_system(cls, value: Any) -> Any:
        """A folder or file name no file system takes is said before any work (not File name too long midway)."""
        if isinstance(value, str) and not value.strip():  # ("" would be the working folder)
            raise ValueError("is empty: name a folder")
        problem = path_name_problem(value) if isinstance(value, str) else None
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("report_to")
    @classmethod
    def _reporter_installed(cls, value: Union[str, list[str]]) -> Union[str, list[str]]:
        if "tensorboard" in ([value] if isinstance(value, str) else value) and not (
                installed("tensorboard") or installed("tensorboardX")):
            raise ValueError("needs the tensorboard package: pip install 'sftlab[tensorboard]'")
        return value

    @field_validator("lr_scheduler")
    @classmethod
    def _known_scheduler(cls, v: str) -> str:
        from transformers.trainer_utils import SchedulerType

        names = [s.value for s in SchedulerType]
        if v not in names:
            raise ValueError(f"unknown scheduler {echo(v)}; choose one of {', '.join(names)}")
        return v

    @model_validator(mode="after")
    def _needs_data(self) -> "TrainConfig":
        if self.stages is not None:
            self._check_stages()
        elif not self.datasets:
            raise ValueError("no training data: set `datasets` (a list of {path, format?, weight?})")
        if self.eval_split and self.eval_datasets:
            raise ValueError("set `eval_split` or `eval_datasets`, not both")
        self._check_own_keys()
        if self.task != "sft":
            self._check_task()
        elif self.class_weights is not None:
            raise ValueError("`class_weights` is for task: classification only")
        if self.method_spec.one_example_per_row and (self.padding_free or self.packing):
            raise ValueError(f"method {self.method} puts its virtual tokens in front of each row, so a row must hold "
                             "one example: set padding_free: false and packing: false")
        if self.method_spec.quantized and self.distributed.strategy != "ddp":
            raise ValueError(f"method {self.method} keeps a whole 4-bit base on every process; distributed.strategy "
                             f"{self.distributed.strategy} shards full-precision weights: use strategy ddp")
        return self

    def _check_own_keys(self) -> None:
        """A method's own key (sftlab/config/methods.py OWNERS) given with a method that does not read it is refused
        (at its default it is what every config.yaml writes, and changes nothing). A staged config's keys go to
        every stage: one is refused here when no stage's method reads it, and per stage when that stage's does not."""
        methods = [self.method, *(s.keys.get("method") or self.method for s in self.stages or ())]
        if not all(isinstance(m, str) and m in METHODS for m in methods):
            return  # (a stage's unknown method is its own sentence: training.stages.check_stages)
        for key, owners in OWNERS.items():
            if set(methods).isdisjoint(owners) and getattr(self, key) != type(self).model_fields[key].default:
                names = owners[0] if len(owners) == 1 else f"{', '.join(owners[:-1])} or {owners[-1]}"
                used = ", ".join(dict.fromkeys(methods[1:]))
                chosen = f"the stages' methods ({used}) do not" if self.stages else f"method {self.method} does not"
                raise ValueError(f"`{key}` is for method {names}; {chosen} use it")

    def _check_task(self) -> None:
        """A head run reads whole rows (no packing, no per-token keys); keys that would not act are refused."""
        if not self.method_spec.head:
            heads = ", ".join(m.name for m in METHODS.values() if m.head)
            raise ValueError(f"task {self.task} trains a head with method {heads}; method {self.method} cannot")
        if self.class_weights is not None and self.task != "classification":
            raise ValueError("`class_weights` is for task: classification only")
        unused = {"packing": self.packing, "neftune_alpha": self.neftune_alpha, "stages": self.stages,
                  "clean": self.clean, "mixture_examples": self.mixture_examples,
                  "train_on": self.train_on != "all_assistant", "template_tokens": self.template_tokens,
                  "freeze_train_embeddings": self.freeze_train_embeddings,  # (the head trains; the embeddings do not)
                  **{key: any(getattr(d, key) is not None for d in [*self.datasets, *self.eval_datasets])
                     for key in ("weight", "columns", "message_keys", "roles")}}
        for key, value in unused.items():
            if value:
                raise ValueError(f"`{key}` does not apply to task: {self.task} (a head reads whole rows; docs/heads.md)")
        if isinstance(self.class_weights, dict):
            for label, weight in self.class_weights.items():
                if not 0 <= weight < float("inf"):
                    raise ValueError(f"class_weights[{echo(label)}] must be a non-negative number")

    def _check_stages(self) -> None:
        if not self.stages:
            raise ValueError("`stages` is empty: give at least one stage, or leave the key out")
        names = []
        for k, stage in enumerate(self.stages, start=1):
            bad = [key for key in stage.keys if key not in type(self).model_fields
                   or key in ("stages", "output_dir", "resume", "model")]
            if bad:
                raise ValueError(f"stages[{k}]: `{echo_text(bad[0])}` cannot be set per stage (a stage takes the "
                                 "config's keys except model, output_dir, resume and stages)")
            if not stage.keys.get("datasets") and not self.datasets:
                raise ValueError(f"stages[{k}] has no datasets (and the config gives none to inherit)")
            name = stage.folder(k)
            try:
                child(self.output_dir, name, f"stages[{k}].name")
            except SftlabError as e:
                raise ValueError(str(e)) from None
            names.append(name)
        if len(set(names)) != len(names):
            raise ValueError("stage names must differ (they name the stages' folders)")

    @property
    def data(self) -> DataSettings:
        """The run's data keys as the section build_examples takes."""
        return DataSettings.model_construct(**{name: getattr(self, name) for name in DataSettings.model_fields})

    @property
    def method_spec(self) -> Method:
        """The record of the run's method (sftlab/config/methods.py)."""
        return METHODS[self.method]

    def for_rerun(self) -> "TrainConfig":
        """This config as a run's config.yaml keeps it: runnable again from any folder. The model as resolved (the
        default model by name), files that exist by absolute path (datasets, a .jinja template, a DeepSpeed config,
        output_dir), and resume off: `sftlab train RUN/config.yaml --set resume=true` continues the run,
        `--set output_dir=…` trains it again elsewhere."""

        def absolute(path: Any) -> Any:
            if not isinstance(path, str) or not path or not Path(path).expanduser().exists():
                return path
            return str(Path(path).expanduser().resolve())

        def specs(value: Any) -> Any:  # a dataset list as a stage gives it (a path, a mapping, or a list of them)
            if isinstance(value, (str, dict)):
                value = [value]
            if not isinstance(value, list):
                return value
            return [absolute(d) if isinstance(d, str) else {**d, "path": absolute(d.get("path"))}
                    if isinstance(d, dict) else d for d in value]

        model = self.model or DEFAULT_MODEL
        if model.lower() != DEFAULT_MODEL:
            model = absolute(model)
        stages = None if self.stages is None else [
            StageSpec(name=s.name, **{**s.keys, **{k: specs(s.keys[k]) for k in ("datasets", "eval_datasets")
                                                    if k in s.keys}}) for s in self.stages]
        return self.model_copy(update={
            "model": model, "output_dir": str(Path(self.output_dir).expanduser().resolve()), "resume": False,
            "template": absolute(self.template) if self.template and self.template.endswith(".jinja") else self.template,
            "datasets": [d.model_copy(update={"path": absolute(d.path)}) for d in self.datasets],
            "eval_datasets": [d.model_copy(update={"path": absolute(d.path)}) for d in self.eval_datasets],
            "distributed": self.distributed.model_copy(update={"deepspeed": absolute(self.distributed.deepspeed)}),
            "stages": stages,
        })

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def installed(package: str) -> bool:
    """Whether a package can be imported (looked up, not imported)."""
    import importlib.util

    return importlib.util.find_spec(package) is not None

