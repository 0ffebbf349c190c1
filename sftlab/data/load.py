"""Files → rows → Conversations, with every row either converted or rejected with its reason."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from sftlab.data.conversation import Conversation
from sftlab.data.formats import FORMATS, convert_row, detect_format
from sftlab.errors import RowError, SftlabError

SUFFIXES = (".json", ".jsonl", ".csv", ".parquet")


@dataclass
class Reject:
    source: str
    row: int
    reason: str
    data: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "row": self.row, "reason": self.reason, "data": self.data}


@dataclass
class Loaded:
    conversations: list[Conversation] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    rows: int = 0
    format: str | None = None


def read_rows(path: str | Path, *, exact: bool = False) -> tuple[list[dict[str, Any] | None], list[Reject]]:
    """The rows of a file, in order. Lines of a JSONL file that are not JSON come back as rejects
    (their slot in the list is None) so the caller decides whether that is fatal. `exact` reads JSON
    files as written (no Arrow schema, so no null fields added), for tools that write rows back."""
    path = Path(path)
    if not path.exists():
        raise SftlabError(f"{path}: no such file or directory")
    if path.is_dir():
        return _read_saved_dataset(path), []
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise SftlabError(f"{path}: unsupported file type '{suffix}'; use one of {', '.join(SUFFIXES)} or a saved datasets folder")
    if suffix in (".json", ".jsonl"):
        return _read_json_python(path, suffix) if exact else _read_json(path, suffix)
    return _read_with_datasets(path, suffix[1:]), []


def _read_with_datasets(path: Path, builder: str, **kwargs: Any) -> list[dict[str, Any]]:
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    ds = datasets.load_dataset(builder, data_files=str(path), split="train", **kwargs)
    return [_clean_nan(r) for r in ds.to_list()]


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


def _read_json(path: Path, suffix: str) -> tuple[list[dict[str, Any] | None], list[Reject]]:
    # The fast path is datasets (Arrow). It fails on invalid JSON and on rows whose types Arrow cannot
    # unify (e.g. content a string in one row, a number in another); then we read the file ourselves
    # so the error names the line or the row and field.
    try:
        rows = _read_with_datasets(path, "json")
        if suffix == ".json" or _line_count(path) == len(rows):
            return rows, []
    except Exception:  # noqa: BLE001 - diagnosed below
        pass
    return _read_json_python(path, suffix)


def _line_count(path: Path) -> int:
    with open(path, encoding="utf-8") as f:
        return sum(1 for line in f if line.strip())


def _read_json_python(path: Path, suffix: str) -> tuple[list[dict[str, Any] | None], list[Reject]]:
    text = path.read_text(encoding="utf-8")
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise SftlabError(f"{path}: invalid JSON on line {e.lineno}, column {e.colno}: {e.msg}") from None
        if isinstance(data, dict):
            data = [data]
        if not isinstance(data, list):
            raise SftlabError(f"{path}: a .json file must hold a list of objects, found {type(data).__name__}")
        return data, []
    rows: list[dict[str, Any] | None] = []
    rejects: list[Reject] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            rows.append(None)
            rejects.append(Reject(str(path), len(rows), f"invalid JSON on line {lineno}: {e.msg}", line))
    return rows, rejects


def load_conversations(
    path: str | Path,
    fmt: str | None = None,
    *,
    on_error: str = "raise",
    require_assistant: bool = True,
) -> Loaded:
    """Read one file into Conversations. With on_error='raise' the first bad row is a SftlabError
    naming file, row and field; with 'skip' it becomes a Reject and loading goes on."""
    if on_error not in ("raise", "skip"):
        raise SftlabError(f"on_error must be 'raise' or 'skip', got '{on_error}'")
    source = str(path)
    rows, rejects = read_rows(path)
    if rejects and on_error == "raise":
        first = rejects[0]
        raise SftlabError(f"{source}: {first.reason}")
    out = Loaded(rows=len(rows), rejects=list(rejects))
    out.format = fmt or detect_file_format(source, rows)
    if out.format not in FORMATS:
        raise SftlabError(f"{source}: unknown format '{out.format}'; choose one of {', '.join(FORMATS)}")
    for number, row, conv, error in convert_rows(source, rows, out.format, fmt is None, require_assistant):
        if error is not None:
            if on_error == "raise":
                raise error from None
            out.rejects.append(Reject(source, number, str(error), row))
        else:
            out.conversations.append(conv)
    out.rejects.sort(key=lambda r: r.row)
    return out


def convert_rows(
    source: str, rows: list[dict[str, Any] | None], fmt: str, detected: bool, require_assistant: bool = True
) -> Iterator[tuple[int, Any, Conversation | None, RowError | None]]:
    """(row number, row, Conversation or None, the located error or None) for every row that was read."""
    for number, row in _numbered(rows):
        try:
            if not isinstance(row, dict):
                raise RowError(f"must be an object, got {type(row).__name__}")
            conv = convert_row(row, fmt)
            if require_assistant and not conv.is_text and not conv.assistant_indices:
                raise RowError("conversation has no assistant turn to train on")
        except RowError as e:
            if detected and e.reason == "missing field":
                e = RowError(f"missing field (the format '{fmt}' was detected from the first row; "
                             "set format to override)", field=e.field)
            yield number, row, None, e.located(source, number)
            continue
        conv.source, conv.row = source, number
        yield number, row, conv, None


def _numbered(rows: list[dict[str, Any] | None]) -> Iterator[tuple[int, dict[str, Any]]]:
    for i, row in enumerate(rows, start=1):
        if row is not None:  # None: a JSONL line already rejected as invalid JSON
            yield i, row


def detect_file_format(source: str, rows: list[dict[str, Any] | None]) -> str:
    first = next((r for r in rows if isinstance(r, dict)), None)
    if first is None:
        raise SftlabError(f"{source}: the file holds no rows")
    fmt = detect_format(first.keys())
    if fmt is None:
        raise SftlabError(
            f"{source}: cannot tell the format from the columns {sorted(first.keys())}; "
            f"set format to one of {', '.join(FORMATS)}"
        )
    return fmt


def write_rejects(rejects: list[Reject], path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in rejects:
            f.write(json.dumps(r.to_dict(), ensure_ascii=False, default=str) + "\n")
