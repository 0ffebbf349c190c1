"""The one error type a user sees: a sentence naming the file, the row and the field."""

from __future__ import annotations

from typing import Any


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


def first_line(e: BaseException, with_type: bool = False) -> str:
    """An exception's message for a one-sentence error: its first line (its type's name when it has none), or with
    `with_type` "TypeName: first line"."""
    text = str(e).strip()
    line = text.splitlines()[0] if text else ""
    if with_type:
        return f"{type(e).__name__}: {line}" if line else type(e).__name__
    return line or type(e).__name__
