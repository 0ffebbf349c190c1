"""Files → Examples, with the data report: every row read is accounted for as converted, rejected (bad input) or
dropped (no trained tokens left), with reasons and row numbers. Packing the examples into rows is the step after
(`pack_examples`), taken by the caller that packs (a training run with `packing: true`, after its eval split)."""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from sftlab.config.data import DataSettings
from sftlab.config.train import DatasetSpec
from sftlab.data.conversation import Conversation
from sftlab.data.encode import Encoder
from sftlab.data import encode_cache
from sftlab.data.example import Encoded, Example
from sftlab.data.load import Reject, load_conversations, write_rejects
from sftlab.data.mapping import RowMapping, from_spec
from sftlab.data.mixture import mix, mixture_problem, shares
from sftlab.data.packing import PackedRow, pack, packing_efficiency
from sftlab.data.templates import ChatTemplate, system_prompt_line, system_prompt_use, template_for
from sftlab.errors import SftlabError
from sftlab.files import write_text

log = logging.getLogger("sftlab")


# Conversations → (the ones kept, one {source, row, reasons} per removed row): the `clean` option,
# built by sftlab.quality.clean.cleaner from the names of data checks.
Cleaner = Callable[[list[Conversation]], tuple[list[Conversation], list[dict[str, Any]]]]


@dataclass
class Source:
    """One input file, its sampling weight when several are mixed, and its own column and role names."""

    path: str
    format: str | None = None
    weight: float | None = None
    mapping: RowMapping = field(default_factory=RowMapping)

    @classmethod
    def of(cls, spec: DatasetSpec) -> "Source":
        """A config's `datasets` entry as a Source."""
        return cls(spec.path, spec.format, spec.weight, from_spec(spec.columns, spec.message_keys, spec.roles))


@dataclass
class DataReport:
    files: list[dict[str, Any]] = field(default_factory=list)
    rows_read: int = 0
    converted: int = 0
    rejected: list[Reject] = field(default_factory=list)
    encoded: Encoded = field(default_factory=Encoded)
    examples: int = 0
    tokens: int = 0
    trained_tokens: int = 0
    packed_rows: int | None = None
    packing_efficiency: float | None = None
    mixture: dict[str, int] | None = None  # examples taken from each file when weights mix them
    mixture_target: dict[str, float] | None = None  # each file's share by weight
    # Rows removed by the data checks named in `clean` (source, row, reasons).
    cleaned: list[dict[str, Any]] = field(default_factory=list)
    # Set by a training run that holds some examples out for evaluation.
    train_examples: int | None = None
    eval_examples: int | None = None
    # Chat markers added to the tokenizer as new special tokens (token → id), for a base model.
    added_tokens: dict[str, int] = field(default_factory=dict)
    # The system prompt that conversations without a system message were given (templates.system_prompt_use).
    system_prompt: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        enc = self.encoded
        return {
            "files": self.files,
            "rows_read": self.rows_read,
            "converted": self.converted,
            "rejected": len(self.rejected),
            "rejected_reasons": dict(Counter(_reason_kind(r.reason) for r in self.rejected)),
            "rejected_rows": [{"source": r.source, "row": r.row, "reason": r.reason} for r in self.rejected],
            "cleaned": len(self.cleaned),
            "cleaned_reasons": dict(Counter(r["check"] for c in self.cleaned for r in c["reasons"])),
            "cleaned_rows": self.cleaned,
            "dropped": len(enc.dropped),
            "dropped_reasons": enc.drop_reasons(),
            "dropped_rows": [d.to_dict() for d in enc.dropped],
            "split_conversations": enc.split_conversations,
            "split_examples": enc.split_examples,
            "split_extra_tokens": enc.split_extra_tokens,
            "truncated": enc.truncated,
            "tools_ignored": enc.tools_ignored,
            "mixture": self.mixture,
            "mixture_share": ({p: n / max(1, sum(self.mixture.values())) for p, n in self.mixture.items()}
                              if self.mixture else None),
            "mixture_target": self.mixture_target,
            "examples": self.examples,
            "tokens": self.tokens,
            "trained_tokens": self.trained_tokens,
            "trained_token_fraction": (self.trained_tokens / self.tokens) if self.tokens else 0.0,
            "packed_rows": self.packed_rows,
            "packing_efficiency": self.packing_efficiency,
            "train_examples": self.train_examples,
            "eval_examples": self.eval_examples,
            "added_tokens": self.added_tokens,
            "system_prompt": self.system_prompt,
        }

    def summary(self, limit: int | None = None) -> dict[str, object]:
        """The one-line counts `sftlab inspect` prints (`limit`: the --limit that was given)."""
        d = self.to_dict()
        out: dict[str, object] = {
            "rows": d["rows_read"] if limit is None or limit >= d["converted"] else f"{limit} (--limit) of {d['rows_read']}",
            "examples": d["examples"],
            "tokens": d["tokens"],
            "trained tokens": f"{d['trained_tokens']} ({d['trained_token_fraction']:.1%})",
            "rejected": d["rejected"],
            "dropped": d["dropped"],
        }
        if d["split_conversations"]:
            out["split per turn (template rewrites history)"] = (
                f"{d['split_conversations']} conversations → {d['split_examples']} examples, "
                f"+{d['split_extra_tokens']} tokens")
        if d["truncated"]:
            out["truncated"] = d["truncated"]
        if d.get("cleaned"):
            out["cleaned"] = f"{d['cleaned']} ({', '.join(f'{k} {v}' for k, v in d['cleaned_reasons'].items())})"
        return out

    def write(self, path: str | Path) -> None:
        write_text(path, json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n")


def _reason_kind(reason: str) -> str:
    """A reject's reason without what is particular to its row (field, line, column, byte), for counting."""
    if reason.startswith("field '"):
        reason = reason.split("': ", 1)[-1]
    return re.sub(r" on line \d+(, column \d+)?| \(byte \d+(, line \d+| of line \d+)\)", "", reason)


def load_sources(
    sources: Sequence[Source],
    *,
    on_error: str = "raise",
    require_assistant: bool = True,
    seed: int = 0,
    clean: Cleaner | None = None,
    replacement: bool = False,
    total: int | None = None,
) -> tuple[list[Conversation], DataReport]:
    """Read and convert every source; let `clean` remove rows (over all sources together, before
    mixing, so a source weighted up is not taken for duplicates of itself); mix them by weight when
    weights are given."""
    problem = mixture_problem([s.weight for s in sources], total, replacement)
    if problem:
        raise SftlabError(problem)
    report = DataReport()
    per_source: list[list[Conversation]] = []
    for src in sources:
        loaded = load_conversations(src.path, src.format, on_error=on_error, require_assistant=require_assistant,
                                    mapping=src.mapping)
        report.files.append(
            {"path": src.path, "format": loaded.format, "rows": loaded.rows, "converted": len(loaded.conversations),
             "rejected": len(loaded.rejects), **({"mapping": src.mapping.to_dict()} if src.mapping else {})}
        )
        report.rows_read += loaded.rows
        report.converted += len(loaded.conversations)
        report.rejected += loaded.rejects
        per_source.append(loaded.conversations)
    if clean is not None:
        kept, report.cleaned = clean([c for group in per_source for c in group])
        keep = {id(c) for c in kept}
        per_source = [[c for c in group if id(c) in keep] for group in per_source]
    # Weights mix several files; one weighted file is mixed only when a mixture key asks it to (sampled or
    # repeated to mixture_examples, or drawn with replacement): alone and with neither, mixing would only shuffle.
    if any(s.weight is not None for s in sources) and (len(sources) > 1 or total is not None or replacement):
        weights = [1.0 if s.weight is None else s.weight for s in sources]  # an entry without weight counts 1
        conversations, report.mixture = mix(per_source, weights, [s.path for s in sources], seed,
                                            replacement=replacement, total=total)
        report.mixture_target = dict(zip([s.path for s in sources], shares(weights)))
    else:
        conversations = [c for group in per_source for c in group]
    return conversations, report


def mixture_summary(report: DataReport, sources: Sequence[Source]) -> str | None:
    """One line saying what the dataset weights did: each file's rows taken of those it has, and its share
    (None when there was no mixing)."""
    if not report.mixture:
        return None
    converted = {f["path"]: f["converted"] for f in report.files}
    total = sum(report.mixture.values()) or 1
    parts = []
    for src in sources:
        taken, has = report.mixture.get(src.path, 0), converted.get(src.path, 0)
        how = "repeated" if taken > has else "sampled" if taken < has else "all"
        weight = "1 (no weight given)" if src.weight is None else f"{src.weight:g}"
        parts.append(f"{src.path}: {taken} of {has} rows ({how}, weight {weight}, {taken / total:.0%})")
    return "mixture — weights are shares of the examples: " + "; ".join(parts)


def chat_template(settings: DataSettings, tokenizer: Any, conversations: Sequence[Conversation],
                  given: ChatTemplate | None = None) -> ChatTemplate | None:
    """The template these conversations are encoded with: `given` as it is (resolved by the caller, a run's, with
    its default system prompt and template options applied already), else settings.template resolved with
    settings.default_system and settings.template_kwargs applied; None when every conversation is plain text
    and none is given. Training, inspect, data check and clean resolve it here, so each applies them once."""
    if given is not None:
        return given
    return template_for(settings.template, tokenizer, conversations, settings.default_system, settings.template_kwargs)


def build_examples(
    sources: Sequence[Source],
    tokenizer: Any,
    settings: DataSettings | None = None,
    *,
    template: ChatTemplate | None = None,
    clean: Cleaner | None = None,
    rejects_path: str | Path | None = None,
    cache: Path | None = None,
    say_system: bool = True,
    parts: bool = False,
) -> tuple[list[Example], DataReport]:
    """The whole data flow: files → Conversations → Examples and the report, as `settings` (the data keys of a
    config; default: their defaults) say. `settings.packing` is the caller's step after this one
    (`pack_examples`): a run packs after holding examples out for evaluation.

    `template`: a template resolved already (a run's), used as it is in place of settings.template,
    settings.default_system and settings.template_kwargs (see chat_template). `clean`: the data checks of
    settings.clean as a function (sftlab.quality.clean.cleaner).
    With `cache` (a folder), the encoded examples and the report are kept there under a key made of everything
    that determines them (the files' contents, the tokenizer, the template and settings.cache_key()); a run with
    the same key reads them back instead of loading and encoding again. The system prompt conversations get, if
    any, is logged in one line (unless `say_system` is false) and kept in the report. `parts`: each example says
    which tokens are reasoning, answer, tool call and tool result (Example.parts, for inspect's view; never cached)."""
    if parts:
        cache = None
    settings = settings if settings is not None else DataSettings()
    key = None
    if cache is not None:
        key = encode_cache.cache_key(sources, tokenizer, template if template is not None else settings.template,
                                     settings.cache_key())
        stored = encode_cache.read_cached(cache / f"{key}.pkl")
        if stored is not None:
            log.info("encoded examples reused from %s", cache / f"{key}.pkl")
            examples, report = stored
            if say_system and report.system_prompt:
                log.info("%s", system_prompt_line(report.system_prompt))
            return _account(examples, report, settings, rejects_path)
    conversations, report = load_sources(
        sources, on_error=settings.on_error, require_assistant=settings.train_on != "all", seed=settings.seed,
        clean=clean, replacement=settings.mixture_replacement, total=settings.mixture_examples,
    )
    if settings.limit is not None:
        conversations = conversations[:settings.limit]
    chat = chat_template(settings, tokenizer, conversations, template)
    report.system_prompt = system_prompt_use(chat, conversations)
    if say_system and report.system_prompt:
        log.info("%s", system_prompt_line(report.system_prompt))
    encoder = Encoder(tokenizer, chat, max_length=settings.max_length, train_on=settings.train_on,
                      escape=settings.escape_special_tokens, train_reasoning=settings.train_reasoning, parts=parts)
    report.encoded = encoder.encode(conversations, num_proc=settings.num_proc)
    if cache is not None and report.encoded.examples:
        encode_cache.write_cached(cache / f"{key}.pkl", (report.encoded.examples, report))
    return _account(report.encoded.examples, report, settings, rejects_path)


def _account(examples: list[Example], report: DataReport, settings: DataSettings,
             rejects_path: str | Path | None) -> tuple[list[Example], DataReport]:
    if rejects_path is not None and settings.on_error == "skip":
        # Every row that does not become an example is findable here: bad input, and rows whose trained
        # tokens were all lost in encoding (truncated away, empty answer), each with its reason.
        lost = [Reject(d.source, d.row, d.reason, check="dropped") for d in report.encoded.dropped]
        write_rejects(sorted(report.rejected + lost, key=lambda r: (r.source, r.row)), rejects_path)
    report.examples = len(examples)
    report.tokens = sum(len(e) for e in examples)
    report.trained_tokens = sum(e.trained_tokens for e in examples)
    if not examples:
        raise SftlabError(_nothing_left(report))
    return examples, report


def pack_examples(examples: list[Example], max_length: int, report: DataReport) -> list[PackedRow]:
    """The examples packed into rows of max_length; the report gets the rows and their fill."""
    rows = pack(examples, max_length)
    report.packed_rows, report.packing_efficiency = len(rows), packing_efficiency(rows, max_length)
    return rows


def _nothing_left(report: DataReport) -> str:
    d = report.to_dict()
    reasons = {**d["rejected_reasons"], **d["dropped_reasons"],
               **{f"removed by {k}": n for k, n in d["cleaned_reasons"].items()}}
    listed = "; ".join(f"{n}× {r}" for r, n in reasons.items()) or "the input holds no rows"
    lost = [*d["rejected_rows"], *d["dropped_rows"], *d["cleaned_rows"]]
    first = min(lost, key=lambda r: (str(r["source"]), r["row"]), default=None)
    where = f"; the first is {first['source']}, row {first['row']}" if first else ""
    return f"no example left to train on out of {report.rows_read} rows ({listed}{where})"
