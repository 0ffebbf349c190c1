"""JSON that every reader can parse, and sftlab's own files read back without trusting them.

Writing: NaN and ±Infinity (a diverged loss, a metric divided by zero) leave sftlab as `null`, since JSON has no
such numbers and Python's `json.dumps` would otherwise write the bare words `NaN` and `Infinity`, which browsers'
JSON.parse and most other parsers refuse. And every text is line-safe: json.dumps(ensure_ascii=False) leaves
U+0085, U+2028 and U+2029 raw inside strings, and str.splitlines (and JavaScript's line handling) splits on them,
so a JSONL record holding one would read back as two broken lines; they are written as their \\u escapes
(the control characters splitlines also splits on, \\v \\f \\x1c-\\x1e, json.dumps escapes already). One helper
for every place JSON leaves sftlab: JSONL files (metrics, responses, rejects), state files, `sftlab runs --json`,
the UI's API and its event stream.

Reading: a file sftlab wrote is read back as a regular file only (a FIFO planted in its place would block the
reader forever, a link would read another file), at most a bounded size, and parsed so that nothing in it, too
deep nesting included, escapes as anything but ValueError/OSError: callers say "damaged" in one sentence.
JSONL is split on "\\n" only, the one separator `jsonl` writes.
"""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path
from typing import Any, Iterable

# The characters str.splitlines splits on that json.dumps leaves raw (it escapes everything below U+0020).
_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})
MAX_FILE_BYTES = 256 * 1024 * 1024  # a file of sftlab's own larger than this was not written by a run


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
    """json.dumps of `value` with non-finite floats as null and no character any line splitter splits on, so
    the text is always one line unless `indent` asks for more; never writes NaN or Infinity."""
    return json.dumps(finite(value), allow_nan=False, **options).translate(_LINE_BREAKS)


def jsonl(records: Iterable[Any]) -> str:
    """JSON Lines: one `dumps` line per record (UTF-8 as is), each ended by "\\n"."""
    return "".join(dumps(r, ensure_ascii=False) + "\n" for r in records)


def lines(text: str) -> list[str]:
    """The records' lines of a JSONL text as `jsonl` writes it: split on "\\n" only, blank lines left out."""
    return [line for line in text.split("\n") if line.strip()]


def loads(text: str) -> Any:
    """json.loads where anything unreadable is a ValueError (nesting too deep for the parser included)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None


class NotAFile(OSError):
    """A path where sftlab keeps one of its files that is something else (FIFO, link, folder, device), or one
    too large; `what` is the sentence without the file's name ("is a FIFO, not a file sftlab writes")."""

    def __init__(self, path: str | Path, what: str, kind: str | None = None):
        super().__init__(f"{Path(path).name} {what}")
        self.what = what
        self.kind = kind  # what is there instead ("a FIFO" …), where it is no regular file


def kind(mode: int) -> str:
    """What a non-regular file is, in words ("a FIFO", "a symbolic link", …)."""
    for test, name in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def not_a_file(path: str | Path) -> str | None:
    """Why `path` cannot be one of sftlab's files, without its name ("is a FIFO, not a file sftlab writes"; lstat
    only: nothing is opened), or None (a regular file, or nothing there)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    return None if stat.S_ISREG(mode) else f"is {kind(mode)}, not a file sftlab writes"


def open_own(path: str | Path, flags: int, mode: int = 0o644) -> int:
    """os.open of one of sftlab's own files (a log, a lock, a state file) that never follows a link nor waits on a
    FIFO, and keeps only a regular file: its descriptor; NotAFile (with `kind`) when something else is there, the
    OSError of os.open when it cannot be opened."""
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise NotAFile(path, f"is {kind(mode)}, not a file sftlab writes", kind(mode))
    return fd


def read_text(path: str | Path, max_bytes: int = MAX_FILE_BYTES) -> str:
    """The text of one of sftlab's own files: a regular file (checked with lstat before opening, and opened
    without following a link or waiting on a FIFO), at most `max_bytes`, undecodable bytes replaced. OSError
    when it cannot be read (NotAFile: it is something else, or too large)."""
    problem = not_a_file(path)
    if problem:
        raise NotAFile(path, problem)
    with os.fdopen(open_own(path, os.O_RDONLY), "rb") as f:  # (checked again: swapped after the lstat?)
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise NotAFile(path, f"is larger than {max_bytes:,} bytes, more than sftlab writes there")
    return data.decode("utf-8", errors="replace")


def load(path: str | Path, max_bytes: int = MAX_FILE_BYTES) -> Any:
    """The JSON value of one of sftlab's own files; OSError (cannot be read) or ValueError (not JSON)."""
    return loads(read_text(path, max_bytes))
