"""`sftlab data check`: read the files, run the checks, gather the statistics."""

from __future__ import annotations

import random
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from sftlab.data.encode import Encoder, Example
from sftlab.data.templates import ChatTemplate, resolve_template
from sftlab.errors import SftlabError
from sftlab.quality import checks as C
from sftlab.quality import stats as S
from sftlab.quality.rows import Row, read_files

DEFAULT_MAX_LENGTH = 4096
_ENCODE_CHUNK = 2000


@dataclass
class CheckResult:
    rows: list[Row]
    formats: dict[str, str]
    findings: list[C.Finding]
    stats: dict[str, Any] = field(default_factory=dict)
    examples: list[Example] = field(default_factory=list)  # encoded rows (for the token view)
    tokenizer: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": len(self.rows),
            "findings": [f.to_dict() for f in self.findings if f.hits],
            "stats": self.stats,
        }

    def reasons(self) -> dict[tuple[str, int], list[dict[str, Any]]]:
        """Every flagged row → the checks that flagged it, with their details."""
        out: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for f in self.findings:
            for h in f.hits:
                out.setdefault((h.file, h.row), []).append({"check": f.check, **h.detail})
        return out


class Progress:
    """Progress bars on stderr for the long steps; silent when disabled."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._bar: Any = None

    @contextmanager
    def step(self, description: str, total: int) -> Iterator[Callable[[int], None]]:
        if not self.enabled:
            yield lambda n: None
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeElapsedColumn

        with Bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                 console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task(description, total=total)
            yield lambda n: bar.advance(task, n)


def run_checks(
    rows: Sequence[Row],
    checks: Sequence[str] = C.CHECKS,
    *,
    lengths: dict[tuple[str, int], int] | None = None,
    max_length: int = DEFAULT_MAX_LENGTH,
    threshold: float = C.NEAR_DUPLICATE_THRESHOLD,
    progress: Progress | None = None,
    timings: dict[str, float] | None = None,
) -> list[C.Finding]:
    """The findings of the chosen checks, in the order of CHECKS."""
    bad = C.unknown_checks(checks)
    if bad:
        raise SftlabError(f"unknown check '{bad[0]}'; choose from {', '.join(C.CHECKS)}")
    progress = progress or Progress(False)
    timings = timings if timings is not None else {}
    found: dict[str, C.Finding] = {}
    started = time.perf_counter()
    if "invalid_row" in checks:
        found["invalid_row"] = C.invalid_rows(rows)
    found.update(C.row_findings(rows, checks))
    timings["row_checks"] = time.perf_counter() - started
    valid = [r for r in rows if r.conversation is not None]
    if "exact_duplicate" in checks or "near_duplicate" in checks:
        started = time.perf_counter()
        exact, firsts = C.exact_duplicates(valid)
        if "exact_duplicate" in checks:
            found["exact_duplicate"] = exact
        if "near_duplicate" in checks:
            with progress.step("near duplicates (MinHash LSH)", len(firsts)) as advance:
                found["near_duplicate"] = C.near_duplicates(firsts, threshold, advance)
        timings["duplicates"] = time.perf_counter() - started
    if "too_long" in checks and lengths is not None:
        found["too_long"] = C.too_long(valid, lengths, max_length)
    return [found[name] for name in C.CHECKS if name in found]


def encode_lengths(
    rows: Sequence[Row], tokenizer: Any, template: str | None, progress: Progress
) -> tuple[list[Example], dict[tuple[str, int], int], dict[tuple[str, int], tuple[int, int]]]:
    """Each row tokenized with the model's template, never truncated: the encoded examples, the
    longest example per row (what max_length must hold) and (prompt, answer) tokens per row, where the
    answer tokens are the trained ones."""
    convs = [r.conversation for r in rows if r.conversation is not None]
    chat = template if isinstance(template, ChatTemplate) else None
    if chat is None and any(not c.is_text for c in convs):
        chat = resolve_template(template, tokenizer)
    encoder = Encoder(tokenizer, chat, max_length=10**9)
    examples: list[Example] = []
    with progress.step("tokenizing with the model's template", len(convs)) as advance:
        for start in range(0, len(convs), _ENCODE_CHUNK):
            chunk = convs[start : start + _ENCODE_CHUNK]
            examples += encoder.encode(chunk).examples
            advance(len(chunk))
    longest: dict[tuple[str, int], int] = {}
    sizes: dict[tuple[str, int], tuple[int, int]] = {}
    for ex in examples:
        key = (ex.source, ex.row)
        longest[key] = max(longest.get(key, 0), len(ex))
        prompt, answer = sizes.get(key, (0, 0))
        sizes[key] = (prompt + len(ex) - ex.trained_tokens, answer + ex.trained_tokens)
    return examples, longest, sizes


def check_data(
    paths: Sequence[str | Path],
    *,
    fmt: str | None = None,
    model: str | None = None,
    tokenizer: Any = None,
    template: str | None = None,
    max_length: int = DEFAULT_MAX_LENGTH,
    checks: Sequence[str] = C.CHECKS,
    threshold: float = C.NEAR_DUPLICATE_THRESHOLD,
    clusters: bool = True,
    n_clusters: int | None = None,
    seed: int = 0,
    show_progress: bool = False,
) -> CheckResult:
    if not paths:
        raise SftlabError("no input file given")
    if not 0 < threshold <= 1:
        raise SftlabError(f"the near-duplicate threshold must be in (0, 1], got {threshold}")
    progress = Progress(show_progress)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    rows, formats = read_files(paths, fmt)
    timings["read"] = time.perf_counter() - started
    if tokenizer is None:
        from sftlab.models import load_tokenizer

        tokenizer = load_tokenizer(model)
    started = time.perf_counter()
    examples, longest, sizes = encode_lengths(rows, tokenizer, template, progress)
    timings["tokenize"] = time.perf_counter() - started
    findings = run_checks(rows, checks, lengths=longest, max_length=max_length, threshold=threshold,
                          progress=progress, timings=timings)
    valid = [r for r in rows if r.conversation is not None]
    chat = [r for r in valid if not r.conversation.is_text]  # type: ignore[union-attr]
    prompts = [r.prompt for r in chat]
    stats: dict[str, Any] = {
        "files": [{"path": p, "format": f, "rows": sum(r.file == p for r in rows)} for p, f in formats.items()],
        "valid_rows": len(valid),
        "checks": list(checks),
        "near_duplicate_threshold": threshold,
        "max_length": max_length,
        "distinct_1": S.distinct_n(prompts, 1),
        "distinct_2": S.distinct_n(prompts, 2),
        "leading_words": S.leading_words([r.instruction for r in chat]),
        "rows_without_trained_tokens": sum(r.key not in sizes for r in valid),
        "turns": S.distribution([len(r.answers) for r in chat]),
        "prompt_tokens": S.distribution([sizes[r.key][0] for r in valid if r.key in sizes]),
        "answer_tokens": S.distribution([sizes[r.key][1] for r in valid if r.key in sizes]),
    }
    if clusters:
        from sftlab.quality.clusters import cluster, embedding_model_dir, EMBEDDING_PACKAGE

        if embedding_model_dir() is None:
            stats["clusters"] = {"skipped": f"the package {EMBEDDING_PACKAGE} is not installed"}
        else:
            with progress.step("sentence embeddings of the prompts", len(prompts)) as advance:
                stats["clusters"] = cluster(prompts, [r.key for r in chat], n_clusters, seed, advance)
    else:
        stats["clusters"] = {"skipped": "disabled (--no-clusters)"}
    stats["seconds"] = {k: round(v, 2) for k, v in timings.items()}
    return CheckResult(rows, formats, findings, stats, examples, tokenizer)


def sample_examples(result: CheckResult, n: int = 3, seed: int = 0) -> list[Example]:
    """A few encoded rows for the token view: flagged rows first (what a reader wants to see), then
    random others."""
    by_key: dict[tuple[str, int], Example] = {}
    for ex in result.examples:
        if len(ex) <= 600:  # a view a reader can take in
            by_key.setdefault((ex.source, ex.row), ex)
    flagged = [k for k in result.reasons() if k in by_key]
    rest = [k for k in by_key if k not in set(flagged)]
    random.Random(seed).shuffle(rest)
    picked = (flagged[: max(1, n // 2)] + rest)[:n]
    return [by_key[k] for k in picked]
