"""An imported recipe written out: the config YAML (a header naming the source and what needs a hand, then the
keys as `sftlab.config.load_config` reads them), and the report as a table or JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from sftlab.errors import one_line
from sftlab.recipes.rules import Imported
from sftlab.recipes.source_templates import TOOL_NAMES



def config_yaml(imported: Imported, source: str) -> str:
    """The config file's text: comment lines (the source, counts, the notes), then the keys."""
    counts = {s: sum(1 for i in imported.report if i.status == s) for s in ("mapped", "ignored", "unsupported")}
    lines = [f"# sftlab config imported by `sftlab import` from {source} ({TOOL_NAMES[imported.tool]} recipe).",
             f"# The import's report: {counts['mapped']} keys mapped, {counts['ignored']} ignored, "
             f"{counts['unsupported']} unsupported (`sftlab import … --json` lists each with its reason).",
             *[f"# - {note}" for note in imported.notes]]
    body = yaml.safe_dump(imported.config, sort_keys=False, allow_unicode=True, width=120)
    return "\n".join(one_line(line) if line.startswith("#") else line for line in lines) + "\n" + body


def write_config(imported: Imported, out: str | Path, source: str) -> Path:
    from sftlab.files import write_text

    return write_text(out, config_yaml(imported, source), "--out")


def report_json(imported: Imported) -> list[dict[str, Any]]:
    return [item.to_dict() for item in imported.report]


def print_report(imported: Imported, console: Any) -> None:
    """The report as a table on `console` (rich): key, status, sftlab key, why."""
    from rich.table import Table
    from rich.text import Text

    colours = {"mapped": "green", "ignored": "dim", "unsupported": "yellow"}
    table = Table(title=f"{TOOL_NAMES[imported.tool]} recipe → sftlab", show_lines=False)
    for column in ("key", "status", "sftlab key", "why"):
        table.add_column(column, overflow="fold")
    for item in imported.report:
        table.add_row(Text(item.key), Text(item.status, style=colours[item.status]), Text(item.to or ""),
                      Text(item.why))
    console.print(table)
