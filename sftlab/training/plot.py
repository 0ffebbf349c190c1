"""loss.png: training loss per logging step, and eval loss where evaluated."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence


@contextmanager
def figure(path: str | Path) -> Iterator[Any]:
    """The axes of a 700 × 400 px chart, written to `path` (PNG) when the block ends."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    try:
        yield ax
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)


def plot_metrics(records: Sequence[dict[str, Any]], path: str | Path) -> None:
    with figure(path) as ax:
        train = [(r["step"], r["loss"]) for r in records if r.get("loss") is not None]
        evals = [(r["step"], r["eval_loss"]) for r in records if r.get("eval_loss") is not None]
        if train:
            ax.plot(*zip(*train), label="train loss", color="#1f77b4")
        if evals:
            ax.plot(*zip(*evals), "o-", label="eval loss", color="#d62728")
        starts: dict[str, int] = {}
        for r in records:  # a staged run: each stage's first step, marked and named
            if r.get("stage") is not None:
                starts.setdefault(r["stage"], r["step"])
        for name, step in list(starts.items())[1:] if len(starts) > 1 else []:
            ax.axvline(step - 0.5, color="grey", linestyle="--", linewidth=1)
            ax.text(step - 0.5, 1.0, f" {name}", transform=ax.get_xaxis_transform(), va="top", fontsize=8, color="grey")
        ax.set(xlabel="step", ylabel="loss (trained tokens)")
        ax.grid(alpha=0.3)
        if train or evals:
            ax.legend()
