"""A run's configuration from a YAML file and `--set key=value` overrides (values parsed as YAML), checked once by
TrainConfig, its mistakes told in one sentence a person can act on."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from sftlab.config import names
from sftlab.config.train import DatasetSpec, DistributedSpec, TrainConfig
from sftlab.errors import SftlabError, echo, echo_path, echo_text
from sftlab.files import input_problem, output_folder_problem, path_name_problem, read_text


# A config is a few hundred values at most; YAML aliases can make a few lines stand for billions (an "alias bomb").
YAML_MAX_VALUES = 100_000
# A config is a few levels deep (stages → datasets → a file's keys; a template option's value): deeper is no config,
# refused before anything walks it (pydantic, repr, json.dumps each recurse).
YAML_MAX_DEPTH = 64


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
                    None, None, f"the key {echo(key)} is not a string (config keys are names)", key_node.start_mark)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {echo(key)} is given more than once", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


def _depth(node: yaml.Node, depths: dict[int, int]) -> int:
    """How deep `node` nests (a scalar: 1), each node measured once (an alias to a node that contains itself: once)."""
    if id(node) not in depths:
        depths[id(node)] = 1
        depths[id(node)] = 1 + max((_depth(c, depths) for c in _children(node)), default=0)
    return depths[id(node)]


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """How many values `node` stands for with its aliases expanded (each node counted once per use)."""
    if id(node) not in sizes:
        sizes[id(node)] = 1  # (a node that contains itself is counted once, not forever)
        sizes[id(node)] = 1 + sum(_expanded_size(c, sizes) for c in _children(node))
    return sizes[id(node)]


def parse_yaml(text: str) -> Any:
    """YAML text as sftlab reads every config (files and --set values): see _StrictLoader."""
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        sizes: dict[int, int] = {}
        if _expanded_size(node, sizes) > YAML_MAX_VALUES:
            aliased = _expanded_size(node, sizes) > len(sizes)  # (more values than nodes: aliases repeat some)
            raise yaml.YAMLError(f"its aliases expand to more than {YAML_MAX_VALUES:,} values" if aliased
                                 else f"it holds more than {YAML_MAX_VALUES:,} values")
        if _depth(node, {}) > YAML_MAX_DEPTH:
            raise yaml.YAMLError(f"nested more than {YAML_MAX_DEPTH} deep")
        try:
            return loader.construct_document(node)
        except ValueError as e:  # (int() of a number of more digits than Python converts)
            if "digits" not in str(e):
                raise
            raise yaml.YAMLError(f"a number of more than {sys.get_int_max_str_digits()} digits") from None
    finally:
        loader.dispose()


def _parse_set(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise SftlabError(f"--set {echo(item)}: expected key=value")
    key, raw = item.split("=", 1)
    if not all(part.strip() for part in key.split(".")):
        raise SftlabError(f"--set {echo(item)}: expected key=value (a key name is empty)")
    try:
        value = parse_yaml(raw) if raw.strip() else None
    except (yaml.YAMLError, RecursionError) as e:
        raise SftlabError(f"--set {echo_text(key)}: the value is not valid YAML ({_yaml_problem(e)})") from None
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
            raise SftlabError(f"--set {echo_text(dotted)}: {echo_text(p)} is not a mapping")
    node[last] = value


def _location(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "config"


def explain(e: ValidationError, origin: str, fields: dict[str, Any] | None = None) -> str:
    """A validation error as one sentence: where it came from (a file, --set, a stage), the key, what is wrong."""
    fields = TrainConfig.model_fields if fields is None else fields
    unknown = [tuple(err["loc"]) for err in e.errors() if err["type"] == "extra_forbidden"]
    if unknown:
        return _unknown_keys(unknown, origin, fields)
    err = e.errors()[0]
    loc = tuple(err["loc"])
    where = echo_text(_location(loc))
    if err["type"] == "missing":
        return f"{origin}: `{where}` is required"
    msg = err["msg"].removeprefix("Value error, ")
    if not loc:
        return f"{origin}: {msg}"
    return f"{origin}: `{where}` {msg[0].lower()}{msg[1:]} (got {echo(err.get('input'))})"


def _unknown_keys(locs: list[tuple[Any, ...]], origin: str, fields: dict[str, Any]) -> str:
    """Every unknown key of a config in one sentence, each with what it most likely meant (config/names.py)."""
    parts = []
    for loc in locs:
        known = fields if len(loc) == 1 else (DistributedSpec if loc[0] == "distributed" else DatasetSpec).model_fields
        parts.append(f"`{echo_text(_location(loc))}`{names.hint(str(loc[-1]), known)}")
    sentence = f"{origin}: unknown key{'s' if len(parts) > 1 else ''} " + ", ".join(parts)
    if names.looks_foreign(str(loc[-1]) for loc in locs if len(loc) == 1):
        sentence += ("; this looks like another tool's recipe: `sftlab import RECIPE --out config.yaml` translates "
                     "it and reports every key (docs/coming-from.md)")
    return sentence


def load_config(path: str | Path | None = None, sets: list[str] | None = None, *, check_files: bool = True) -> TrainConfig:
    """The configuration of a run: YAML file (optional) + `--set` overrides, validated once."""
    if path is None:
        return config_from({}, "--set", sets, check_files=check_files)
    # (its name checked before the disk is asked, which would say "File name too long")
    return config_of_file(read_yaml(path), path, sets, check_files=check_files)


def config_of_file(loaded: Any, path: str | Path, sets: list[str] | None = None, *,
                   check_files: bool = True) -> TrainConfig:
    """load_config for a file's YAML already read (read_yaml): it must be a mapping of keys (or empty)."""
    if loaded is not None and not isinstance(loaded, dict):
        raise SftlabError(f"{echo_path(path)}: the config must be a mapping of keys to values")
    return config_from(loaded or {}, echo_path(path), sets, check_files=check_files)


def read_yaml(path: str | Path) -> Any:
    """A config file's YAML as sftlab reads every config (load_config), or one sentence naming the file."""
    origin = echo_path(path)
    problem = path_name_problem(path)
    if problem:
        raise SftlabError(f"{origin}: config file {problem}")
    try:
        return parse_yaml(read_text(path, "config file"))
    except (yaml.YAMLError, RecursionError) as e:
        mark = getattr(e, "problem_mark", None)
        line = f" on line {mark.line + 1}" if mark is not None else ""
        raise SftlabError(f"{origin}: invalid YAML{line} ({_yaml_problem(e)})") from None


def config_from(data: dict[str, Any], origin: str, sets: list[str] | None = None, *,
                check_files: bool = True) -> TrainConfig:
    """A run's configuration from its keys (a file's, or a recipe `sftlab import` translated) and `--set`
    overrides, validated once; `origin` names where the keys came from in every sentence."""
    data = dict(data)
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
    """Why a file the config names cannot be read (its datasets, eval_datasets and a .jinja template), or its
    output_dir cannot be a folder (a file, a FIFO, a path through a file), or None:
    said before any work, for a config and for each stage of a staged one (training.stages.check_stages)."""
    for i, d in enumerate(config.datasets + config.eval_datasets):
        problem = input_problem(d.path, "any")
        if problem:
            key = "datasets" if i < len(config.datasets) else "eval_datasets"
            hint = ""
            if problem == "not found" and Path(d.path).parts[:2] == ("runs", "demo"):
                hint = " (`make demo` writes it: run that first)"
            return f"{key} file {echo_path(d.path)} {problem}{hint}"
    problem = output_folder_problem(Path(config.output_dir).expanduser())
    if problem:  # (before a run lock or a checkpoint is written into it)
        return f"output_dir {echo_path(config.output_dir)}: {problem}"
    if config.template and config.template.endswith(".jinja"):
        problem = input_problem(config.template)
        if problem:
            return f"template file {echo_path(config.template)} {problem}"
    return None
