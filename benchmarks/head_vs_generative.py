"""A task head vs answering generatively, on the same labelled rows, split and budget (docs/heads.md).

    .venv/bin/python benchmarks/head_vs_generative.py            # about 15 minutes on 2 cores
    .venv/bin/python benchmarks/head_vs_generative.py --epochs 1 --rows 120

The task, with labels that come from the data itself: in glaive_toolcall_en_demo.json (300 multi-turn tool-calling
conversations), does the assistant's first reply call one of the offered tools ("call") or answer in words
("answer")? The model sees what it would see at that point: a system message listing the tools (name and
description) and the first user message. Rows are split once (seeded) into train and test.

Both approaches start from the default model (SmolLM2-135M-Instruct), full fine-tuning, the same rows, epochs,
batch size, learning rate and schedule:
- head: `task: classification` (a softmax layer over the two labels on the last prompt token);
- generative: SFT on the same prompts with the label word as the answer, scored by `sftlab eval` from its greedy
  answers (an answer that is not a label counts as wrong).
Printed: accuracy, macro-F1, training wall time, and inference time per test row (a forward pass for the head,
greedy generation for the generative model), with the CPU flags.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GLAIVE = ROOT / "tests" / "fixtures" / "data" / "glaive_toolcall_en_demo.json"


def labelled_rows(path: Path) -> list[dict]:
    """One row per conversation: the tools and the first user turn, labelled by what the first reply does."""
    rows = []
    for r in json.loads(path.read_text()):
        tools = json.loads(r["tools"]) if isinstance(r.get("tools"), str) else r.get("tools") or []
        listed = "\n".join(f"- {t.get('name')}: {t.get('description', '')}" for t in tools)
        turns = r["conversations"]
        user = next(t["value"] for t in turns if t["from"] == "human")
        first = next(t["from"] for t in turns if t["from"] != "human")
        system = f"You can call these tools:\n{listed}" if listed else "You have no tools."
        rows.append({"messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
                     "label": "call" if first == "function_call" else "answer"})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=300)
    parser.add_argument("--epochs", type=float, default=2)
    parser.add_argument("--test-share", type=float, default=0.2)
    parser.add_argument("--work", type=Path, default=Path("/tmp/sftlab-head-bench"))
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from train_speed import cpu_flags

    from sftlab.config import TrainConfig
    from sftlab.evaluation.run import EvalOptions, evaluate
    from sftlab.training import train

    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    rows = labelled_rows(GLAIVE)[: args.rows]
    random.Random(0).shuffle(rows)
    n_test = round(len(rows) * args.test_share)
    test, train_rows = rows[:n_test], rows[n_test:]
    (work / "train_labels.json").write_text(json.dumps(train_rows))
    (work / "test_labels.json").write_text(json.dumps(test))
    # The generative recipe: the same prompts, the label word as the answer.
    sft = [{"messages": r["messages"] + [{"role": "assistant", "content": r["label"]}]} for r in train_rows]
    (work / "train_sft.json").write_text(json.dumps(sft))
    common = {"epochs": args.epochs, "batch_size": 8, "learning_rate": 5e-5, "max_length": 1024, "seed": 42,
              "logging_steps": 10, "keep_checkpoints": "none", "save_total_limit": 1}
    results = {}
    for name, task, data in (("head", "classification", "train_labels.json"), ("generative", "sft", "train_sft.json")):
        config = TrainConfig(datasets=[str(work / data)], task=task, output_dir=str(work / name), **common)
        result = train(config, quiet=True)
        options = EvalOptions(max_new_tokens=8, batch_size=8)
        summary = evaluate(str(work / name), work / "test_labels.json", work / f"eval-{name}", options)
        seconds = summary["inference_seconds"]  # the scoring loop only, model loading left out
        results[name] = {"accuracy": summary["accuracy"], "macro_f1": summary["macro_f1"],
                         "train_s": result.train_seconds, "steps": result.steps,
                         "infer_ms_per_row": 1000 * seconds / len(test),
                         "not_a_label": len(summary.get("not_a_label", []))}
    print(f"rows: {len(train_rows)} train, {len(test)} test; labels in test: "
          f"{sum(r['label'] == 'call' for r in test)} call, {sum(r['label'] == 'answer' for r in test)} answer")
    print(f"| approach | accuracy | macro-F1 | optimizer steps | training (s) | inference per row (ms) | answers not a label |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['accuracy']:.3f} | {r['macro_f1']:.3f} | {r['steps']} | {r['train_s']:.0f} | "
              f"{r['infer_ms_per_row']:.0f} | {r['not_a_label'] if name == 'generative' else '—'} |")
    print("cpu flags:", cpu_flags())


if __name__ == "__main__":
    main()
