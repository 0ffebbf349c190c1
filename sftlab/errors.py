"""The one error type a user sees: a sentence naming the file, the row and the field."""

from __future__ import annotations

import re
import reprlib
from typing import Any

# How much of a value a user gave an error sentence echoes: enough to recognise it, never a whole pasted file.
ECHO_CHARS = 80
# (containers are summarised before they are cut: a huge or deeply nested value is never rendered whole)
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlong = 3, ECHO_CHARS, ECHO_CHARS, ECHO_CHARS


def echo(value: Any, limit: int = ECHO_CHARS) -> str:
    """A value a user gave, as an error sentence shows it: its repr ('text' in quotes), cut after `limit` characters
    with the whole length said ("'aaaa…(100000 characters)'"). Every echo of a user's value goes through here."""
    if isinstance(value, str):
        if len(value) <= limit:
            return repr(value)
        cut = repr(value[:limit])
        return f"{cut[:-1]}…({len(value)} characters){cut[0]}"
    try:
        text = _REPR.repr(value)
    except ValueError:  # (an int of more digits than Python will print)
        return f"a number of {value.bit_length()} bits" if isinstance(value, int) else type(value).__name__
    return text if len(text) <= limit else f"{text[:limit]}…"


def echo_text(text: str, limit: int = ECHO_CHARS) -> str:
    """A name or a path a user gave, echoed without quotes, cut as `echo` cuts it; a line break or another control
    character in it is written as its escape (`\\n`), so the sentence stays one line."""
    cut = text if len(text) <= limit else f"{text[:limit]}…({len(text)} characters)"
    return _UNPRINTABLE.sub(lambda m: repr(m.group())[1:-1], cut)


def one_line(text: str) -> str:
    """`text` with every character that is not printable (line breaks, escapes, U+2028, zero-width …) written as
    its escape, so a name from a file, a folder or the data can neither break a line nor forge one."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


SHOWN_CHARS = 60  # a name or value from a file, echoed in a phrase: at most this much


def shown(value: str, limit: int = SHOWN_CHARS) -> str:
    """A name or value from a file (the data, a GGUF header) for a sentence: cut at `limit` ("…"), on one line."""
    return one_line(value if len(value) <= limit else value[:limit] + "…")


# A path is echoed whole up to Linux's PATH_MAX: a sentence must name the file (a cut path names none), and a
# longer "path" is no path.
PATH_CHARS = 4096


def echo_path(path: Any) -> str:
    """A path a user gave (or one made from it), as a sentence names it: whole, on one line."""
    return echo_text(str(path), PATH_CHARS)


# What would break a one-line sentence (str.splitlines splits on all of these) or hide in it.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class SftlabError(Exception):
    """Bad input or configuration; the CLI prints the message and exits non-zero, without a traceback."""


def json_type(value: Any) -> str:
    """A JSON value's kind, as an error sentence names it (by isinstance: the reader's objects are a dict subclass
    that remembers repeated keys)."""
    if value is None:
        return "null"
    for kind, name in ((bool, "a boolean"), (dict, "an object"), (list, "a list"), (str, "a string"),
                       ((int, float), "a number")):
        if isinstance(value, kind):
            return name
    return type(value).__name__


class RowError(SftlabError):
    """One input row cannot be converted. `reason` is the sentence without the location."""

    def __init__(self, reason: str, source: str | None = None, row: int | None = None, field: str | None = None):
        self.reason = reason
        self.source = source
        self.row = row
        self.field = field
        super().__init__(self._sentence())

    def unlocated(self) -> str:
        """The reason with its field but without file and row (a reject record carries those itself)."""
        return f"field '{self.field}': {self.reason}" if self.field else self.reason

    def located(self, source: str, row: int) -> "RowError":
        return RowError(self.reason, source, row, self.field)

    def _sentence(self) -> str:
        where = []
        if self.source is not None:
            where.append(str(self.source))
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.field:
            where.append(f"field '{self.field}'")
        return f"{', '.join(where)}: {self.reason}" if where else self.reason


FIRST_LINE_CHARS = 500


def first_line(e: BaseException, with_type: bool = False) -> str:
    """An exception's message for a one-sentence error: its first line (its type's name when it has none), or with
    `with_type` "TypeName: first line"."""
    text = str(e).strip()
    # (a library's message may quote a whole value the user gave: kept to a sentence's length)
    line = echo_text(text.splitlines()[0], FIRST_LINE_CHARS) if text else ""
    if with_type:
        return f"{type(e).__name__}: {line}" if line else type(e).__name__
    return line or type(e).__name__
