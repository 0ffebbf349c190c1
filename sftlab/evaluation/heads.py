"""`sftlab eval` on labelled data: a head model's predictions, or a generative model's answers, scored one way.

Classification: accuracy, macro-F1, per-label precision / recall / F1 and the confusion matrix (summary.json, a
table, confusion.png). A generative model's answer counts when it *is* a label: the same text once surrounding
whitespace, quotes and a final full stop are removed; for a structured (JSON) label the answer must parse as JSON
(a ```json fence allowed) and equal it. Answers that are no label count as wrong and are listed. Reward: pairwise
accuracy (chosen scored above rejected) and the mean margin r_chosen − r_rejected.
"""

from __future__ import annotations

import json
import logging
import re
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from sftlab import jsonsafe
from sftlab.data.heads import HeadEncoder, encode_classification, encode_pairs, label_name, read_task_rows
from sftlab.errors import SftlabError
from sftlab.files import require_output_dir, write_text

log = logging.getLogger("sftlab")

NOT_A_LABEL = "(not a label)"


# The most labels a confusion table (summary.json, the terminal) and confusion.png hold: beyond that the table is
# left out with a sentence saying so (a head of 10,000 labels once built a 10,000 × 10,001 table for 20 rows).
CONFUSION_MAX_LABELS = 50
# predictions.jsonl keeps each row's probabilities of at most this many labels (the most probable), so a head of
# many labels writes a file the size of its rows, not rows × labels.
PROBABILITIES_KEPT = 10


def classification_metrics(gold: Sequence[str], predicted: Sequence[str | None], labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro-F1 (the unweighted mean of the labels' F1), per-label precision/recall/F1/support and the
    confusion matrix (rows: the true label, columns: the prediction, and a last column for predictions that are
    no label). A label never predicted has precision 0; a label with no true rows is left out of macro-F1.
    Only the labels that occur (true or predicted) are scored and tabled, in the order of `labels`: one with
    neither has nothing to report, and the work stays the size of the rows, whatever the number of labels."""
    occurring = set(gold) | {p for p in predicted if p is not None}
    shown = [name for name in labels if name in occurring]
    pairs = Counter((g, p if p in occurring and p is not None else None) for g, p in zip(gold, predicted))
    support, predicted_as = Counter(gold), Counter(p for p in predicted if p is not None)
    per_label: dict[str, dict[str, Any]] = {}
    for name in shown:
        tp = pairs[(name, name)]
        precision = tp / predicted_as[name] if predicted_as[name] else 0.0
        recall = tp / support[name] if support[name] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_label[name] = {"precision": precision, "recall": recall, "f1": f1, "support": support[name]}
    scored = [v["f1"] for v in per_label.values() if v["support"]]
    correct = sum(pairs[(name, name)] for name in shown)
    result = {"examples": len(gold), "accuracy": correct / len(gold) if gold else 0.0,
              "macro_f1": statistics.fmean(scored) if scored else 0.0, "per_label": per_label,
              "labels_left_out": len(labels) - len(shown)}
    if len(shown) > CONFUSION_MAX_LABELS:
        result["confusion_skipped"] = (f"{len(shown)} labels occur (true or predicted); a confusion table and plot "
                                       f"hold at most {CONFUSION_MAX_LABELS}, so there are none")
        return result
    matrix = [[pairs[(g, p)] for p in [*shown, None]] for g in shown]
    result["confusion"] = {"labels": shown, "columns": [*shown, NOT_A_LABEL], "matrix": matrix}
    return result


def reward_metrics(chosen: Sequence[float], rejected: Sequence[float]) -> dict[str, Any]:
    margins = [c - r for c, r in zip(chosen, rejected)]
    return {"pairs": len(margins), "pairwise_accuracy": sum(m > 0 for m in margins) / len(margins) if margins else 0.0,
            "mean_margin": statistics.fmean(margins) if margins else 0.0}


_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.S)


def answer_label(answer: str, labels: dict[str, Any]) -> str | None:
    """The label name an answer is (`labels`: name → the label as the data wrote it), or None."""
    text = answer.strip()
    structured = {n: v for n, v in labels.items() if isinstance(v, (dict, list))}
    if structured:
        fenced = _FENCE.match(text)
        try:
            parsed = json.loads(fenced.group(1) if fenced else text)
        except ValueError:
            parsed = None
        for name, value in structured.items():
            if parsed == value and type(parsed) is type(value):
                return name
    plain = text.strip("\"'`“”「」").rstrip("。.").strip()
    for name, value in labels.items():
        if not isinstance(value, (dict, list)) and plain == name:
            return name
    return None


def _structured_name(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True) if isinstance(value, (dict, list)) else label_name(value)


def plot_confusion(metrics: dict[str, Any], path: Path) -> None:
    from sftlab.training.plot import figure

    conf = metrics["confusion"]
    with figure(path) as ax:
        ax.imshow(conf["matrix"], cmap="Blues")
        # (labels are the data's text: a "$" in one is a dollar sign, not the start of TeX math)
        ax.set_xticks(range(len(conf["columns"])), conf["columns"], rotation=45, ha="right", parse_math=False)
        ax.set_yticks(range(len(conf["labels"])), conf["labels"], parse_math=False)
        ax.set(xlabel="predicted", ylabel="true label", title=f"accuracy {metrics['accuracy']:.3f}, "
                                                               f"macro-F1 {metrics['macro_f1']:.3f}")
        for r, row in enumerate(conf["matrix"]):
            for c, n in enumerate(row):
                ax.text(c, r, str(n), ha="center", va="center")


def _write(out: Path, summary: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, Any]:
    write_text(out / "predictions.jsonl", jsonsafe.jsonl(records))
    if "confusion" in summary:
        plot_confusion(summary, out / "confusion.png")
    write_text(out / "summary.json", jsonsafe.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return summary


def labelled_data(path: str | Path) -> bool:
    """Whether a data file holds labelled rows (each an object with a `label`), as `sftlab eval` scores them."""
    from sftlab.data.load import read_rows

    rows, _ = read_rows(path)
    return bool(rows) and all(isinstance(r, dict) and "label" in r for r in rows)


def evaluate_head(path: str, task: str, data: str | Path, out: str | Path, options: Any, name: str) -> dict[str, Any]:
    """A head model (sftlab/training/heads.py) on held-out rows of its task."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from sftlab.data.templates import resolve_template
    from sftlab.machine.hardware import pick_device, use_bf16
    from sftlab.models import load_tokenizer
    from sftlab.training.heads import HeadCollator, head_scores

    out = require_output_dir(out, "--out")
    tokenizer = load_tokenizer(path)
    chat = resolve_template(options.template, tokenizer) if (options.template or tokenizer.chat_template) else None
    device = pick_device()
    model = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32).to(device).eval()
    # The precision generation uses (auto: bf16 where it is measured faster), so both approaches are timed alike.
    bf16 = use_bf16(options.precision, device)
    rows, read = read_task_rows(data, task)
    rows = rows[: options.limit] if options.limit else rows
    encoder = HeadEncoder(tokenizer, chat, escape=options.escape, max_length=options.max_length)
    if task == "reward":
        encoded = encode_pairs(rows, encoder, read)
    else:
        names = [model.config.id2label[i] for i in range(model.config.num_labels)]
        encoded = encode_classification(rows, encoder, {n: i for i, n in enumerate(names)}, read)
    if not encoded.examples:
        raise SftlabError(f"{data}: no row left to score ({encoded.report()['drop_reasons']})")
    collate = HeadCollator(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)
    # Rows scored in order of length, so a batch pads little (as batched generation does), then put back in order.
    def length(e: dict[str, Any]) -> int:
        return len(e["input_ids"]) if "input_ids" in e else max(len(e["chosen_ids"]), len(e["rejected_ids"]))

    order = sorted(range(len(encoded.examples)), key=lambda i: length(encoded.examples[i]))
    scores: list[Any] = [None] * len(order)
    started = time.perf_counter()
    with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
        for s in range(0, len(order), options.batch_size):
            idx = order[s : s + options.batch_size]
            batch = {k: v.to(model.device) if hasattr(v, "to") else v
                     for k, v in collate([encoded.examples[i] for i in idx]).items()}
            got = head_scores(model, batch).float().cpu()
            if task == "reward":
                n = batch["pairs"]
                got_rows = list(zip(got[:n].tolist(), got[n:].tolist()))
            else:
                got_rows = got.tolist()
            for i, row in zip(idx, got_rows):
                scores[i] = row
    base = {"model": name, "data": str(data), "task": task, "dropped": len(encoded.dropped),
            "inference_seconds": time.perf_counter() - started}
    if task == "reward":
        records = [{"row": e["row"], "chosen_reward": c, "rejected_reward": r, "margin": c - r}
                   for e, (c, r) in zip(encoded.examples, scores)]
        summary = {**base, **reward_metrics([c for c, _ in scores], [r for _, r in scores])}
        return _write(out, summary, records)
    predicted = [names[max(range(len(s)), key=s.__getitem__)] for s in scores]
    gold = [names[e["labels"]] for e in encoded.examples]
    records = [{"row": e["row"], "label": g, "predicted": p, "probabilities": _most_probable(names, _softmax(s))}
               for e, g, p, s in zip(encoded.examples, gold, predicted, scores)]
    return _write(out, {**base, **classification_metrics(gold, predicted, names)}, records)


def _softmax(values: Sequence[float]) -> list[float]:
    import math

    top = max(values)
    exps = [math.exp(v - top) for v in values]
    total = sum(exps)  # (once: summed per element it was labels² work per row)
    return [e / total for e in exps]


def _most_probable(names: Sequence[str], probabilities: Sequence[float]) -> dict[str, float]:
    """Every label's probability, in label order; for more than PROBABILITIES_KEPT labels, the most probable ones."""
    if len(names) <= PROBABILITIES_KEPT:
        return dict(zip(names, probabilities))
    top = sorted(range(len(names)), key=lambda i: -probabilities[i])[:PROBABILITIES_KEPT]
    return {names[i]: probabilities[i] for i in top}


def evaluate_generative_labels(model: str, data: str | Path, out: str | Path, options: Any) -> dict[str, Any]:
    """A generative model's greedy answers to labelled rows, scored as a classifier's predictions."""
    from sftlab.inference.generate import load_generator

    out = require_output_dir(out, "--out")
    rows, _ = read_task_rows(data, "classification")
    rows = rows[: options.limit] if options.limit else rows
    if not rows:
        raise SftlabError(f"{data}: no labelled row to score")
    labels: dict[str, Any] = {}
    for r in rows:
        labels.setdefault(_structured_name(r.label), r.label)
    gen = load_generator(model, options.template, escape=options.escape, precision=options.precision,
                         default_system=options.default_system)
    prompts = [r.messages if r.messages is not None else [{"role": "user", "content": r.text}] for r in rows]
    started = time.perf_counter()
    answers = gen.answers(prompts, options.max_new_tokens, options.batch_size)
    seconds = time.perf_counter() - started
    predicted = [answer_label(a, labels) for a in answers]
    gold = [_structured_name(r.label) for r in rows]
    names = list(labels)
    records = [{"row": r.row, "label": g, "answer": a, "predicted": p}
               for r, g, a, p in zip(rows, gold, answers, predicted)]
    summary = {"model": model, "data": str(data), "task": "classification (generative answers)",
               "inference_seconds": seconds,
               **classification_metrics(gold, predicted, names),
               "not_a_label": [{"row": r["row"], "answer": r["answer"]} for r in records if r["predicted"] is None]}
    return _write(out, summary, records)


def print_label_summary(summary: dict[str, Any], console: Any) -> None:
    """The terminal tables of a labelled eval: the figures, per-label scores and the confusion matrix. Label and
    model names are the data's and the user's: shown as text (Text), never read as rich markup."""
    from rich.table import Column, Table
    from rich.text import Text

    if "pairwise_accuracy" in summary:
        table = Table("metric", Column(Text(str(summary["model"]))))
        for key in ("pairs", "pairwise_accuracy", "mean_margin"):
            value = summary[key]
            table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
        console.print(table)
        return
    table = Table("label", "precision", "recall", "f1", "support", title=Text(
        f"{summary['model']}: accuracy {summary['accuracy']:.4f}, macro-F1 {summary['macro_f1']:.4f}"))
    for name, v in summary["per_label"].items():
        table.add_row(Text(name), f"{v['precision']:.3f}", f"{v['recall']:.3f}", f"{v['f1']:.3f}", str(v["support"]))
    console.print(table)
    if "confusion" in summary:
        conf = summary["confusion"]
        matrix = Table("true \\ predicted", *(Column(Text(c)) for c in conf["columns"]))
        for name, row in zip(conf["labels"], conf["matrix"]):
            matrix.add_row(Text(name), *map(str, row))
        console.print(matrix)
    else:
        console.print(summary.get("confusion_skipped", "no confusion table"), markup=False, highlight=False)
    if summary.get("not_a_label"):
        console.print(f"{len(summary['not_a_label'])} answers were no label (listed in summary.json)")
