"""`sftlab data check`: read the files, run the checks, gather the statistics."""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import random
import sys
import time
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from sftlab.config.data import DataSettings
from sftlab.data.encode import Encoder
from sftlab.data.example import Example
from sftlab.data.pipeline import chat_template
from sftlab.data.templates import ChatTemplate, system_prompt_line, system_prompt_use
from sftlab.defaults import MAX_LENGTH
from sftlab.errors import SftlabError
from sftlab.forked import can_fork, forked
from sftlab.progress import Phase
from sftlab.quality import checks as C
from sftlab.quality import stats as S
from sftlab.quality.rows import Row, read_files

log = logging.getLogger("sftlab")

_ENCODE_CHUNK = 2000


@dataclass
class CheckResult:
    rows: list[Row]
    formats: dict[str, str]
    findings: list[C.Finding]
    stats: dict[str, Any] = field(default_factory=dict)
    lengths: dict[tuple[str, int], int] = field(default_factory=dict)  # longest example per row, in tokens
    tokenizer: Any = None
    template: Any = None  # the ChatTemplate the rows were encoded with (None: plain text only)
    settings: DataSettings = field(default_factory=DataSettings)  # the data keys they were encoded as

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": len(self.rows),
            "findings": [f.to_dict() for f in self.findings if f.hits],
            "stats": self.stats,
        }


def reasons(findings: Sequence[C.Finding]) -> dict[tuple[str, int], list[dict[str, Any]]]:
    """Every flagged row → the checks that flagged it, with their details."""
    out: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for f in findings:
        for h in f.hits:
            out.setdefault((h.file, h.row), []).append({"check": f.check, **h.detail})
    return out


class Progress:
    """Progress on stderr, one stage after another: on a terminal a bar where the amount of work is known, else a
    running clock; piped, a counted stage that goes on says how far it is in lines (sftlab.progress.Phase); silent
    when disabled."""

    def __init__(self, enabled: bool, console: Any = None):
        # Bars only on a terminal: redirected, a transient bar leaves blank lines in the log.
        self.console = console
        self.enabled = enabled
        self.bars = enabled and (console.is_terminal if console is not None else sys.stderr.isatty())

    @contextmanager
    def step(self, description: str, total: int | None, unit: str = "rows") -> Iterator[Callable[[int], None]]:
        """One stage; `advance(n)` counts n of `total` `unit` done (None: a stage without a count)."""
        if not self.enabled or (not self.bars and total is None):
            yield lambda n: None
            return
        if not self.bars:
            with Phase(description, total, unit) as phase:
                yield phase.advance
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeElapsedColumn

        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
        with Bar(*(columns if total is not None else [columns[0], columns[-1]]),
                 console=self.console or Console(stderr=True), transient=True) as bar:
            task = bar.add_task(description, total=total)
            yield lambda n: bar.advance(task, n)

    def stage(self, description: str) -> Any:
        """A stage without a count: its name and a running clock."""
        return self.step(description, None)


class _Counted:
    """A Progress for a forked worker: what it counts goes to a shared counter the parent shows."""

    def __init__(self, counter: Any):
        self.counter = counter

    @contextmanager
    def step(self, description: str, total: int | None, unit: str = "rows") -> Iterator[Callable[[int], None]]:
        def advance(n: int) -> None:
            self.counter.value += n

        yield advance


def run_checks(
    rows: Sequence[Row],
    checks: Sequence[str] = C.CHECKS,
    *,
    lengths: dict[tuple[str, int], int] | None = None,
    max_length: int = MAX_LENGTH,
    threshold: float = C.NEAR_DUPLICATE_THRESHOLD,
    progress: Progress | None = None,
    tokenizer: Any = None,
) -> list[C.Finding]:
    """The findings of the chosen checks, in the order of CHECKS."""
    bad = C.unknown_checks(checks)
    if bad:
        raise SftlabError(f"unknown check '{bad[0]}'; choose from {', '.join(C.CHECKS)}")
    progress = progress or Progress(False)
    found: dict[str, C.Finding] = {}
    with progress.stage(f"checks of {len(rows):,} rows"):
        if "invalid_row" in checks:
            found["invalid_row"] = C.invalid_rows(rows)
        found.update(C.row_findings(rows, checks))
        valid = [r for r in rows if r.conversation is not None]
        dedupe = "exact_duplicate" in checks or "near_duplicate" in checks
        exact, firsts = C.exact_duplicates(valid) if dedupe else (None, [])
    if "exact_duplicate" in checks:
        found["exact_duplicate"] = exact
    if "near_duplicate" in checks:
        with progress.step("near duplicates (MinHash LSH)", len(firsts)) as advance:
            found["near_duplicate"] = C.near_duplicates(firsts, threshold, advance)
    if "too_long" in checks and lengths is not None:
        found["too_long"] = C.too_long(valid, lengths, max_length)
    if "special_token_text" in checks and tokenizer is not None:
        from sftlab.data.tokenize import TokenizerView

        found["special_token_text"] = C.special_token_text(valid, TokenizerView(tokenizer))
    return [found[name] for name in C.CHECKS if name in found]


def measuring_encoder(tokenizer: Any, chat: ChatTemplate | None, settings: DataSettings) -> Encoder:
    """An Encoder that makes examples as training with these settings would (template, train_on, escaping,
    reasoning), never truncated: a row's full length is what max_length is checked against."""
    return Encoder(tokenizer, chat, max_length=10**9, train_on=settings.train_on,
                   escape=settings.escape_special_tokens, train_reasoning=settings.train_reasoning)


def encode_lengths(
    rows: Sequence[Row], tokenizer: Any, chat: ChatTemplate | None, settings: DataSettings, progress: Progress
) -> tuple[dict[tuple[str, int], int], dict[tuple[str, int], tuple[int, int]]]:
    """Each row encoded with `chat` (resolved: pipeline.chat_template) as training with `settings` would, never
    truncated: the longest example per row (what max_length must hold) and (prompt, answer) tokens per row, where
    the answer tokens are the trained ones."""
    convs = [r.conversation for r in rows if r.conversation is not None]
    encoder = measuring_encoder(tokenizer, chat, settings)
    longest: dict[tuple[str, int], int] = {}
    sizes: dict[tuple[str, int], tuple[int, int]] = {}
    with progress.step("tokenizing with the model's template", len(convs), "conversations") as advance:
        for start in range(0, len(convs), _ENCODE_CHUNK):
            chunk = convs[start : start + _ENCODE_CHUNK]
            for ex in encoder.encode(chunk).examples:
                key, trained = (ex.source, ex.row), ex.trained_tokens
                longest[key] = max(longest.get(key, 0), len(ex))
                prompt, answer = sizes.get(key, (0, 0))
                sizes[key] = (prompt + len(ex) - trained, answer + trained)
            advance(len(chunk))
    return longest, sizes


def check_data(
    paths: Sequence[str | Path],
    settings: DataSettings | None = None,
    *,
    fmt: str | None = None,
    model: str | None = None,
    tokenizer: Any = None,
    checks: Sequence[str] = C.CHECKS,
    threshold: float = C.NEAR_DUPLICATE_THRESHOLD,
    clusters: bool = True,
    n_clusters: int | None = None,
    cluster_sample: int | None = 5000,
    seed: int = 0,
    show_progress: bool = False,
    progress: Progress | None = None,
    mapping: Any = None,
) -> CheckResult:
    """`settings`: the data keys the rows are measured with, as training reads them (default: their defaults):
    template, default_system and template_kwargs (the lengths count the system prompt and options), train_on,
    escape_special_tokens and train_reasoning (how rows become examples), max_length (too_long). The others
    (on_error, limit, mixing, clean, packing, num_proc, seed) choose or arrange rows for a run: every row is checked.
    `mapping`: the files' own names (data/mapping.py). `progress`: where each stage shows (default: stderr when
    `show_progress` and it is a terminal)."""
    settings = settings if settings is not None else DataSettings()
    if not paths:
        raise SftlabError("no input file given")
    if not 0 < threshold <= 1:
        raise SftlabError(f"the near-duplicate threshold must be in (0, 1], got {threshold}")
    progress = progress or Progress(show_progress)
    lap = _Laps()
    with progress.stage(f"reading {len(paths)} file{'s' if len(paths) > 1 else ''}"):
        rows, formats = read_files(paths, fmt, mapping)
    lap("read")
    if tokenizer is None:
        from sftlab.models import load_tokenizer

        with progress.stage("loading the model's tokenizer"):
            tokenizer = load_tokenizer(model)
    lap("tokenizer")
    convs = [r.conversation for r in rows if r.conversation is not None]
    template = chat_template(settings, tokenizer, convs)
    system = system_prompt_use(template, convs)
    if system:
        log.info("%s", system_prompt_line(system))
    # Tokenizing (Rust, with the template rendered in Python) runs in a forked process while this one
    # runs the checks: on two cores that halves the wall time of a large file.
    counter = mp.get_context("fork").Value("q", 0) if can_fork() else None
    with _background(_lengths_job, rows, tokenizer, template, settings, counter) as job:
        findings = run_checks(rows, [c for c in checks if c != "too_long"], threshold=threshold,
                              progress=progress, tokenizer=tokenizer)
        lap("checks")
        longest, sizes = _wait(job, counter, progress, len(convs))
        lap("tokenizing")
    if "too_long" in checks:
        findings = run_checks(rows, ["too_long"], lengths=longest, max_length=settings.max_length) + findings
        findings.sort(key=lambda f: C.CHECKS.index(f.check))
    valid = [r for r in rows if r.conversation is not None]
    chat = [r for r in valid if not r.conversation.is_text]  # type: ignore[union-attr]
    prompts = [r.prompt for r in chat]
    stats: dict[str, Any] = {
        "files": [{"path": p, "format": f, "rows": sum(r.file == p for r in rows)} for p, f in formats.items()],
        "valid_rows": len(valid),
        "checks": list(checks),
        "near_duplicate_threshold": threshold,
        "max_length": settings.max_length,
        "distinct_1": S.distinct_n(prompts, 1),
        "distinct_2": S.distinct_n(prompts, 2),
        "leading_words": S.leading_words([r.instruction for r in chat]),
        "rows_without_trained_tokens": sum(r.key not in sizes for r in valid),
        "turns": S.distribution([len(r.answers) for r in chat]),
        "prompt_tokens": S.distribution([sizes[r.key][0] for r in valid if r.key in sizes]),
        "answer_tokens": S.distribution([sizes[r.key][1] for r in valid if r.key in sizes]),
        "system_prompt": system,
        "reasoning_and_tools": S.reasoning_and_tools(rows),
    }
    lap("statistics")
    if clusters:
        from sftlab.quality.clusters import cluster, embedding_model_dir, EMBEDDING_PACKAGE

        if embedding_model_dir() is None:
            stats["clusters"] = {"skipped": f"the package {EMBEDDING_PACKAGE} is not installed"}
        else:
            # Embedding runs at roughly 100 prompts/s on two CPU cores: a big file is clustered from a
            # random sample (sizes are then shares of the sample), and the report says so.
            picked = list(range(len(prompts)))
            if cluster_sample and len(prompts) > cluster_sample:
                picked = sorted(random.Random(seed).sample(picked, cluster_sample))
            with progress.step("sentence embeddings of the prompts", len(picked), "prompts") as advance:
                stats["clusters"] = cluster([prompts[i] for i in picked], [chat[i].key for i in picked], n_clusters,
                                            seed, advance)
            if isinstance(stats["clusters"], dict) and "clusters" in stats["clusters"]:
                stats["clusters"]["sampled"] = len(picked) if len(picked) < len(prompts) else None
    else:
        stats["clusters"] = {"skipped": "disabled (--no-clusters)"}
    lap("clusters")
    stats["seconds"] = lap.seconds()
    return CheckResult(rows, formats, findings, stats, longest, tokenizer, template, settings)


class _Laps:
    """The wall time of consecutive stages, each from the end of the one before: they add up to the total.
    (Tokenizing runs alongside the checks: its stage is only the wait for it after they are done.)"""

    def __init__(self) -> None:
        self.last = time.perf_counter()
        self.laps: dict[str, float] = {}

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self.last, 2)
        self.last = now

    def seconds(self) -> dict[str, float]:
        """Each stage's seconds (rounded to 0.01 s) and `total`, their sum."""
        return {**self.laps, "total": round(sum(self.laps.values()), 2)}


def _wait(job: Future, counter: Any, progress: Progress, total: int) -> Any:
    """The background tokenizing's result, with a bar of the conversations it has done so far."""
    from concurrent.futures import TimeoutError as Pending

    with progress.step("tokenizing with the model's template", total, "conversations") as advance:
        shown = 0
        while True:
            try:
                result = job.result(timeout=0.2 if progress.enabled else None)
            except Pending:
                result = None
            if counter is not None:
                advance(counter.value - shown)
                shown = counter.value
            if result is not None:
                return result


def sample_examples(result: CheckResult, n: int = 3, seed: int = 0) -> list[Example]:
    """A few encoded rows for the token view: flagged rows first (what a reader wants to see), then
    random others; only rows short enough to take in at a glance."""
    fits = [r for r in result.rows if r.conversation is not None and 0 < result.lengths.get(r.key, 0) <= 600]
    flagged = set(reasons(result.findings))
    first = [r for r in fits if r.key in flagged][: max(1, n // 2)]
    rest = [r for r in fits if r.key not in flagged]
    random.Random(seed).shuffle(rest)
    picked = (first + rest)[:n]
    if not picked or result.tokenizer is None:
        return []
    convs = [r.conversation for r in picked]
    return measuring_encoder(result.tokenizer, result.template, result.settings).encode(convs).examples


def _lengths_job(rows: Sequence[Row], tokenizer: Any, chat: ChatTemplate | None, settings: DataSettings,
                 counter: Any) -> tuple[dict, dict]:
    return encode_lengths(rows, tokenizer, chat, settings, _Counted(counter) if counter is not None else Progress(False))


@contextmanager
def _background(fn: Callable[..., Any], *args: Any) -> Iterator[Future]:
    """`fn(*args)` in a forked child process (it has the rows without pickling them), as a Future; with one core,
    in this process."""
    if (os.cpu_count() or 1) < 2:
        done: Future = Future()
        done.set_result(fn(*args))
        yield done
        return
    with forked(1, fn, *args) as submit:
        yield submit()


def print_check(data: dict[str, Any], out: Any) -> None:
    """The terminal view of a data check (CheckResult.to_dict())."""
    from rich.markup import escape
    from rich.table import Table

    stats = data["stats"]
    flagged = {(f, r) for x in data["findings"] for f, r in zip(x["files"], x["rows"])}
    out.print(f"[bold]{data['rows']} rows[/] in {len(stats['files'])} file(s) · {stats['valid_rows']} valid · "
              f"{len(flagged)} flagged")
    table = Table("check", "rows", "first rows", "example")
    several = len(stats["files"]) > 1
    for f in data["findings"]:
        example = f["details"][0]["reason"]
        # With several files, each row number says which file it is in.
        rows = [f"{Path(file).name}:{row}" if several else str(row) for file, row in zip(f["files"], f["rows"])]
        shown = ", ".join(rows[:8]) + (" …" if len(rows) > 8 else "")
        table.add_row(f["check"], str(len(f["rows"])), shown, example[:70])
    if data["findings"]:
        out.print(table)
    else:
        out.print("[green]no findings[/]")
    p, a = stats["prompt_tokens"], stats["answer_tokens"]
    if p.get("count"):
        out.print(f"prompt tokens: median {p['p50']}, p90 {p['p90']}, max {p['max']} · "
                  f"answer tokens: median {a['p50']}, p90 {a['p90']}, max {a['max']}")
    out.print(f"distinct-1 {stats['distinct_1']} · distinct-2 {stats['distinct_2']} · leading words: "
              + ", ".join(f"{w['word']} {w['fraction']:.0%}" for w in stats["leading_words"][:8]))
    rt = stats.get("reasoning_and_tools")
    if rt and (rt["with_reasoning"] or rt["empty_traces"] or rt["unclosed_traces"] or rt["tool_calls"]):
        out.print(f"reasoning: {rt['with_reasoning']} of {rt['conversations']} conversations "
                  f"({rt['reasoning_share']:.0%}) · {rt['empty_traces']} empty traces · "
                  f"{len(rt['unclosed_traces'])} unclosed · tool calls: {rt['tool_calls']}, "
                  f"{len(rt['unknown_tool'])} to a function not in the row's tools, "
                  f"{len(rt['missing_required_arguments'])} missing required arguments")
        for problem in (rt["unknown_tool"] + rt["missing_required_arguments"])[:5]:
            what = (f"missing {', '.join(problem['missing'])}" if "missing" in problem
                    else f"not among the row's tools ({', '.join(problem['tools']) or 'none'})")
            out.print(escape(f"  {Path(problem['file']).name}, row {problem['row']}: call to {problem['name']} {what}"))
    c = stats.get("clusters", {})
    if "clusters" in c:
        sample = f" of a sample of {c['sampled']}" if c.get("sampled") else ""
        out.print(f"{c['k']} clusters{sample} (embeddings {c['embedding_seconds']} s); largest: "
                  + "; ".join(f"{x['fraction']:.0%} {', '.join(x['top_words'][:3])}" for x in c["clusters"][:4]))
    elif "skipped" in c:
        out.print(f"clusters: {c['skipped']}")
