"""The recipe file itself (YAML, read as sftlab reads its configs), and where a recipe's data lives as sftlab reads
it: a local file of a format sftlab reads, a folder saved by `datasets`, or a Hugging Face hub dataset (sftlab reads
local files only: the entry names the dataset so it can be downloaded and the path set), and the shape of a local
file's first row."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

from sftlab.errors import SftlabError, echo_path

READABLE = (".json", ".jsonl", ".csv", ".parquet")  # sftlab.data.load.SUFFIXES, without importing the data layer


def kind(path: str) -> str:
    """"file" (a data file sftlab reads), "saved" (a datasets folder), "folder" (a folder of data files), "other" (a
    local file sftlab does not read), or "hub" (nothing of that name here: a hub dataset's id)."""
    p = Path(path).expanduser()
    if p.is_dir():
        return "saved" if (p / "state.json").is_file() and (p / "dataset_info.json").is_file() else "folder"
    if p.is_file():
        return "file" if p.suffix.lower() in READABLE else "other"
    return "hub"


def folder_files(path: str) -> list[str]:
    """The data files sftlab reads in a folder (as `datasets.load_dataset(folder)` finds them), sorted."""
    return sorted(str(Path(path) / f.name) for f in Path(path).expanduser().iterdir()
                  if f.is_file() and f.suffix.lower() in READABLE)


HUB = ("a Hugging Face hub dataset ({value}): sftlab reads local files. The config keeps the name as the path so the "
       "entry is there to complete: download the data (huggingface-cli download --repo-type dataset NAME "
       "--local-dir DIR) and set the path to its file; `sftlab train` refuses the config until then")


def hub_note(index: int, key: str, name: str) -> str:
    return (f"{key}[{index}] names the hub dataset {name!r}, not a local file: download it and set "
            f"{key}[{index}].path to the file before `sftlab train`")


def first_row_keys(path: str) -> Optional[list[str]]:
    """The keys of a local data file's first row (None where it cannot be told cheaply: a saved folder, a broken
    file). A .jsonl file is read to its first line only."""
    p = Path(path).expanduser()
    if not p.is_file():
        return None
    try:
        if p.suffix.lower() == ".jsonl":
            with open(p, encoding="utf-8") as f:
                line = next((line for line in f if line.strip()), None)
            row = json.loads(line) if line else None
        else:
            from sftlab.data.load import read_rows

            rows, _ = read_rows(p)
            row = rows[0] if rows else None
    except (OSError, ValueError, RecursionError, SftlabError):
        return None
    return list(row) if isinstance(row, dict) else None


def joined(folder: str, name: str) -> str:
    """A file of a folder, as the tool opens it (relative to the working folder where the folder is)."""
    return os.path.normpath(os.path.join(folder, name))


def shape(path: str) -> Optional[str]:
    """A local file's kind of rows as TRL names them: conversational, prompt-completion, language modeling (text),
    or None where it cannot be told."""
    keys = first_row_keys(path)
    if keys is None:
        return None
    if "messages" in keys or "conversations" in keys:
        return "conversational"
    if "prompt" in keys and "completion" in keys:
        return "prompt-completion"
    return "text" if "text" in keys else None


def read_recipe(path: str | Path) -> dict[str, Any]:
    """A recipe file's keys (YAML, read as sftlab reads its own configs), or one sentence."""
    from sftlab.config.load import read_yaml

    data = read_yaml(path)
    if not isinstance(data, dict):
        raise SftlabError(f"{echo_path(path)}: a recipe is a mapping of keys to values, not "
                          f"{'an empty file' if data is None else type(data).__name__}")
    return data
