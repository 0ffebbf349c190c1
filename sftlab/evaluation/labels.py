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
from pathlib import Path
from typing import Any, Sequence

from sftlab.data.labels import HeadEncoder, encode_classification, encode_pairs, label_name, read_task_rows
from sftlab.errors import SftlabError
from sftlab.files import require_output_dir, write_text

log = logging.getLogger("sftlab")

NOT_A_LABEL = "(not a label)"


def classification_metrics(gold: Sequence[str], predicted: Sequence[str | None], labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro-F1 (the unweighted mean of the labels' F1), per-label precision/recall/F1/support and the
    confusion matrix (rows: the true label, columns: the prediction, and a last column for predictions that are
    no label). A label never predicted has precision 0; a label with no true rows is left out of macro-F1."""
    index = {name: i for i, name in enumerate(labels)}
    matrix = [[0] * (len(labels) + 1) for _ in labels]
    for g, p in zip(gold, predicted):
        matrix[index[g]][index.get(p, len(labels)) if p is not None else len(labels)] += 1
    per_label: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(labels):
        tp = matrix[i][i]
        predicted_as = sum(matrix[r][i] for r in range(len(labels)))
        support = sum(matrix[i])
        precision = tp / predicted_as if predicted_as else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_label[name] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    scored = [v["f1"] for v in per_label.values() if v["support"]]
    correct = sum(matrix[i][i] for i in range(len(labels)))
    return {"examples": len(gold), "accuracy": correct / len(gold) if gold else 0.0,
            "macro_f1": statistics.fmean(scored) if scored else 0.0, "per_label": per_label,
            "confusion": {"labels": list(labels), "columns": [*labels, NOT_A_LABEL], "matrix": matrix}}


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
        ax.set_xticks(range(len(conf["columns"])), conf["columns"], rotation=45, ha="right")
        ax.set_yticks(range(len(conf["labels"])), conf["labels"])
        ax.set(xlabel="predicted", ylabel="true label", title=f"accuracy {metrics['accuracy']:.3f}, "
                                                               f"macro-F1 {metrics['macro_f1']:.3f}")
        for r, row in enumerate(conf["matrix"]):
            for c, n in enumerate(row):
                ax.text(c, r, str(n), ha="center", va="center")


def _write(out: Path, summary: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, Any]:
    write_text(out / "predictions.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    if "confusion" in summary:
        plot_confusion(summary, out / "confusion.png")
    write_text(out / "summary.json", json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
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
    from sftlab.hardware import pick_device, use_bf16
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
    records = [{"row": e["row"], "label": g, "predicted": p, "probabilities": dict(zip(names, _softmax(s)))}
               for e, g, p, s in zip(encoded.examples, gold, predicted, scores)]
    return _write(out, {**base, **classification_metrics(gold, predicted, names)}, records)


def _softmax(values: Sequence[float]) -> list[float]:
    import math

    top = max(values)
    exps = [math.exp(v - top) for v in values]
    return [e / sum(exps) for e in exps]


def evaluate_generative_labels(model: str, data: str | Path, out: str | Path, options: Any) -> dict[str, Any]:
    """A generative model's greedy answers to labelled rows, scored as a classifier's predictions."""
    from sftlab.generate import load_generator

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
    """The terminal tables of a labelled eval: the figures, per-label scores and the confusion matrix."""
    from rich.table import Table

    if "pairwise_accuracy" in summary:
        table = Table("metric", str(summary["model"]))
        for key in ("pairs", "pairwise_accuracy", "mean_margin"):
            value = summary[key]
            table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
        console.print(table)
        return
    table = Table("label", "precision", "recall", "f1", "support", title=(
        f"{summary['model']}: accuracy {summary['accuracy']:.4f}, macro-F1 {summary['macro_f1']:.4f}"))
    for name, v in summary["per_label"].items():
        table.add_row(name, f"{v['precision']:.3f}", f"{v['recall']:.3f}", f"{v['f1']:.3f}", str(v["support"]))
    console.print(table)
    conf = summary["confusion"]
    matrix = Table("true \\ predicted", *conf["columns"])
    for name, row in zip(conf["labels"], conf["matrix"]):
        matrix.add_row(name, *map(str, row))
    console.print(matrix)
    if summary.get("not_a_label"):
        console.print(f"{len(summary['not_a_label'])} answers were no label (listed in summary.json)")

