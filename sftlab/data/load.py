"""Files → rows → Conversations, with every row either converted or rejected with its reason."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from sftlab import jsonsafe
from sftlab.data.conversation import Conversation
from sftlab.data.fields import MAX_DEPTH, MISSING, NULL, TOO_DEEP, depth, digits_problem
from sftlab.data.formats import FORMATS, convert_row, detect_format, json_type
from sftlab.data.mapping import RowMapping
from sftlab.errors import RowError, SftlabError, first_line, shown
from sftlab.files import atomic_writer, require_input

SUFFIXES = (".json", ".jsonl", ".csv", ".parquet")


@dataclass
class Reject:
    source: str
    row: int
    reason: str
    data: Any = None
    check: str = "invalid_row"  # or "dropped": read, but lost its trained tokens in encoding

    def to_dict(self) -> dict[str, Any]:
        """A line of a rejects file, in the one layout `train`, `inspect` and `data clean` write."""
        return {"file": self.source, "row": self.row, "reasons": [{"check": self.check, "reason": self.reason}],
                "record": self.data}


@dataclass
class Loaded:
    conversations: list[Conversation] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    rows: int = 0
    format: str | None = None


class InvalidLine:
    """The slot of a JSONL line that could not be read (its Reject says why): never a row, never lost."""


INVALID = InvalidLine()


class BlankLine:
    """The slot of a blank JSONL line: keeps row numbers equal to line numbers; never a row."""


BLANK = BlankLine()


class _Object(dict):
    """A JSON object as parsed, with the keys that appeared more than once (json keeps the last silently)."""

    duplicates: tuple[str, ...] = ()


def _object(pairs: list[tuple[str, Any]]) -> _Object:
    obj = _Object(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        obj.duplicates = tuple(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
    return obj


def _parse(text: str) -> Any:
    return json.loads(text, object_pairs_hook=_object)


def read_rows(path: str | Path) -> tuple[list[Any], list[Reject]]:
    """The rows of a file, in order, exactly as written (JSON is read as is: no fields added, nothing
    dropped, a `null` row stays a row and is rejected later as not an object). Lines of a JSONL file
    that cannot be read (not UTF-8, not JSON, nested too deeply) come back as rejects, their slot in
    the list holding INVALID, so the caller decides whether that is fatal."""
    path = require_input(path, "data file", "any")
    if path.is_dir():
        return _read_saved_dataset(path), []
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise SftlabError(f"{path}: unsupported file type '{suffix}'; use one of {', '.join(SUFFIXES)} or a saved datasets folder")
    if suffix == ".json":
        return _read_json(path), []
    if suffix == ".jsonl":
        return _read_jsonl(path)
    if suffix == ".csv":
        # Only an empty cell is absent: "None", "NA", "NaN", "null" … are text (pandas would read them as missing).
        return _read_with_datasets(path, "csv", keep_default_na=False, na_values=[""]), []
    return _read_with_datasets(path, "parquet"), []


def _read_with_datasets(path: Path, builder: str, **kwargs: Any) -> list[dict[str, Any]]:
    import datasets

    datasets.disable_progress_bars()
    # A builder logs its own ERROR line before raising; the sentence below says it once, with the file.
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)
    try:
        # The builder keeps an Arrow copy of the file in its cache: sftlab's home holds it, never the user's
        # ~/.cache/huggingface (passed as the builder's option; no environment variable is set).
        ds = datasets.load_dataset(builder, data_files=str(path), split="train", cache_dir=str(datasets_cache()),
                                   **kwargs)
    except Exception as e:  # noqa: BLE001 - whatever the builder says, as one sentence
        raise SftlabError(f"{path}: cannot be read as {builder} ({first_line(e)})") from None
    return [_clean_nan(r) for r in ds.to_list()]


def datasets_cache() -> Path:
    """Where the datasets library keeps what it makes of a CSV or parquet file: $SFTLAB_HOME/datasets."""
    from sftlab.home import sftlab_home

    return sftlab_home() / "datasets"


def _clean_nan(row: dict[str, Any]) -> dict[str, Any]:
    # Empty CSV cells arrive as NaN; they mean "absent".
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}


def _read_saved_dataset(path: Path) -> list[dict[str, Any]]:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as e:  # noqa: BLE001 - a folder that is not a saved dataset
        raise SftlabError(f"{path}: not a folder saved by datasets' save_to_disk ({e})") from None
    if isinstance(ds, datasets.DatasetDict):
        if "train" not in ds:
            raise SftlabError(f"{path}: saved DatasetDict has no 'train' split (splits: {', '.join(ds)})")
        ds = ds["train"]
    return ds.to_list()


def _read_json(path: Path) -> list[Any]:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise SftlabError(f"{path}: not valid UTF-8 (byte {e.start}, line {line})") from None
    try:
        rows = _parse(text)
    except json.JSONDecodeError as e:
        hint = ("; this looks like JSON Lines (one object per line): name the file .jsonl"
                if e.msg == "Extra data" and _looks_like_jsonl(text) else "")
        raise SftlabError(f"{path}: invalid JSON on line {e.lineno}, column {e.colno}: {e.msg}{hint}") from None
    except ValueError as e:  # an integer of more digits than Python converts
        raise SftlabError(f"{path}: cannot be read as JSON ({digits_problem(e)})") from None
    except RecursionError:
        raise SftlabError(f"{path}: the JSON is nested too deeply to read") from None
    if isinstance(rows, dict):
        rows = [rows]
    if not isinstance(rows, list):
        raise SftlabError(f"{path}: a .json file must hold a list of objects, found {json_type(rows)}")
    return rows


def _looks_like_jsonl(text: str, lines: int = 5) -> bool:
    """Whether the first non-blank lines (two at least) are each a JSON object of their own."""
    # (split as _read_jsonl splits, not str.splitlines: a raw U+2028 inside a JSON string is no line break)
    first = [line for line in re.split(r"\r\n|\r|\n", text) if line.strip()][:lines]
    try:
        return len(first) > 1 and all(isinstance(json.loads(line), dict) for line in first)
    except (ValueError, RecursionError):
        return False


def _read_jsonl(path: Path) -> tuple[list[Any], list[Reject]]:
    """A JSONL file's rows, numbered by line: row N is line N (a blank line is no row, and its slot holds BLANK).
    Lines end at \n, \r\n or a lone \r (old Mac files); JSON text itself never holds a raw line break."""
    rows: list[Any] = []
    rejects: list[Reject] = []
    data = path.read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]  # a byte-order mark
    for lineno, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            rows.append(BLANK)
            continue
        reason = None
        try:
            rows.append(_parse(raw.decode("utf-8")))
        except UnicodeDecodeError as e:
            reason = f"not valid UTF-8 (byte {e.start} of line {lineno})"
        except json.JSONDecodeError as e:
            reason = f"invalid JSON on line {lineno}, column {e.colno}: {e.msg}"
        except ValueError as e:
            reason = f"line {lineno} cannot be read as JSON ({digits_problem(e)})"
        except RecursionError:
            reason = f"line {lineno} is nested too deeply to read"
        if reason is not None:
            rows.append(INVALID)
            rejects.append(Reject(str(path), lineno, reason, raw.decode("utf-8", "replace")))
    while rows and rows[-1] is BLANK:  # (trailing blank lines)
        rows.pop()
    return rows, rejects


def row_count(rows: list[Any]) -> int:
    """The rows of a file as read_rows returns them: its blank JSONL lines are no rows."""
    return sum(r is not BLANK for r in rows)


def check_row(row: Any) -> None:
    """A row sftlab can read: an object, no key given twice, no text that is not Unicode (a lone
    surrogate such as \\ud800 cannot be encoded). Raises RowError naming the field."""
    if not isinstance(row, dict):
        raise RowError(f"must be an object, got {json_type(row)}")
    # (a value's path as keys and indexes, made a field name only for a sentence: keys may be long)
    stack: list[tuple[tuple[str | int, ...], Any]] = [((), row)]
    while stack:  # iterative: a row may nest deeper than Python's recursion limit
        path, value = stack.pop()
        if isinstance(value, (dict, list)) and len(path) > MAX_DEPTH:
            raise RowError(f"is {TOO_DEEP}", field=_field(path[:1]))
        if isinstance(value, dict):
            if getattr(value, "duplicates", ()):
                raise RowError(f"key '{shown(value.duplicates[0])}' is given more than once", field=_field(path))
            stack += [((*path, str(k)), v) for k, v in value.items()]
        elif isinstance(value, list):
            stack += [((*path, i), v) for i, v in enumerate(value)]
        elif isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as e:
                raise RowError(f"text holds a lone surrogate (U+{ord(value[e.start]):04X}), which is not Unicode",
                               field=_field(path)) from None


def _field(path: tuple[str | int, ...]) -> str | None:
    """A path as a field name ('messages[0].content'), each key shown short; None for the row itself."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{shown(part)}" if out else shown(part)
    return (out if len(out) <= 200 else out[:199] + "…") or None  # (64 levels of keys, each up to 60 characters)


def load_conversations(
    path: str | Path,
    fmt: str | None = None,
    *,
    on_error: str = "raise",
    require_assistant: bool = True,
    mapping: RowMapping | None = None,
) -> Loaded:
    """Read one file into Conversations (its own column and role names renamed by `mapping`). With
    on_error='raise' the first bad row is a SftlabError naming file, row and field; with 'skip' it becomes a
    Reject and loading goes on."""
    if on_error not in ("raise", "skip"):
        raise SftlabError(f"on_error must be 'raise' or 'skip', got '{on_error}'")
    source = str(path)
    rows, rejects = read_rows(path)
    if rejects and on_error == "raise":
        first = rejects[0]
        raise SftlabError(f"{source}: {first.reason}")
    out = Loaded(rows=row_count(rows), rejects=list(rejects))
    out.format = file_format(source, rows, fmt, mapping)
    for number, row, conv, error in convert_rows(source, rows, out.format, fmt is None, require_assistant, mapping):
        if error is not None:
            if on_error == "raise":
                raise error from None
            out.rejects.append(Reject(source, number, error.unlocated(), row))
        else:
            out.conversations.append(conv)
    out.rejects.sort(key=lambda r: r.row)
    return out


def convert_rows(
    source: str, rows: list[Any], fmt: str, detected: bool, require_assistant: bool = True,
    mapping: RowMapping | None = None,
) -> Iterator[tuple[int, Any, Conversation | None, RowError | None]]:
    """(row number, row, Conversation or None, the located error or None) for every row that was read."""
    mapping = mapping or RowMapping()
    for number, row in _numbered(rows):
        try:
            check_row(row)
            try:
                conv = convert_row(mapping.apply(row, fmt), fmt)
            except RowError as e:
                raise mapping.located(e, fmt) from None
            if require_assistant and not conv.is_text and not conv.assistant_indices:
                raise RowError("conversation has no assistant turn to train on")
        except RowError as e:
            if detected and e.reason in (MISSING, NULL):
                e = RowError(f"{e.reason} (the format '{fmt}' was detected from the first row; "
                             "set format to override)", field=e.field)
            yield number, _writable(row), None, e.located(source, number)
            continue
        conv.source, conv.row = source, number
        yield number, row, conv, None


def _writable(row: Any) -> Any:
    """A refused row as a rejects file (or a data check's report) can hold it: one nested past MAX_DEPTH as its JSON
    text, as an unreadable JSONL line is kept (the writers recurse per level), None where even that cannot be made."""
    if depth(row, MAX_DEPTH + 1) <= MAX_DEPTH + 1:  # (the row itself is one level)
        return row
    try:
        return json.dumps(row, ensure_ascii=False)
    except (RecursionError, ValueError, TypeError):
        return None


def _numbered(rows: list[Any]) -> Iterator[tuple[int, Any]]:
    for i, row in enumerate(rows, start=1):
        if row is not INVALID and row is not BLANK:  # (a line already rejected, its Reject says why; no row)
            yield i, row


def file_format(source: str, rows: list[Any], fmt: str | None = None, mapping: RowMapping | None = None) -> str:
    """The format given (checked), or that of the first row that is an object, from its keys that hold a value (a
    column that Arrow gives every row of a CSV or parquet file, null in most, does not decide), as `mapping`
    renames them; the mapping checked against it."""
    mapping = mapping or RowMapping()
    if fmt is not None:
        if fmt not in FORMATS:
            raise SftlabError(f"{source}: unknown format '{fmt}'; choose one of {', '.join(FORMATS)}")
        mapping.check(fmt, source)
        return fmt
    first = next((r for r in rows if isinstance(r, dict)), None)
    if first is None:
        readable = [(i, r) for i, r in _numbered(rows)]
        if not row_count(rows):
            raise SftlabError(f"{source}: the file holds no rows")
        if not readable:
            raise SftlabError(f"{source}: no row could be read (none is valid JSON)")
        raise SftlabError(f"{source}: no row is a JSON object (row {readable[0][0]} is {json_type(readable[0][1])}); "
                          "a .jsonl file holds one object per line")
    fmt = detect_format(mapping.renamed_keys([k for k, v in first.items() if v is not None]))
    if fmt is None and mapping:
        raise SftlabError(f"{source}: cannot tell the format from the columns as mapped "
                          f"({', '.join(shown(k, 40) for k in mapping.renamed_keys(sorted(first))[:10])}); set format to one of "
                          f"{', '.join(FORMATS)}")
    if fmt is not None:
        mapping.check(fmt, source)
    if fmt is None:
        columns = sorted(first.keys())  # (a row may have thousands of keys, each of any length: the first few, short)
        listed = str([shown(k, 40) for k in columns[:10]]) + (f" and {len(columns) - 10} more" if len(columns) > 10 else "")
        raise SftlabError(f"{source}: cannot tell the format from the columns {listed}; "
                          f"set format to one of {', '.join(FORMATS)}")
    return fmt


def write_rejects(rejects: list[Reject], path: str | Path) -> None:
    with atomic_writer(path, "rejects file") as f:
        for r in rejects:
            f.write(jsonsafe.dumps(r.to_dict(), ensure_ascii=False, default=str) + "\n")  # (line-safe JSONL)
