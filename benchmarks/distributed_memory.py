"""Peak memory per process of 2-process DDP and FSDP2 training of the default model (SmolLM2-135M, full
fine-tuning, fp32, AdamW), on CPU over gloo, and one process alone for reference.

    .venv/bin/python benchmarks/distributed_memory.py

Each process reports two peaks of its resident memory (Linux VmHWM): up to the first step (data, model
loading, sharding) and during training (the high-water mark reset at the first step, read at the end of
training, before the final model is saved), and the median seconds per optimizer step. DDP keeps a whole model, its gradients and both Adam
moments in every process; FSDP2 keeps 1/N of each, plus the layer being computed and the unsharded
embeddings/head group. Loading the model happens whole in every process before sharding, so that part of
the peak is the same for both. Each configuration runs with and without activation checkpointing
(`gradient_checkpointing: true`; FSDP's own under fsdp2), which leaves the model state as the larger part.
The training peak includes the checkpoint written at the last step.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "fixtures" / "data" / "alpaca_en_demo.json"
STEPS = 6


def sets(strategy: str, out: Path, processes: int, checkpointing: bool) -> list[str]:
    return [f"gradient_checkpointing={checkpointing}", f"datasets=[{DATA}]", "limit=96", "max_length=512", "packing=false", f"batch_size={4 // processes}",
            f"max_steps={STEPS}", "logging_steps=1", "precision=fp32", "save_steps=1000", "seed=1",
            f"output_dir={out}", f"distributed.strategy={strategy}"]


def peak_mib() -> float:
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def child(strategy: str, out: str, processes: int, checkpointing: bool) -> None:
    from train_speed import step_timer  # (this script's folder is first on sys.path)
    from transformers import TrainerCallback

    from sftlab.config import load_config
    from sftlab.training import train

    timer = step_timer()

    class Memory(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            self.loading_mib = peak_mib()
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS

        def on_train_end(self, args, state, control, **kw):
            rank = int(os.environ.get("RANK", "0"))
            (Path(out) / f"rank{rank}.json").write_text(json.dumps(
                {"loading_mib": self.loading_mib, "training_mib": peak_mib(),
                 "step_seconds": statistics.median(timer.times[1:])}))

    train(load_config(None, sets(strategy, Path(out), processes, checkpointing)), callbacks=[timer, Memory()],
          quiet=True)


def run(strategy: str, processes: int, checkpointing: bool, work: Path) -> list[dict]:
    out = work / f"{strategy}-{processes}-{checkpointing}"
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 2) // processes)), "CUDA_VISIBLE_DEVICES": ""}
    me = [str(Path(__file__).resolve()), "--child", strategy, str(out), str(processes), str(checkpointing)]
    if processes == 1:
        command = [sys.executable, *me]
    else:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
                   "--master_port", str(port), *me]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    if done.returncode:
        sys.exit(f"{strategy} × {processes} failed:\n{done.stderr[-3000:]}")
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(processes)]


def main() -> None:
    import torch

    print(f"torch {torch.__version__}; {os.cpu_count()} CPUs; default model, full fine-tuning, fp32, "
          f"global batch 4, max_length 512, {STEPS} steps")
    print(f"{'strategy':<10} {'processes':>9} {'activation ckpt':>15} {'peak RSS per process, MiB: loading':>36} "
          f"{'training':>16} {'s/step (median)':>16}")
    with tempfile.TemporaryDirectory() as tmp:
        for checkpointing in (False, True):
            for strategy, processes in (("ddp", 1), ("ddp", 2), ("fsdp2", 2)):
                report(strategy, processes, checkpointing, run(strategy, processes, checkpointing, Path(tmp)))


def report(strategy: str, processes: int, checkpointing: bool, ranks: list[dict]) -> None:
    loading = " / ".join(f"{r['loading_mib']:,.0f}" for r in ranks)
    training = " / ".join(f"{r['training_mib']:,.0f}" for r in ranks)
    step = statistics.median(r["step_seconds"] for r in ranks)
    label = "one" if processes == 1 else strategy
    print(f"{label:<10} {processes:>9} {'on' if checkpointing else 'off':>15} {loading:>36} {training:>16} {step:>16.2f}",
          flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5] == "True")
    else:
        main()
