"""Any number a user gives, checked by name against its one declaration: a config key's bounds (its field in
sftlab/config/train.py) or a command-line option's (sftlab/config/bounds.py OPTIONS)."""

from __future__ import annotations

from typing import Any

from sftlab.config.bounds import OPTIONS, Limit, field_limit
from sftlab.config.train import DatasetSpec, TrainConfig


def bound(name: str) -> Limit:
    """The bounds of a config key or a command-line option, by name (KeyError for a name that has none)."""
    if name in OPTIONS:
        return OPTIONS[name]
    for model in (TrainConfig, DatasetSpec):
        field = model.model_fields.get(name)
        limit = field_limit(field) if field is not None else None
        if limit is not None:
            return limit
    raise KeyError(name)


def check(name: str, value: Any) -> Any:
    """`value` if it lies within the bounds of `name`, else ValueError("must be …")."""
    return bound(name).check(value)


def require(name: str, value: Any, label: str | None = None) -> Any:
    """`value` if it lies within the bounds of `name`, else a SftlabError naming it ("--top-p must be …")."""
    from sftlab.errors import SftlabError, echo

    problem = bound(name).problem(value)
    if problem:
        raise SftlabError(f"{label or name} {problem} (got {echo(value)})")
    return value
