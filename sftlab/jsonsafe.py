"""JSON that every reader can parse: NaN and ±Infinity (a diverged loss, a metric divided by zero) leave sftlab as
`null`, since JSON has no such numbers and Python's `json.dumps` would otherwise write the bare words `NaN` and
`Infinity`, which browsers' JSON.parse and most other parsers refuse. One helper for every place metrics leave
sftlab: the UI's API and its event stream, `sftlab runs --json`."""

from __future__ import annotations

import json
import math
from typing import Any


def finite(value: Any) -> Any:
    """`value` with every non-finite float inside it (dicts, lists, tuples) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def dumps(value: Any, **options: Any) -> str:
    """json.dumps of `value` with non-finite floats as null; never writes NaN or Infinity."""
    return json.dumps(finite(value), allow_nan=False, **options)
