"""Input files → the rows a data check looks at, each kept with its raw record so `data clean` can
write it back unchanged."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Sequence

from sftlab.data.conversation import Conversation
from sftlab.data.load import convert_rows, file_format, read_rows
from sftlab.data.mapping import RowMapping


@dataclass
class Row:
    """A row of an input file as a data check sees it: the conversation it reads as (what training reads,
    through the same loader), or why it does not, and the record as read so `data clean` can write it back
    unchanged. The texts the checks look at come from the conversation."""

    file: str
    row: int  # 1-based, in its file
    record: Any  # the row as read (for an invalid JSON line: the line's text)
    conversation: Conversation | None
    error: str | None = None

    @property
    def key(self) -> tuple[str, int]:
        return self.file, self.row

    @cached_property
    def exchanges(self) -> list[tuple[str, str, str]]:  # (instruction, input, answer) per assistant answer
        return self.conversation.turns() if self.conversation is not None else []

    @property
    def answers(self) -> list[str]:
        return [answer for _, _, answer in self.exchanges]

    @cached_property
    def prompt_parts(self) -> list[str]:
        return self.conversation.prompt_texts() if self.conversation is not None else []

    @property
    def instruction(self) -> str:
        return self.conversation.last_instruction()[0] if self.conversation is not None else ""

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


def read_files(paths: Sequence[str | Path], fmt: str | None = None,
               mapping: RowMapping | None = None) -> tuple[list[Row], dict[str, str]]:
    """Every row of every file, valid or not, in file and row order (read by the file's own names `mapping` gives);
    and each file's format."""
    out: list[Row] = []
    formats: dict[str, str] = {}
    for path in paths:
        source = str(path)
        rows, bad_lines = read_rows(path)
        formats[source] = file_fmt = file_format(source, rows, fmt, mapping)
        found = [
            Row(source, number, raw, conv, None if error is None else str(error))
            for number, raw, conv, error in convert_rows(source, rows, file_fmt, fmt is None, mapping=mapping)
        ]
        found += [Row(source, r.row, r.data, None, f"{source}, row {r.row}: {r.reason}") for r in bad_lines]
        found.sort(key=lambda r: r.row)
        out += found
    return out, formats
