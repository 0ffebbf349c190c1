"""A row's fields read by their type. Each function returns the value a converter (formats.py, reasoning.py) uses,
or raises RowError naming the field and the type it found. The converters read every field through these before
they use it, so a value of the wrong type is one sentence, never a TypeError from the line that used it."""

from __future__ import annotations

import json
import math
from typing import Any, Collection

from sftlab.errors import RowError, first_line, json_type, shown

MISSING = "missing field"
NULL = "is null (or an empty cell)"
# The loss multiplies each trained token's cross-entropy by its weight in float32; a larger weight is infinity there.
MAX_WEIGHT = 3.4028234663852886e38
# A field's value nests at most this many lists and objects, checked where a row is read (load.check_row) and where a
# field's JSON text is parsed (json_text): the code after reading (Jinja's tojson, copies, drop_nones) recurses per
# level, and 600 levels ran past Python's recursion limit in train, chat and export. Tool schemas nest a dozen.
MAX_DEPTH = 64
TOO_DEEP = f"nested more than {MAX_DEPTH} levels deep (sftlab reads JSON up to {MAX_DEPTH} levels)"


def depth(value: Any, limit: int = MAX_DEPTH) -> int:
    """How many lists and objects `value` nests (0 for a scalar), counted only up to limit + 1: iterative, so any
    depth is measured without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, level)
            if level > limit:
                break
            stack += [(v, level + 1) for v in (item.values() if isinstance(item, dict) else item)]
    return deepest


def absent(row: dict[str, Any], key: str) -> str:
    """Why a required field has no value: not there at all, or there and null (an empty CSV cell)."""
    return MISSING if key not in row else NULL


def text(row: dict[str, Any], key: str, field: str | None = None, *, required: bool = True) -> str:
    """A text field ("" for an optional one that is absent or null)."""
    value = row.get(key)
    if value is None:
        if required:
            raise RowError(absent(row, key), field=field or key)
        return ""
    if not isinstance(value, str):
        raise RowError(f"content must be a string, got {json_type(value)}", field=field or key)
    return value


def optional_string(row: dict[str, Any], key: str, field: str) -> str | None:
    """A string field that may be absent or null (a name, an id, a reasoning trace)."""
    value = row.get(key)
    if value is not None and not isinstance(value, str):
        raise RowError(f"must be a string, got {json_type(value)}", field=field)
    return value


def choice(row: dict[str, Any], key: str, allowed: Collection[str], field: str) -> str:
    """A name from a fixed set (a role)."""
    value = row.get(key)
    if value is None:
        raise RowError(absent(row, key), field=field)
    if not isinstance(value, str):
        raise RowError(f"must be a string naming one of {', '.join(allowed)}, got {json_type(value)}", field=field)
    if value not in allowed:
        raise RowError(f"unknown role '{shown(value)}'; expected one of {', '.join(allowed)}", field=field)
    return value


def flag(row: dict[str, Any], key: str, field: str) -> bool | None:
    value = row.get(key)
    if value is not None and not isinstance(value, bool):
        raise RowError(f"must be true or false, got {json_type(value)}", field=field)
    return value


def weight(row: dict[str, Any], key: str, field: str) -> float | None:
    """A per-message loss weight: a number from 0 to what float32 holds (NaN, infinity and booleans are not)."""
    value = row.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RowError(f"must be a non-negative number, got {json_type(value)}", field=field)
    if not 0 <= value <= MAX_WEIGHT:  # (NaN fails both)
        raise RowError(f"must be a non-negative finite number (at most {MAX_WEIGHT:.2g}, the largest float32), got "
                       f"{_number(value)}", field=field)
    return float(value)


def _number(value: int | float) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
    shown = repr(value)
    return shown if len(shown) <= 24 else f"a number of {len(shown)} digits"


def json_text(value: str, field: str, what: str = "is text but not valid JSON", hint: str = "") -> Any:
    """A field given as JSON text (CSV cells and some datasets store nested fields so), parsed."""
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as e:
        problem = f"{e.msg} at character {e.pos}"
    except ValueError as e:  # an integer of more digits than Python converts
        problem = digits_problem(e)
    except RecursionError:
        problem = "nested too deeply to read"
    else:
        if depth(parsed) > MAX_DEPTH:
            raise RowError(f"is JSON {TOO_DEEP}", field=field)
        return parsed
    raise RowError(f"{what} ({problem}){hint}", field=field)


def digits_problem(e: ValueError) -> str:
    """Python's refusal of an integer of more than 4,300 digits (json.loads raises it as a ValueError that is not a
    JSONDecodeError), without its advice to change the interpreter's limit."""
    return first_line(e).split(";")[0]


def maybe_json(value: Any, field: str) -> Any:
    """A nested field as given, or parsed when it is JSON text."""
    return json_text(value, field) if isinstance(value, str) else value


def drop_nones(value: Any) -> Any:
    """Arrow unifies the schemas of all rows and fills absent keys with None; undo that for nested objects."""
    if isinstance(value, dict):
        return {k: drop_nones(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_nones(v) for v in value]
    return value


def only_for(row: dict[str, Any], keys: Collection[str], role: str, who: str, field: str) -> None:
    """Refuse keys that only a message of another role carries (they would be dropped without a word)."""
    for key in keys:
        if row.get(key) not in (None, "", []):
            raise RowError(f"only {who} carries '{key}'; this message is a '{role}' message", field=f"{field}.{key}")
