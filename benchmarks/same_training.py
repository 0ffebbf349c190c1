"""Same training on the fast path: the two-matmul attention of short examples (sftlab/training/attention.py,
`SHORT`) against the path it replaced (the CPU flash kernel for every example, `SHORT = 0`), on the recipes of
train_speed.py, run after run in one process.

    .venv/bin/python benchmarks/same_training.py                    # both recipes (about 12 min on 2 cores)
    .venv/bin/python benchmarks/same_training.py --recipes identity

Printed per recipe: the largest relative difference of a step's loss, the final step's loss on each path, the
trained-token counts (identical: the tokens do not depend on the kernel), and the held-out loss after training
(alpaca rows 200–259, never trained on) on each path. Tolerances (bf16 training): a step's loss within 1e-2
relative, the final loss within 0.5 %, the held-out loss within 0.5 %.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from train_speed import ALPACA, cpu_flags, recipe_rows, sftlab_config  # noqa: E402

HELD_OUT = slice(200, 260)


def run(name: str, data: Path, held_out: Path, out: Path, short: int, precision: str) -> dict:
    from sftlab.training import attention, train

    attention.SHORT = short
    shutil.rmtree(out, ignore_errors=True)
    result = train(sftlab_config(name, data, out, precision, extra=(f"eval_datasets=[{held_out}]",)), quiet=True)
    losses = [r["loss"] for r in result.metrics if "loss" in r]
    evals = [r["eval_loss"] for r in result.metrics if "eval_loss" in r]
    return {"losses": losses, "tokens": result.trained_tokens, "eval_loss": evals[-1] if evals else None,
            "steps": result.steps}


def main() -> None:
    from sftlab.machine.hardware import pick_device, use_bf16
    from sftlab.training import attention

    ap = argparse.ArgumentParser()
    ap.add_argument("--recipes", default="alpaca,identity")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "bench")
    args = ap.parse_args()
    precision = "bf16" if use_bf16("auto", pick_device()) else "fp32"
    print(f"host: {cpu_flags()}; precision auto -> {precision}")
    held_out = args.work / "held_out.json"
    args.work.mkdir(parents=True, exist_ok=True)
    held_out.write_text(json.dumps(json.loads(ALPACA.read_text())[HELD_OUT], ensure_ascii=False))
    fast = attention.SHORT
    for name in args.recipes.split(","):
        data = recipe_rows(name, None, args.work)
        ref = run(name, data, held_out, args.work / "same_ref", 0, precision)
        new = run(name, data, held_out, args.work / "same_new", fast, precision)
        rel = [abs(a - b) / abs(b) for a, b in zip(new["losses"], ref["losses"])]
        print(f"\n== recipe {name}: {ref['steps']} / {new['steps']} steps (flash every example / two matmuls up to "
              f"{fast} tokens)")
        print(f"step loss: largest relative difference {max(rel):.2e} (step {rel.index(max(rel)) + 1}), "
              f"median {sorted(rel)[len(rel) // 2]:.2e} (tolerance 1e-2)")
        final = new["losses"][-1] / ref["losses"][-1] - 1
        print(f"final step loss: {ref['losses'][-1]:.4f} / {new['losses'][-1]:.4f} ({final:+.2%}; tolerance 0.5 %)")
        print(f"trained tokens: {ref['tokens']} / {new['tokens']} ({'identical' if ref['tokens'] == new['tokens'] else 'DIFFER'})")
        if ref["eval_loss"] is not None and new["eval_loss"] is not None:
            held = new["eval_loss"] / ref["eval_loss"] - 1
            print(f"held-out loss after training: {ref['eval_loss']:.4f} / {new['eval_loss']:.4f} ({held:+.2%}; "
                  f"tolerance 0.5 %)")
        else:
            print("held-out loss: not reported by the run")


if __name__ == "__main__":
    main()
