"""The new-run form, generated from TrainConfig's JSON schema: each key's kind and default, its help
(`description`) and its group (`json_schema_extra["group"]`), as sftlab/config/train.py declares them once; and the
checks a form's config goes through, with the command line's one-sentence messages and the field they are about."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from sftlab.config import GROUPS, TrainConfig, explain, parse_yaml
from sftlab.defaults import DEFAULT_MODEL
from sftlab.errors import SftlabError
from sftlab.data.templates import BUILTIN_TEMPLATES
from sftlab.files import input_problem
from sftlab.ui.security import served_path

# Keys the UI sets itself: a run's folder is its name under --runs-dir, and Resume resumes.
UI_KEYS = ("output_dir", "resume")
DATASET_KEYS = ("datasets", "eval_datasets")
# Where a form's config comes from, in its error sentences (the CLI names the config file there).
ORIGIN = "config"


class ConfigError(SftlabError):
    """An invalid config from a form or the API: the sentence and the field it is about (HTTP 400)."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.message, self.field = message, field

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, **({"field": self.field} if self.field else {})}}


@dataclass
class Field:
    name: str
    kind: str  # select | bool | int | float | text | yaml | datasets | model
    default: Any
    help: str
    choices: list[str] | None = None
    optional: bool = False


@dataclass
class Group:
    title: str
    fields: list[Field]


def _kind(name: str, prop: dict[str, Any]) -> tuple[str, list[str] | None, bool]:
    if name in DATASET_KEYS:
        return "datasets", None, False
    if name == "model":
        return "model", None, True
    types = [p.get("type") for p in prop.get("anyOf", [prop])]
    optional = "null" in types
    types = [t for t in types if t != "null"]
    if "enum" in prop:
        return "select", list(prop["enum"]), False
    if types == ["boolean"]:
        return "bool", None, optional
    if types == ["integer"]:
        return "int", None, optional
    if types == ["number"]:
        return "float", None, optional
    if types == ["string"]:
        return "text", None, optional
    return "yaml", None, optional


@lru_cache(maxsize=1)
def form_groups() -> list[Group]:
    """Every TrainConfig key but the UI's own, in the groups and the order sftlab/config/train.py declares them."""
    schema = TrainConfig.model_json_schema()
    groups: dict[str, Group] = {}
    for name, prop in schema["properties"].items():
        if name in UI_KEYS:
            continue
        kind, choices, optional = _kind(name, prop)
        default = TrainConfig.model_fields[name].get_default(call_default_factory=True)
        if hasattr(default, "model_dump"):
            default = default.model_dump()
        if kind == "yaml" and default is not None:
            default = yaml.safe_dump(default, default_flow_style=True).strip().removesuffix("...").strip()
        title = prop.get("group", "Other")
        groups.setdefault(title, Group(title, [])).fields.append(
            Field(name, kind, default, prop.get("description", ""), choices, optional))
    # (in GROUPS' order: a section's keys, such as DataSettings' seed, may belong to a later group)
    return sorted(groups.values(), key=lambda g: GROUPS.index(g.title) if g.title in GROUPS else len(GROUPS))


# What the New run page opens with; every other key waits, folded, in its group.
ESSENTIALS = ("model", "datasets", "method", "epochs", "learning_rate", "batch_size", "max_length")


def form_layout() -> tuple[list[Field], list[Group]]:
    """(the essential fields, in ESSENTIALS' order; the groups of the other keys, as the schema groups them)."""
    fields = {f.name: f for g in form_groups() for f in g.fields}
    rest = [Group(g.title, [f for f in g.fields if f.name not in ESSENTIALS]) for g in form_groups()]
    return [fields[name] for name in ESSENTIALS], [g for g in rest if g.fields]


def method_defaults() -> dict[str, dict[str, Any]]:
    """Each method's defaults for the keys it decides (TrainConfig.method_defaults), as the form shows them."""
    from sftlab.config.methods import METHODS

    return {name: {k: v for k, v in TrainConfig.method_defaults(name).items() if v is not None}
            | {"adapter": METHODS[name].adapter} for name in METHODS}


def _form_dataset(spec: dict[str, Any], work_dir: Path) -> dict[str, Any]:
    """A config's datasets entry as a row of the form: path, format, weight and its names as YAML text."""
    names = {k: spec[k] for k in NAME_KEYS if spec.get(k)}
    return {"path": _relative(spec.get("path"), work_dir), "format": spec.get("format"), "weight": spec.get("weight"),
            "names": yaml.safe_dump(names, default_flow_style=True, allow_unicode=True).strip() if names else ""}


def form_values(config: dict[str, Any], work_dir: Path) -> dict[str, Any]:
    """A run's config.yaml as the form's values ("Start from this run's config"): every key the form has, lists
    and mappings as the YAML text its boxes take, data files relative to the working folder where they lie in it."""
    kinds = {f.name: f.kind for g in form_groups() for f in g.fields}
    out: dict[str, Any] = {}
    for name, value in config.items():
        kind = kinds.get(name)
        if kind is None or value is None:
            continue
        if kind == "datasets":
            specs = value if isinstance(value, list) else [value]
            out[name] = [_form_dataset(s if isinstance(s, dict) else {"path": s}, work_dir) for s in specs]
        elif kind == "yaml":
            out[name] = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
        else:
            out[name] = value
    return out


def _relative(path: Any, work_dir: Path) -> Any:
    if isinstance(path, str) and Path(path).is_absolute() and Path(path).is_relative_to(work_dir):
        return Path(path).relative_to(work_dir).as_posix()
    return path


def form_schema() -> list[dict[str, Any]]:
    return [{"title": g.title, "fields": [asdict(f) for f in g.fields]} for g in form_groups()]


# ---- checking a config from a form or the API ----------------------------------------------------------------

def config_data(body: Any) -> dict[str, Any]:
    """The config keys of a request body (bodies.ConfigBody): `config`, with `yaml` (the values a form gives as YAML
    text: lists, mappings) parsed as `--set` parses them."""
    data = dict(body.config)
    for key, text in body.yaml.items():
        if not text.strip():
            continue
        try:
            data[key] = parse_yaml(text)
        except (yaml.YAMLError, RecursionError) as e:
            problem = "nested too deeply" if isinstance(e, RecursionError) else \
                str(getattr(e, "problem", None) or e).splitlines()[0]
            raise ConfigError(f"{ORIGIN}: `{key}` is not valid YAML ({problem})", key) from None
    for key in UI_KEYS:
        data.pop(key, None)
    return _dataset_names(data)


# A dataset row of the form gives its file's own names as one YAML text (`names`): these keys of the entry.
NAME_KEYS = ("columns", "message_keys", "roles")


def _dataset_names(data: dict[str, Any]) -> dict[str, Any]:
    """Each dataset entry's `names` text (the form's) as its columns / message_keys / roles keys."""
    for key in DATASET_KEYS:
        specs = data.get(key)
        if not isinstance(specs, list):
            continue
        fixed = []
        for i, spec in enumerate(specs):
            if isinstance(spec, dict) and "names" in spec:
                spec = dict(spec)
                text = spec.pop("names")
                if not isinstance(text, str):
                    raise ConfigError(f"{ORIGIN}: {key}[{i}]: its names must be YAML text", key)
                try:
                    names = parse_yaml(text) if text.strip() else {}
                except (yaml.YAMLError, RecursionError):
                    names = None
                if not isinstance(names, dict) or not set(names) <= set(NAME_KEYS):
                    raise ConfigError(f"{ORIGIN}: {key}[{i}]: its names must be a YAML mapping of columns, "
                                      "message_keys and roles, e.g. {columns: {instruction: question}}", key)
                spec.update(names)
            fixed.append(spec)
        data[key] = fixed
    return data


def validate(data: dict[str, Any], roots: list[Path]) -> TrainConfig:
    """A TrainConfig, or ConfigError with the sentence `sftlab train` prints for the same config and its field.
    Every path it names (data files, a template file, the model, a DeepSpeed config, each stage's own) must lie
    inside `roots` (the UI's folders, sftlab.files.inside); they are written as absolute paths, so the saved
    config.yaml runs again from anywhere."""
    data = _paths_inside(dict(data), roots, "")
    stages = data.get("stages")
    if isinstance(stages, list):
        data["stages"] = [_paths_inside(dict(s), roots, f"stages[{k}].") if isinstance(s, dict) else s
                          for k, s in enumerate(stages, start=1)]
    model = data.get("model")
    if isinstance(model, str) and model.strip() and model.strip().lower() != DEFAULT_MODEL:
        data["model"] = str(_inside(roots, model, "model", "model"))
        problem = input_problem(data["model"], "any")
        if problem:
            raise ConfigError(f"{ORIGIN}: model {model[:200]} {problem}", "model")
    elif isinstance(model, str):
        data["model"] = None
    distributed = data.get("distributed")
    if isinstance(distributed, dict) and isinstance(distributed.get("deepspeed"), str):
        data["distributed"] = {**distributed, "deepspeed": str(_inside(roots, distributed["deepspeed"],
                                                                       "DeepSpeed config", "distributed"))}
    try:
        config = TrainConfig(**data)
    except ValidationError as e:
        loc = e.errors()[0]["loc"]
        raise ConfigError(explain(e, ORIGIN), str(loc[0]) if loc else None) from None
    if config.stages:  # a staged config is checked whole, as `sftlab train` checks it before stage 1
        from sftlab.training.stages import check_stages

        try:
            check_stages(config)
        except SftlabError as e:
            raise ConfigError(str(e), "stages") from None
    return config


def _paths_inside(data: dict[str, Any], roots: list[Path], where: str) -> dict[str, Any]:
    """The data files and the template file of a config (or of one stage), each inside `roots`."""
    field = "stages" if where else None
    for key in DATASET_KEYS:
        specs = data.get(key)
        if isinstance(specs, (str, dict)):
            specs = [specs]
        if not isinstance(specs, list):
            continue
        fixed = []
        for spec in specs:
            spec = {"path": spec} if isinstance(spec, str) else spec
            if isinstance(spec, dict) and isinstance(spec.get("path"), str):
                path = _inside(roots, spec["path"], f"{where}{key} file", field or key)
                spec = {**spec, "path": str(path)}
                problem = input_problem(path, "any")
                if problem:
                    raise ConfigError(f"{ORIGIN}: {where}{key} file {spec['path']} {problem}", field or key)
            fixed.append(spec)
        data[key] = fixed
    template = data.get("template")
    if isinstance(template, str) and template and template not in BUILTIN_TEMPLATES:
        data["template"] = str(_inside(roots, template, f"{where}template", field or "template"))
        problem = input_problem(data["template"])
        if problem:
            raise ConfigError(f"{ORIGIN}: {where}template {template[:200]} {problem}", field or "template")
    return data


def _inside(roots: list[Path], path: str, what: str, field: str) -> Path:
    try:
        return served_path(roots, path, f"{ORIGIN}: {what}")
    except SftlabError as e:
        raise ConfigError(str(e), field) from None
