"""Input files → the rows a data check looks at, each kept with its raw record so `data clean` can
write it back unchanged."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from sftlab.data.conversation import Conversation
from sftlab.data.formats import FORMATS
from sftlab.data.load import convert_rows, detect_file_format, read_rows
from sftlab.errors import SftlabError


@dataclass
class Row:
    file: str
    row: int  # 1-based, in its file
    record: Any  # the row as read (for an invalid JSON line: the line's text)
    conversation: Conversation | None
    error: str | None = None
    # Filled from the conversation by `describe`.
    instruction: str = ""
    input: str = ""
    prompt_parts: list[str] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)
    pairs: list[tuple[str, str, str]] = field(default_factory=list)  # (instruction, input, answer) per turn

    @property
    def key(self) -> tuple[str, int]:
        return self.file, self.row

    @property
    def prompt(self) -> str:
        return "\n".join(self.prompt_parts)

    @property
    def answer(self) -> str:
        return "\n".join(self.answers)

    def snippet(self, width: int = 160) -> str:
        if self.conversation is None:
            text = self.record if isinstance(self.record, str) else json.dumps(self.record, ensure_ascii=False)
        else:
            text = f"{self.instruction} → {self.answer}" if not self.conversation.is_text else self.answer
        text = " ".join(str(text).split())
        return text if len(text) <= width else text[: width - 1] + "…"


def read_files(paths: Sequence[str | Path], fmt: str | None = None) -> tuple[list[Row], dict[str, str]]:
    """Every row of every file, valid or not, in file and row order; and each file's format."""
    out: list[Row] = []
    formats: dict[str, str] = {}
    for path in paths:
        source = str(path)
        rows, bad_lines = read_rows(path)
        file_fmt = fmt or detect_file_format(source, rows)
        if file_fmt not in FORMATS:
            raise SftlabError(f"{source}: unknown format '{file_fmt}'; choose one of {', '.join(FORMATS)}")
        formats[source] = file_fmt
        found = [
            Row(source, number, raw, conv, None if error is None else str(error))
            for number, raw, conv, error in convert_rows(source, rows, file_fmt, fmt is None)
        ]
        found += [Row(source, r.row, r.data, None, f"{source}, row {r.row}: {r.reason}") for r in bad_lines]
        found.sort(key=lambda r: r.row)
        for row in found:
            if row.conversation is not None:
                describe(row)
        out += found
    return out, formats


def describe(row: Row) -> None:
    """The prompt and answer texts of a row. For alpaca rows the instruction and the input stay apart
    (an answer that merely repeats the input is a finding; one that repeats it inside more is not)."""
    conv = row.conversation
    assert conv is not None
    if conv.is_text:
        row.answers = [conv.messages[0].content] if conv.messages else []
        return
    last_user: tuple[str, str] = ("", "")
    for m in conv.messages:
        if m.role == "assistant":
            if m.content or not m.tool_calls:
                row.answers.append(m.content)
                row.pairs.append((last_user[0], last_user[1], m.content))
            continue
        if m.role == "user":
            parts = m.parts or {}
            last_user = (parts.get("instruction", m.content), parts.get("input", ""))
            row.prompt_parts += [p for p in last_user if p]
        else:
            row.prompt_parts.append(m.content)
    row.instruction, row.input = last_user
