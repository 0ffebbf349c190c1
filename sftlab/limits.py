"""The bounds of every number a user gives, declared once by name: the config keys of `sftlab train` and the
command-line options share an entry where they mean the same (`max_length`, `batch_size`, `limit`,
`max_new_tokens`, `temperature` …). TrainConfig checks its fields here, the CLI's numeric options check here
(cli.bounded), and serve and the generation helper check generation options here, so a value is refused
everywhere or nowhere. NaN and infinity are never a setting."""

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


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


POSITIVE = Limit(gt=0)
COUNT = Limit(ge=1)
NON_NEGATIVE = Limit(ge=0)
FRACTION = Limit(ge=0, lt=1)

LIMITS: dict[str, Limit] = {
    # data
    "max_length": COUNT, "limit": COUNT, "num_proc": COUNT, "mixture_examples": Limit(ge=1, le=100_000_000), "weight": NON_NEGATIVE,
    # methods
    "num_virtual_tokens": COUNT, "adaption_layers": COUNT, "lora_r": COUNT, "lora_alpha": POSITIVE,
    "lora_dropout": FRACTION, "freeze_trainable_layers": COUNT, "hybrid_full_fraction": Limit(gt=0, lt=1),
    "neftune_alpha": NON_NEGATIVE,
    # optimisation
    "learning_rate": POSITIVE, "hybrid_lora_learning_rate": POSITIVE, "warmup_ratio": FRACTION,
    "weight_decay": NON_NEGATIVE, "max_grad_norm": NON_NEGATIVE, "epochs": POSITIVE,
    "max_steps": Limit(ge=1, also=(-1,), note="or -1 to train by epochs"),
    "batch_size": COUNT, "grad_accum": COUNT, "micro_batch_tokens": COUNT,
    # evaluation and bookkeeping
    "eval_split": FRACTION, "eval_steps": COUNT, "logging_steps": COUNT, "save_steps": COUNT,
    "save_total_limit": COUNT,
    # generation (chat, eval, serve)
    "max_new_tokens": COUNT, "temperature": Limit(ge=0, le=2), "top_p": Limit(gt=0, le=1),
    # eval's judge
    "judge_concurrency": COUNT, "judge_retries": NON_NEGATIVE, "judge_timeout": POSITIVE,
    # data check / clean
    "threshold": Limit(gt=0, le=1), "n_clusters": COUNT, "cluster_sample": NON_NEGATIVE,
    # processes and servers
    "nproc": COUNT, "port": Limit(ge=1, le=65535),
}


def check(name: str, value: Any) -> Any:
    """`value` if it lies within the bounds of `name`, else ValueError("must be …") (pydantic and the CLI turn
    it into their sentence)."""
    problem = LIMITS[name].problem(value)
    if problem:
        raise ValueError(problem)
    return value


def require(name: str, value: Any, label: str | None = None) -> Any:
    """`value` if it lies within the bounds of `name`, else a SftlabError naming it ("--top-p must be …")."""
    from sftlab.errors import SftlabError

    problem = LIMITS[name].problem(value)
    if problem:
        raise SftlabError(f"{label or name} {problem} (got {value})")
    return value
