"""What the UI's pickers offer: the data files under its folders (those sftlab's reader takes as training data,
found by their first row's format) and the models (the default model, finished runs, model folders and .gguf files)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from sftlab.defaults import DEFAULT_MODEL
from sftlab.errors import SftlabError
from sftlab.runs.folder import (CHECKPOINT_PREFIX, DATA_REPORT, EVAL_PROBE, EVAL_RESPONSES, EVAL_STATE, EVAL_SUMMARY,
                                EXPORT_STATE, METRICS, PROCESS_RECORD, REJECTS, SFTLAB_STATE, STAGE_DONE,
                                TRAINER_STATE, UI_STATE)
from sftlab.ui.manager import not_regular

# Data files the pickers offer, and folders never searched for them.
DATA_FILE_SUFFIXES = (".json", ".jsonl", ".csv", ".parquet")
SKIP_FOLDERS = {".git", ".venv", "venv", "node_modules", "__pycache__", ".cache"}


def data_files(roots: list[Path], limit: int = 500, depth: int = 4) -> list[str]:
    """Files under the UI's folders that read as training data (reads_as_data), as paths relative to the first
    folder where they lie inside it: what the New run and Eval pages offer."""
    found: list[str] = []
    base = roots[0].resolve()

    def walk(folder: Path, level: int) -> None:
        try:
            entries = sorted(folder.iterdir())
        except OSError:
            return
        for entry in entries:
            if len(found) >= limit:
                return
            if entry.name.startswith("."):
                continue
            kind = not_regular(entry)
            if kind == "a folder":
                if level < depth and entry.name not in SKIP_FOLDERS and not os.path.isfile(entry / "config.json"):
                    walk(entry, level + 1)
            elif (kind is None and entry.suffix.lower() in DATA_FILE_SUFFIXES and entry.name not in RUN_FILES
                  and reads_as_data(entry)):
                path = entry.resolve()
                found.append(path.relative_to(base).as_posix() if path.is_relative_to(base) else str(path))

    for root in roots:
        if root.resolve() == base or not root.resolve().is_relative_to(base):
            walk(root.resolve(), 0)
    return sorted(set(found))


# Files sftlab writes into run folders, never training data: its own (sftlab.runs.folder names them) and the
# model's, the tokenizer's and an export's.
RUN_FILES = (METRICS, REJECTS, EVAL_RESPONSES, EVAL_PROBE, DATA_REPORT, EVAL_SUMMARY, TRAINER_STATE, SFTLAB_STATE,
             STAGE_DONE, PROCESS_RECORD, UI_STATE, EVAL_STATE, EXPORT_STATE,
             "config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json",
             "special_tokens_map.json", "adapter_config.json", "export_report.json", "vocab.json")
# Files larger than this are offered on their first row alone (reading a whole large file for a list costs too much).
WHOLE_READ_BYTES = 8 * 1024**2
_data_cache: dict[tuple[str, int, int], bool] = {}


def reads_as_data(path: Path) -> bool:
    """Whether sftlab's reader takes `path` as training data: its rows are objects whose keys name one of the
    formats (alpaca, sharegpt, messages, prompt-completion, text). A DeepSpeed config, a package.json or a
    tokenizer's JSON is not. Remembered by size and modification time."""
    try:
        st = path.stat()
    except OSError:
        return False
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _data_cache:
        _data_cache[key] = _first_row_format(path, st.st_size) is not None
    return _data_cache[key]


def _first_row_format(path: Path, size: int) -> str | None:
    """The format of a data file's first row, as sftlab's reader detects it, or None."""
    from sftlab.data.formats import detect_format

    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            import csv

            with open(path, encoding="utf-8-sig", newline="") as f:
                return detect_format(next(csv.reader(f), []))
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return detect_format(pq.read_schema(path).names)
        if suffix == ".jsonl" or size > WHOLE_READ_BYTES:
            with open(path, encoding="utf-8-sig") as f:
                line = next((line for line in f if line.strip()), "")
            if suffix == ".jsonl":
                row = json.loads(line)
            else:  # a large .json array: its first object, from the head of the file
                head = path.open(encoding="utf-8-sig").read(64_000).lstrip()
                row = json.JSONDecoder().raw_decode(head[1:].lstrip())[0] if head.startswith("[") else None
        else:
            from sftlab.data.load import read_rows

            rows, _ = read_rows(path)
            row = next((r for r in rows if isinstance(r, dict)), None) if isinstance(rows, list) else None
    except (OSError, ValueError, UnicodeDecodeError, SftlabError, ImportError, RecursionError):
        return None
    if not isinstance(row, dict):
        return None
    return detect_format([k for k, v in row.items() if v is not None])


def model_choices(runs: list[dict[str, Any]], roots: list[Path] | None = None) -> list[dict[str, str]]:
    """The models chat, eval, export and the New run form offer: the default model, every finished run, and the
    model folders (a config.json beside weights) and .gguf files under the UI's folders."""
    out = [{"value": DEFAULT_MODEL, "label": f"{DEFAULT_MODEL} (default)"}]
    out += [{"value": r["output_dir"], "label": f"run {r['id']} ({r['method']})"} for r in runs
            if r["status"] == "finished"]
    seen = {o["value"] for o in out}
    for root in roots or []:
        for path in _model_folders(root.resolve()):
            if str(path) not in seen and not any(str(path).startswith(s + "/") for s in seen if s.startswith("/")):
                seen.add(str(path))
                out.append({"value": str(path), "label": f"folder {path.relative_to(root.resolve()).as_posix()}"})
    return out


def _model_folders(root: Path, depth: int = 3, limit: int = 100) -> list[Path]:
    found: list[Path] = []

    def walk(folder: Path, level: int) -> None:
        try:
            entries = sorted(folder.iterdir())
        except OSError:
            return
        for entry in entries:
            if len(found) >= limit or entry.name.startswith("."):
                continue
            kind = not_regular(entry)  # (never through a link; a folder that may not be read is passed by)
            if kind == "a folder" and entry.name not in SKIP_FOLDERS:
                try:
                    model = ((entry / "config.json").is_file() and any(entry.glob("*.safetensors"))
                             or (entry / "adapter_config.json").is_file())
                except OSError:
                    continue
                if model:
                    found.append(entry)
                elif level < depth and not entry.name.startswith(CHECKPOINT_PREFIX):
                    walk(entry, level + 1)
            elif entry.suffix == ".gguf" and kind is None:
                found.append(entry)

    walk(root, 0)
    return found
