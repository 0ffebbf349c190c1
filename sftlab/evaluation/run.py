"""`sftlab eval`: held-out loss, generations saved to disk, reference metrics, judge scores, mask probe.

OUT/ gets responses.jsonl (prompt, reference, response, row; generated once and reused while model,
data and generation settings stay the same), summary.json, judge_scores.png when a judge ran,
probe.jsonl with --probe, and baseline/ with the same for --baseline.
"""

from __future__ import annotations

import logging
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from sftlab.data.load import load_conversations
from sftlab.data.mapping import RowMapping
from sftlab.defaults import EVAL_MAX_LENGTH
from sftlab import jsonsafe
from sftlab.errors import SftlabError, echo_path
from sftlab.files import output_folder_problem, require_apart, require_input, require_output_dir, write_text
from sftlab.config.checks import require
from sftlab.evaluation.judge import Judge, summarize
from sftlab.evaluation.metrics import lcs_length, bleu, exact_match, rouge_l, units

if TYPE_CHECKING:
    from sftlab.inference.generate import Generator

log = logging.getLogger("sftlab")


@dataclass
class EvalItem:
    row: int
    source: str
    messages: list[dict[str, Any]]  # the conversation up to its last assistant turn
    reference: str
    input: str | None = None  # alpaca's input field, for the mask probe

    @property
    def instruction(self) -> str:
        users = [m["content"] for m in self.messages if m["role"] == "user"]
        return users[-1] if users else ""


@dataclass
class EvalOptions:
    fmt: str | None = None
    template: str | None = None
    max_new_tokens: int = 256
    batch_size: int = 8
    max_length: int = EVAL_MAX_LENGTH
    limit: int | None = None
    judge: Judge | None = None
    probe: bool = False
    escape: bool = True  # special-token text in the data stays text (docs/data.md, the escaping contract)
    precision: str = "auto"  # auto | bf16 | fp32, as in training
    default_system: str | None = None  # system prompt of conversations without one (templates.with_default_system)
    template_kwargs: dict[str, Any] | None = None  # the template's options ({enable_thinking: false}), for every render
    mapping: RowMapping = field(default_factory=RowMapping)  # the data file's own names (--columns, --roles …)

    def __post_init__(self) -> None:
        require("max_new_tokens", self.max_new_tokens, "--max-new-tokens")
        require("batch_size", self.batch_size, "--batch-size")
        require("max_length", self.max_length, "--max-length")
        require("limit", self.limit, "--limit")


def eval_items(data: str | Path, fmt: str | None = None, limit: int | None = None,
               mapping: RowMapping | None = None) -> list[EvalItem]:
    loaded = load_conversations(data, fmt, require_assistant=True, mapping=mapping)
    items = []
    for conv in loaded.conversations[:limit]:
        last = conv.assistant_indices[-1]
        prompt = [m.to_template_dict() for m in conv.messages[:last]]
        user = next((m for m in reversed(conv.messages[:last]) if m.role == "user"), None)
        extra = user.instruction_input()[1] if user is not None else None
        items.append(EvalItem(conv.row, conv.source, prompt, conv.messages[last].content, extra or None))
    return items


def held_out_loss(gen: Generator, data: str | Path, options: EvalOptions) -> tuple[float, int]:
    """Mean cross-entropy over every trained token: the same masking and function as training's evaluation."""
    import torch

    from sftlab.config import DataSettings
    from sftlab.data.collate import Collator
    from sftlab.data.pipeline import Source, build_examples
    from sftlab.training.loss import evaluate_loss

    settings = DataSettings(max_length=options.max_length, limit=options.limit, escape_special_tokens=options.escape)
    examples, _ = build_examples([Source(str(data), options.fmt, mapping=options.mapping)], gen.tokenizer, settings, template=gen.chat)
    collate, size = Collator(gen.pad_id), options.batch_size
    batches = (collate([{"input_ids": e.input_ids, "labels": e.labels} for e in examples[i : i + size]])
               for i in range(0, len(examples), size))
    return evaluate_loss(gen.model, batches, device=gen.model.device, autocast_dtype=torch.bfloat16 if gen.bf16 else None)


def _write_jsonl(path: Path, records: Sequence[dict[str, Any]]) -> None:
    write_text(path, jsonsafe.jsonl(records))  # (line-safe: a U+2028 in an answer stays inside its line)


def _read_responses(file: Path, items: Sequence[EvalItem]) -> list[dict[str, Any]] | None:
    """responses.jsonl as `_responses` wrote it for `items` (one record per item, row for row), or None when it
    is not (damaged, edited, or written for other rows): then it is generated again."""
    try:
        records = [jsonsafe.loads(line) for line in jsonsafe.lines(jsonsafe.read_text(file))]
    except (OSError, ValueError):
        return None
    if len(records) != len(items) or not all(
            isinstance(r, dict) and r.get("row") == it.row and isinstance(r.get("response"), str)
            and isinstance(r.get("prompt"), str) for r, it in zip(records, items)):
        return None
    return records


def _responses(gen: Generator, name: str, items: Sequence[EvalItem], out: Path, data: str,
               options: EvalOptions) -> list[dict[str, Any]]:
    """responses.jsonl, generated once: reused while the weights (by content), the data file (by content) and
    the settings are unchanged. Scores always use the references of the data as it is now."""
    from sftlab.models import fingerprint, model_files

    meta = {"model": name, "bf16": gen.bf16, "model_sha256": fingerprint(model_files(name)), "data": str(data),
            "data_sha256": fingerprint([Path(data)]), "template": options.template, "default_system": options.default_system,
            "template_kwargs": options.template_kwargs,
            "max_new_tokens": options.max_new_tokens, "escape": options.escape, "rows": [it.row for it in items],
            "reasoning_apart": True}  # responses before it held a model's trace in the answer
    meta_file, file = out / "generation.json", out / "responses.jsonl"
    records = _read_responses(file, items) if _same(meta_file, meta) else None
    if records is not None:
        log.info("reusing %s (same weights, data and settings)", file)
        for r, it in zip(records, items):
            r["reference"] = it.reference
        return records
    # The answer is scored (and judged) without the model's reasoning trace; the trace is kept beside it.
    replies = gen.replies([it.messages for it in items], options.max_new_tokens, options.batch_size)
    records = [{"row": it.row, "source": it.source, "prompt": it.instruction, "messages": _plain(it.messages),
                "reference": it.reference, "response": r.content, **({"reasoning": r.reasoning} if r.reasoning else {})}
               for it, r in zip(items, replies)]
    _write_jsonl(file, records)
    write_text(meta_file, jsonsafe.dumps(meta))
    return records


def _same(meta_file: Path, meta: dict[str, Any]) -> bool:
    try:
        return jsonsafe.load(meta_file) == meta
    except (OSError, ValueError):
        return False


def _plain(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages as an OpenAI-style list (role, content, tool calls), without the alpaca fields the template reads."""
    keep = ("role", "content", "tool_calls", "name", "tool_call_id")
    return [{k: m[k] for k in keep if m.get(k) is not None} for m in messages]


def regurgitates(response: str, given_input: str, threshold: float = 0.8) -> bool:
    """Whether the response reproduces (at least `threshold` of) the input text in order."""
    target = units(given_input)
    return bool(target) and lcs_length(target, units(response)) / len(target) >= threshold


def mask_probe(gen: Generator, items: Sequence[EvalItem], out: Path, options: EvalOptions) -> dict[str, Any]:
    """Give the model only the instruction of rows that have an input; count answers that regurgitate it.
    A model trained on prompt tokens (a wrong mask) tends to continue with the input it always saw next."""
    probed = [it for it in items if it.input]
    if not probed:
        return {"rows": 0, "regurgitated": 0, "rate": None}
    prompts = []
    for it in probed:
        msgs = [dict(mm) for mm in it.messages]
        last_user = max(i for i, mm in enumerate(msgs) if mm["role"] == "user")
        instruction = msgs[last_user].get("instruction") or it.instruction.replace(it.input, "").strip()
        msgs[last_user] = {"role": "user", "content": instruction, "instruction": instruction, "input": ""}
        prompts.append(msgs)
    answers = gen.answers(prompts, options.max_new_tokens, options.batch_size)
    flags = [regurgitates(a, it.input) for a, it in zip(answers, probed)]
    _write_jsonl(out / "probe.jsonl", [
        {"row": it.row, "instruction": p[-1]["content"], "input": it.input, "response": a, "regurgitated": f}
        for it, p, a, f in zip(probed, prompts, answers, flags)])
    return {"rows": len(probed), "regurgitated": sum(flags), "rate": sum(flags) / len(probed)}


def evaluate_model(model: str, data: str | Path, out: str | Path, options: EvalOptions) -> dict[str, Any]:
    out = require_output_dir(out, "--out")
    items = eval_items(data, options.fmt, options.limit, options.mapping)
    if not items:
        raise SftlabError(f"{data}: no conversation with an assistant answer to evaluate")
    log.info("evaluating %s on %d conversations of %s", model, len(items), data)
    from sftlab.inference.generate import load_generator

    gen = load_generator(model, options.template, escape=options.escape, precision=options.precision,
                         default_system=options.default_system, template_kwargs=options.template_kwargs)
    loss, tokens = held_out_loss(gen, data, options)
    log.info("held-out loss %.4f over %d trained tokens", loss, tokens)
    records = _responses(gen, model, items, out, str(data), options)
    preds, refs = [r["response"] for r in records], [r["reference"] for r in records]
    summary: dict[str, Any] = {
        "model": model, "data": str(data), "examples": len(records),
        "loss": loss, "perplexity": math.exp(loss) if loss == loss and loss < 700 else None, "loss_tokens": tokens,
        "exact_match": statistics.fmean(exact_match(p, r) for p, r in zip(preds, refs)),
        "rouge_l": statistics.fmean(rouge_l(p, r) for p, r in zip(preds, refs)),
        "bleu": bleu(preds, refs),
    }
    if options.judge is not None:
        log.info("asking the judge about %d answers", len(records))
        verdicts = options.judge.score_all([(r["prompt"], r["reference"], r["response"]) for r in records])
        summary["judge"] = summarize(verdicts, [r["row"] for r in records])
        for r, v in zip(records, verdicts):
            r["judge_score"] = v.score
        _write_jsonl(out / "responses.jsonl", records)
        summary["_scores"] = [v.score for v in verdicts if v.score is not None]
    if options.probe:
        summary["probe"] = mask_probe(gen, items, out, options)
    return summary


def evaluate(model: str, data: str | Path, out: str | Path, options: EvalOptions, baseline: str | None = None) -> dict[str, Any]:
    """Evaluate `model` (and `baseline` on the same data into OUT/baseline); writes summary.json."""
    from sftlab.training.merge import model_reads

    require_input(data, "data file", "any")
    require_apart(out, "--out", [("data file", data)])
    problem = output_folder_problem(out)  # (what --out is, said before the models are looked for)
    if problem:
        raise SftlabError(f"--out {echo_path(out)}: {problem}")
    reads = model_reads(model) + (model_reads(baseline, "baseline model") if baseline is not None else [])
    require_apart(out, "--out", reads)  # (the data was checked above; before anything is written or loaded)
    out = require_output_dir(out, "--out")
    if labelled(model, data):
        summary = evaluate_labels(model, data, out, options)
        if baseline is not None:
            summary["baseline"] = evaluate_labels(baseline, data, out / "baseline", options)
            write_text(out / "summary.json", jsonsafe.dumps(summary, indent=2, ensure_ascii=False) + "\n")
        return summary
    summary = evaluate_model(model, data, out, options)
    scores = {model: summary.pop("_scores", None)}
    if baseline is not None:
        base = evaluate_model(baseline, data, out / "baseline", options)
        scores[baseline] = base.pop("_scores", None)
        summary["baseline"] = base
    if any(s is not None for s in scores.values()):
        plot_scores({k: v for k, v in scores.items() if v is not None}, out / "judge_scores.png")
    write_text(out / "summary.json", jsonsafe.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return summary


def labelled(model: str, data: str | Path) -> bool:
    """Whether `sftlab eval` scores labels: the model has a task head, or the data's rows carry a `label`."""
    from sftlab.evaluation.heads import labelled_data
    from sftlab.models import head_task, model_path

    return head_task(model_path(model)) is not None or labelled_data(data)


def evaluate_labels(model: str, data: str | Path, out: Path, options: EvalOptions) -> dict[str, Any]:
    """A head model on rows of its task, or a generative model's answers to labelled rows (evaluation/heads.py)."""
    from sftlab.evaluation.heads import evaluate_generative_labels, evaluate_head
    from sftlab.models import head_task, model_path

    if options.mapping:
        raise SftlabError(f"{echo_path(data)}: --columns, --message-keys and --roles are for conversations; labelled "
                          "rows are read by their own names (docs/heads.md)")
    path = model_path(model)
    task = head_task(path)
    log.info("evaluating %s on the labels of %s", model, data)
    if task:
        return evaluate_head(path, task, data, out, options, model)
    return evaluate_generative_labels(model, data, out, options)


def plot_scores(scores: dict[str, list[int]], path: Path) -> None:
    from sftlab.training.plot import figure

    with figure(path) as ax:
        ax.hist(list(scores.values()), bins=range(0, 110, 10), label=[Path(k).name or k for k in scores], alpha=0.8)
        ax.set(xlabel="judge score (0-100)", ylabel="responses")
        ax.legend()


def print_summary(summary: dict[str, Any], console: Any) -> None:
    """The terminal table of an eval summary (and its baseline)."""
    from rich.table import Table

    if "accuracy" in summary or "pairwise_accuracy" in summary:
        from sftlab.evaluation.heads import print_label_summary

        for s in [summary] + ([summary["baseline"]] if "baseline" in summary else []):
            print_label_summary(s, console)
        return

    runs = [summary] + ([summary["baseline"]] if "baseline" in summary else [])
    table = Table("metric", *[str(r["model"]) for r in runs])

    def fmt(v: object) -> str:
        return f"{v:.4f}" if isinstance(v, float) else ("—" if v is None else str(v))

    for key in ("loss", "perplexity", "exact_match", "rouge_l", "bleu"):
        table.add_row(key, *[fmt(r.get(key)) for r in runs])
    if "judge" in summary:
        for key in ("mean", "median", "scored", "unscored"):
            table.add_row(f"judge {key}", *[fmt(r.get("judge", {}).get(key)) for r in runs])
    if "probe" in summary:
        table.add_row("probe regurgitation rate", *[fmt(r.get("probe", {}).get("rate")) for r in runs])
    console.print(table)
