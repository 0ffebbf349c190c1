"""The bounds of the numbers a user gives. A config key's bounds are part of its one declaration in
sftlab/config/train.py (`Annotated[int, COUNT]`); the command-line options that are no config key (generation,
the judge, the data check, processes and servers) are declared in OPTIONS below. sftlab/config/checks.py finds either by name: the
CLI's numeric options (cli.bounded), serve and the generation helper check there, so a value is refused
everywhere or nowhere. NaN and infinity are never a setting.

No pydantic at import: the command line reads this before its arguments are parsed; a Limit gives pydantic its
validator when a model is built (`__get_pydantic_core_schema__`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Limit:
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    also: tuple[Any, ...] = ()  # values allowed outside the range, each with a meaning given in `note`
    note: str = ""

    def describe(self) -> str:
        low = f"at least {_num(self.ge)}" if self.ge is not None else (f"greater than {_num(self.gt)}"
                                                                      if self.gt is not None else "")
        high = f"at most {_num(self.le)}" if self.le is not None else (f"less than {_num(self.lt)}"
                                                                      if self.lt is not None else "")
        if self.ge is not None and self.le is not None:
            text = f"between {_num(self.ge)} and {_num(self.le)}"
        else:
            text = " and ".join(p for p in (low, high) if p) or "a number"
        return f"{text}{', ' + self.note if self.note else ''}"

    def problem(self, value: Any) -> str | None:
        """Why `value` is out of bounds ("must be at least 1"), or None."""
        if value is None or isinstance(value, bool) or value in self.also:
            return None
        if isinstance(value, float) and not math.isfinite(value):
            return f"must be a finite number ({self.describe()})"
        if ((self.ge is not None and value < self.ge) or (self.gt is not None and value <= self.gt)
                or (self.le is not None and value > self.le) or (self.lt is not None and value >= self.lt)):
            return f"must be {self.describe()}"
        return None

    def check(self, value: Any) -> Any:
        """`value`, or ValueError("must be …") (pydantic turns it into its sentence)."""
        problem = self.problem(value)
        if problem:
            raise ValueError(problem)
        return value

    # ---- as `Annotated` metadata of a pydantic field --------------------------------------------------------

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        from pydantic_core import core_schema

        # (pydantic would take true as 1: a number is never a boolean)
        return core_schema.no_info_before_validator_function(
            _not_a_boolean, core_schema.no_info_after_validator_function(self.check, handler(source)))

    def __get_pydantic_json_schema__(self, schema: Any, handler: Any) -> Any:
        out = handler(schema)
        if self.also:  # (a value allowed outside the range has no JSON-schema bound: the note says it)
            return out
        for key, value in (("minimum", self.ge), ("exclusiveMinimum", self.gt), ("maximum", self.le),
                           ("exclusiveMaximum", self.lt)):
            if value is not None:
                out[key] = value
        return out


def _not_a_boolean(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("must be a number, not true or false")
    return value


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


POSITIVE = Limit(gt=0)
COUNT = Limit(ge=1)
NON_NEGATIVE = Limit(ge=0)
FRACTION = Limit(ge=0, lt=1)
SEED = Limit(ge=0, le=2**32 - 1)  # what numpy's seed takes (transformers' set_seed seeds it)

# The numeric command-line options that are no config key (the config's keys carry their bounds in their own
# declaration; an option named like a key, such as --max-length or --batch-size, shares the key's).
OPTIONS: dict[str, Limit] = {
    # generation (chat, eval, serve)
    "max_new_tokens": COUNT, "temperature": Limit(ge=0, le=2), "top_p": Limit(gt=0, le=1),
    "repetition_penalty": Limit(gt=0, le=2, note="1 for none"),
    # eval's judge
    "judge_concurrency": COUNT, "judge_retries": NON_NEGATIVE, "judge_timeout": POSITIVE,
    # data check / clean
    "threshold": Limit(gt=0, le=1), "n_clusters": COUNT, "cluster_sample": NON_NEGATIVE,
    # import: conversations rendered both ways
    "compare": Limit(ge=0, le=100),
    # processes and servers
    "nproc": COUNT, "port": Limit(ge=1, le=65535),
}


def field_limit(field: Any) -> Limit | None:
    """The Limit among a pydantic field's metadata, if it has one."""
    return next((m for m in getattr(field, "metadata", ()) if isinstance(m, Limit)), None)
