"""`sftlab data clean`: every input row lands in exactly one of two files, kept or rejected with its
reasons; and the same cleaning on conversations already loaded (the `clean:` training option)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from sftlab import jsonsafe
from sftlab.config.data import DataSettings
from sftlab.data.conversation import Conversation
from sftlab.data.pipeline import Cleaner, chat_template
from sftlab.data.templates import ChatTemplate
from sftlab.errors import SftlabError
from sftlab.files import atomic_writer, require_output_file
from sftlab.quality import checks as C
from sftlab.quality.rows import Row, read_files
from sftlab.quality.run import Progress, encode_lengths, reasons, run_checks

# invalid_row is not optional: a row that is not a conversation cannot be kept. special_token_text is
# reported, not removed by default: training keeps such text as text.
DEFAULT_DROP = tuple(c for c in C.CHECKS if c not in ("invalid_row", "special_token_text"))
NEEDS_TOKENIZER = ("too_long", "special_token_text")


@dataclass
class Cleaned:
    kept: list[Row] = field(default_factory=list)
    removed: list[tuple[Row, list[dict[str, Any]]]] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for _, why in self.removed:
            for r in why:
                out[r["check"]] = out.get(r["check"], 0) + 1
        return out


def parse_drop(value: str | Sequence[str] | None, option: str = "--drop") -> list[str]:
    names = DEFAULT_DROP if value is None else value.split(",") if isinstance(value, str) else value
    names = [n.strip() for n in names if n.strip()]
    bad = C.unknown_checks(names)
    if bad:
        raise SftlabError(f"unknown check '{bad[0]}' in {option}; choose from {', '.join(C.CHECKS)}")
    return names


def clean_rows(
    rows: Sequence[Row],
    drop: Sequence[str],
    settings: DataSettings | None = None,
    *,
    tokenizer: Any = None,
    template: ChatTemplate | None = None,
    threshold: float = C.NEAR_DUPLICATE_THRESHOLD,
    progress: Progress | None = None,
) -> Cleaned:
    """The rows the checks in `drop` pass, and the others with their reasons. `settings`: the data keys rows are
    measured with for too_long, as check_data reads them; `template`: a template resolved already (a run's), used
    in place of settings' (pipeline.chat_template)."""
    settings = settings if settings is not None else DataSettings()
    progress = progress or Progress(False)
    checks = ["invalid_row", *[d for d in drop if d != "invalid_row"]]
    lengths = None
    if "too_long" in checks:
        if tokenizer is None:
            raise SftlabError("the too_long check needs the model's tokenizer")
        convs = [r.conversation for r in rows if r.conversation is not None]
        chat = chat_template(settings, tokenizer, convs, template)
        lengths, _ = encode_lengths(rows, tokenizer, chat, settings, progress)
    if "special_token_text" in checks and tokenizer is None:
        raise SftlabError("the special_token_text check needs the model's tokenizer")
    findings = run_checks(rows, checks, lengths=lengths, max_length=settings.max_length, threshold=threshold,
                          progress=progress, tokenizer=tokenizer)
    flagged = reasons(findings)
    out = Cleaned()
    for row in rows:
        why = flagged.get(row.key)
        if why:
            out.removed.append((row, why))
        else:
            out.kept.append(row)
    return out


def clean_files(
    paths: Sequence[str | Path],
    out: str | Path,
    rejects: str | Path,
    drop: Sequence[str],
    settings: DataSettings | None = None,
    *,
    fmt: str | None = None,
    model: str | None = None,
    threshold: float = C.NEAR_DUPLICATE_THRESHOLD,
    show_progress: bool = False,
    mapping: Any = None,
) -> Cleaned:
    """`sftlab data clean`: the rows of `paths` split into `out` (kept, as read) and `rejects` (with reasons);
    `settings` as clean_rows reads them."""
    rows, formats = read_files(paths, fmt, mapping)
    if len(set(formats.values())) > 1:
        listed = ", ".join(f"{p} is {f}" for p, f in formats.items())
        raise SftlabError(f"data clean writes one file, but the inputs have different formats ({listed}); clean them one at a time")
    if Path(out).resolve() in {Path(p).resolve() for p in paths} or Path(rejects).resolve() == Path(out).resolve():
        raise SftlabError("--out and --rejects must be new files, different from each other and from the input")
    require_output_file(out, "--out")
    require_output_file(rejects, "--rejects")
    tokenizer = None
    if any(c in drop for c in NEEDS_TOKENIZER):
        from sftlab.models import load_tokenizer

        tokenizer = load_tokenizer(model)
    result = clean_rows(rows, drop, settings, tokenizer=tokenizer, threshold=threshold,
                        progress=Progress(show_progress))
    with atomic_writer(out, "--out") as f:
        for row in result.kept:
            f.write(jsonsafe.dumps(row.record, ensure_ascii=False, default=str) + "\n")  # (line-safe JSONL)
    with atomic_writer(rejects, "--rejects") as f:
        for row, why in result.removed:
            f.write(jsonsafe.dumps({"file": row.file, "row": row.row, "reasons": why, "record": row.record},
                               ensure_ascii=False, default=str) + "\n")
    return result


def cleaner(drop: Sequence[str], settings: DataSettings | None = None, *, tokenizer: Any = None,
            template: ChatTemplate | None = None) -> Cleaner:
    """The `clean` step of the data pipeline for the checks named in `drop`, rows measured as clean_rows does."""
    names = parse_drop(list(drop))
    return lambda conversations: clean_conversations(
        conversations, names, settings, tokenizer=tokenizer, template=template
    )


def clean_conversations(
    conversations: Sequence[Conversation],
    drop: Sequence[str],
    settings: DataSettings | None = None,
    *,
    tokenizer: Any = None,
    template: ChatTemplate | None = None,
) -> tuple[list[Conversation], list[dict[str, Any]]]:
    """The training option `clean: [checks]`: the conversations that pass, and one entry per removed
    row (source, row, reasons) for the data report."""
    rows = [Row(conv.source, conv.row, None, conv) for conv in conversations]
    result = clean_rows(rows, parse_drop(list(drop)), settings, tokenizer=tokenizer, template=template)
    removed = [
        {"source": row.file, "row": row.row, "reasons": [
            {k: v for k, v in r.items() if k != "snippet"} for r in why
        ]}
        for row, why in result.removed
    ]
    return [r.conversation for r in result.kept], removed  # type: ignore[misc]
