"""The one validated training configuration: a YAML file and `--set key=value` overrides (values
parsed as YAML), checked once, with messages a person can act on."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

# (Also importable from here; they live in sftlab.defaults, which the command line reads without pydantic.)
from sftlab.defaults import DATA_CHECK_DESCRIPTIONS, DATA_CHECKS, DEFAULT_MODEL, MAX_LENGTH  # noqa: F401
from sftlab.errors import SftlabError
from sftlab.files import child, input_problem, read_text
from sftlab.limits import LIMITS, check
from sftlab.method_table import ADAPTER_LEARNING_RATE, DEFAULT_METHOD, FULL_LEARNING_RATE, METHOD_NAMES, METHODS, Method


class DatasetSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str
    format: Optional[Literal["alpaca", "sharegpt", "messages", "prompt-completion", "text"]] = None
    weight: Optional[float] = None

    @field_validator("weight")
    @classmethod
    def _within_limits(cls, value: Any, info: Any) -> Any:
        return check(info.field_name, value)


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


class TrainConfig(BaseModel):
    """Every key of a training run. Defaults suit a small model on a laptop CPU."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # What to train
    model: Optional[str] = None  # model directory, .gguf file, or "smollm2-135m-instruct" (default)
    datasets: list[DatasetSpec] = Field(default_factory=list)
    template: Optional[str] = None  # built-in name or .jinja file; default: the tokenizer's own
    # Markers a custom .jinja template writes (e.g. ["<|user|>", "<|end|>"]); those the tokenizer does not
    # have as one token are added as new special tokens and trained. Built-in templates know their own.
    template_tokens: Optional[list[str]] = None
    # The system prompt of every conversation that has no system message, in place of the template's own default
    # (SmolLM2's template gives such conversations "You are a helpful AI assistant named SmolLM, trained by Hugging
    # Face"); "" removes that default. It is written into the saved model's chat template: chat, serve and eval of
    # the trained model use it too (docs/data.md, "The template's default system prompt").
    default_system: Optional[str] = None
    train_on: Literal["all_assistant", "last_assistant", "all"] = "all_assistant"
    max_length: int = MAX_LENGTH
    # Special-token text inside the data (`<|im_end|>` in a message) stays text; false: it becomes control
    # tokens, for data that carries them on purpose (docs/data.md "Special-token text in your data").
    escape_special_tokens: bool = True
    # Batch layout (TRL's names). padding_free: the members of a batch laid end to end in one row, no
    # padding, no attention across examples; batch_size still counts examples. packing: the whole dataset
    # packed into rows of max_length first, each packed row one batch member (fewer optimizer steps).
    padding_free: bool = True
    packing: bool = False
    on_error: Literal["raise", "skip"] = "raise"
    # Mixing datasets by `weight` (shares of the examples): how many examples in all (default: the rows read),
    # and whether each example is drawn with replacement (default: a file's rows all used before repeats).
    mixture_examples: Optional[int] = None
    mixture_replacement: bool = False
    # Encoding: worker processes for inputs of 2,000 conversations or more (None: one per core, at most 8);
    # the encoded examples kept in $SFTLAB_HOME/encoded, so a re-run or a resumed run does not encode again.
    num_proc: Optional[int] = None
    encode_cache: bool = True
    limit: Optional[int] = None  # only the first N conversations (quick trials)
    # Data checks whose rows are removed before training (`sftlab data check` names); listed in data_report.json.
    clean: Optional[list[str]] = None

    # How
    method: Literal[METHOD_NAMES] = DEFAULT_METHOD  # (sftlab/method_table.py: what each method is)
    # prompt_tuning / prefix_tuning / p_tuning (peft): trained virtual tokens in front of every example;
    # adaption_prompt (LLaMA-Adapter): that many trained prompt tokens attended to, through a zero-initialised
    # gate, in each of the top `adaption_layers` layers.
    num_virtual_tokens: int = 20
    adaption_layers: int = 8
    prompt_init_text: Optional[str] = None  # prompt_tuning: start the virtual tokens from this text's embeddings
    lora_r: int = 16
    lora_alpha: float = 32
    lora_dropout: float = 0.05
    lora_targets: Union[str, list[str]] = "all-linear"
    freeze_trainable_layers: int = 2
    freeze_train_embeddings: bool = False  # with method=freeze: also train the input embeddings and the head
    hybrid_full_fraction: float = 0.2
    neftune_alpha: Optional[float] = None

    # Optimisation. learning_rate default: 2e-4 for lora/dora, 2e-5 for full/freeze/hybrid (resolved,
    # and written to config.yaml); hybrid's adapters train at hybrid_lora_learning_rate (default 10×).
    learning_rate: Optional[float] = None
    hybrid_lora_learning_rate: Optional[float] = None
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    epochs: float = 3
    max_steps: int = -1
    batch_size: int = 4
    grad_accum: int = 1
    gradient_checkpointing: bool = False  # under fsdp2: FSDP's own activation checkpointing
    # Forward/backward passes of at most this many tokens (rows of a batch in turn, gradients summed):
    # the same loss and update as the whole batch at once, with a fraction of the activation memory.
    micro_batch_tokens: Optional[int] = 4096

    # Evaluation
    eval_split: float = 0.0
    eval_datasets: list[DatasetSpec] = Field(default_factory=list)
    eval_steps: Optional[int] = None

    # Bookkeeping
    logging_steps: int = 10
    save_steps: Optional[int] = None  # default: once per epoch
    save_total_limit: Optional[int] = 2
    # What stays of checkpoint-N/ once a run has finished (they are for resuming; a full fine-tune's hold the model
    # and its optimizer state, about 3× the model's size each): all (as save_total_limit left them), last, none.
    keep_checkpoints: Literal["all", "last", "none"] = "all"
    resume: Union[bool, str] = False
    seed: int = 42
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    output_dir: str = "runs/sft"
    # A staged run: each entry a partial config (datasets, method, epochs, learning_rate, train_on, …, and an
    # optional name) over the keys above; stage k starts from stage k-1's model and writes output_dir/<name>.
    stages: Optional[list[StageSpec]] = None
    # A lora/dora stage followed by another lora/dora stage: false trains the same adapter on in the next stage
    # instead of merging it into the model first.
    merge_lora_stages: bool = True
    report_to: Union[str, list[str]] = "none"
    distributed: DistributedSpec = Field(default_factory=DistributedSpec)

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

    @field_validator(*[name for name in LIMITS if name != "weight"], check_fields=False)
    @classmethod
    def _within_limits(cls, value: Any, info: Any) -> Any:
        return check(info.field_name, value)

    @field_validator("report_to")
    @classmethod
    def _reporter_installed(cls, value: Union[str, list[str]]) -> Union[str, list[str]]:
        if "tensorboard" in ([value] if isinstance(value, str) else value) and not (
                installed("tensorboard") or installed("tensorboardX")):
            raise ValueError("needs the tensorboard package: pip install 'sftlab[tensorboard]'")
        return value

    @field_validator("clean")
    @classmethod
    def _known_checks(cls, value: Optional[list[str]]) -> Optional[list[str]]:
        if value is not None:
            for name in value:
                if name not in DATA_CHECKS:
                    raise ValueError(f"unknown check '{name}'; choose from {', '.join(DATA_CHECKS)}")
        return value

    @field_validator("lr_scheduler")
    @classmethod
    def _known_scheduler(cls, v: str) -> str:
        from transformers.trainer_utils import SchedulerType

        names = [s.value for s in SchedulerType]
        if v not in names:
            raise ValueError(f"unknown scheduler {v!r}; choose one of {', '.join(names)}")
        return v

    @model_validator(mode="after")
    def _needs_data(self) -> "TrainConfig":
        if self.stages is not None:
            self._check_stages()
        elif not self.datasets:
            raise ValueError("no training data: set `datasets` (a list of {path, format?, weight?})")
        if self.eval_split and self.eval_datasets:
            raise ValueError("set `eval_split` or `eval_datasets`, not both")
        for other in METHODS.values():
            for key in other.own_keys:
                if other.name != self.method and getattr(self, key) is not None:
                    raise ValueError(f"`{key}` is for method: {other.name} only")
        if self.method_spec.one_example_per_row and (self.padding_free or self.packing):
            raise ValueError(f"method {self.method} puts its virtual tokens in front of each row, so a row must hold "
                             "one example: set padding_free: false and packing: false")
        return self

    def _check_stages(self) -> None:
        if not self.stages:
            raise ValueError("`stages` is empty: give at least one stage, or leave the key out")
        names = []
        for k, stage in enumerate(self.stages, start=1):
            bad = [key for key in stage.keys if key not in type(self).model_fields
                   or key in ("stages", "output_dir", "resume", "model")]
            if bad:
                raise ValueError(f"stages[{k}]: `{bad[0]}` cannot be set per stage (a stage takes the config's keys "
                                 "except model, output_dir, resume and stages)")
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
    def method_spec(self) -> Method:
        """The record of the run's method (sftlab/method_table.py)."""
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


# A config is a few hundred values at most; YAML aliases can make a few lines stand for billions (an "alias bomb").
YAML_MAX_VALUES = 100_000


class _StrictLoader(yaml.SafeLoader):
    """YAML as a config means it: every key a string and given once (YAML itself would keep the last of two
    silently), and at most YAML_MAX_VALUES values once aliases are expanded."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` merges; its keys may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} is not a string (config keys are names)", key_node.start_mark)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key '{key}' is given more than once", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """How many values `node` stands for with its aliases expanded (each node counted once per use)."""
    if id(node) not in sizes:
        sizes[id(node)] = 1  # (a node that contains itself is counted once, not forever)
        children: list[yaml.Node] = []
        if isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        sizes[id(node)] = 1 + sum(_expanded_size(c, sizes) for c in children)
    return sizes[id(node)]


def parse_yaml(text: str) -> Any:
    """YAML text as sftlab reads every config (files and --set values): see _StrictLoader."""
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, {}) > YAML_MAX_VALUES:
            raise yaml.YAMLError(f"its aliases expand to more than {YAML_MAX_VALUES:,} values")
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _parse_set(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise SftlabError(f"--set {item!r}: expected key=value")
    key, raw = item.split("=", 1)
    try:
        value = parse_yaml(raw) if raw.strip() else None
    except (yaml.YAMLError, RecursionError) as e:
        raise SftlabError(f"--set {key}: the value is not valid YAML ({_yaml_problem(e)})") from None
    return key.strip(), value


def _yaml_problem(e: BaseException) -> str:
    if isinstance(e, RecursionError):
        return "nested too deeply"
    return str(getattr(e, "problem", None) or e).splitlines()[0]


def _set_nested(data: dict[str, Any], dotted: str, value: Any) -> None:
    """`--set a.b=1` sets data["a"]["b"] (only for mappings; lists are given whole)."""
    *parents, last = dotted.split(".")
    node = data
    for p in parents:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise SftlabError(f"--set {dotted}: {p} is not a mapping")
    node[last] = value


def _location(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "config"


def explain(e: ValidationError, origin: str, fields: dict[str, Any] | None = None) -> str:
    """A validation error as one sentence: where it came from (a file, --set, a stage), the key, what is wrong."""
    fields = TrainConfig.model_fields if fields is None else fields
    err = e.errors()[0]
    loc = tuple(err["loc"])
    where = _location(loc)
    if err["type"] == "extra_forbidden":
        known = fields if len(loc) == 1 else (DistributedSpec if loc[0] == "distributed" else DatasetSpec).model_fields
        hint = difflib.get_close_matches(str(loc[-1]), list(known), n=1, cutoff=0.6)
        did = f"; did you mean `{hint[0]}`?" if hint else ""
        return f"{origin}: unknown key `{where}`{did}"
    if err["type"] == "missing":
        return f"{origin}: `{where}` is required"
    msg = err["msg"].removeprefix("Value error, ")
    if not loc:
        return f"{origin}: {msg}"
    got = repr(err.get("input"))
    return f"{origin}: `{where}` {msg[0].lower()}{msg[1:]} (got {got if len(got) <= 80 else got[:79] + '…'})"


def load_config(path: str | Path | None = None, sets: list[str] | None = None, *, check_files: bool = True) -> TrainConfig:
    """The configuration of a run: YAML file (optional) + `--set` overrides, validated once."""
    data: dict[str, Any] = {}
    origin = str(path) if path else "--set"
    if path is not None:
        try:
            loaded = parse_yaml(read_text(path, "config file"))
        except (yaml.YAMLError, RecursionError) as e:
            mark = getattr(e, "problem_mark", None)
            line = f" on line {mark.line + 1}" if mark is not None else ""
            raise SftlabError(f"{path}: invalid YAML{line} ({_yaml_problem(e)})") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise SftlabError(f"{path}: the config must be a mapping of keys to values")
        data = loaded or {}
    from_set: set[str] = set()  # top-level keys given (or overridden) by --set: their mistakes are --set's
    for item in sets or []:
        key, value = _parse_set(item)
        _set_nested(data, key, value)
        from_set.add(key.split(".")[0])
    try:
        config = TrainConfig(**data)
    except ValidationError as e:
        loc = e.errors()[0]["loc"]
        blamed = "--set" if loc and loc[0] in from_set else origin
        raise SftlabError(explain(e, blamed)) from None
    if check_files:
        problem = file_problem(config)
        if problem:
            raise SftlabError(f"{origin}: {problem}")
    return config


def file_problem(config: TrainConfig) -> str | None:
    """Why a file the config names cannot be read (its datasets, eval_datasets and a .jinja template), or None:
    said before any work, for a config and for each stage of a staged one (training.stages.check_stages)."""
    for i, d in enumerate(config.datasets + config.eval_datasets):
        problem = input_problem(d.path, "any")
        if problem:
            key = "datasets" if i < len(config.datasets) else "eval_datasets"
            hint = ""
            if problem == "not found" and Path(d.path).parts[:2] == ("runs", "demo"):
                hint = " (`make demo` writes it: run that first)"
            return f"{key} file {d.path} {problem}{hint}"
    if config.template and config.template.endswith(".jinja"):
        problem = input_problem(config.template)
        if problem:
            return f"template file {config.template} {problem}"
    return None
