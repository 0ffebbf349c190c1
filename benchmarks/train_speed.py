"""Training speed: sftlab vs TRL's SFTTrainer on the same recipe, and vs a minimal PyTorch loop.

    .venv/bin/python benchmarks/train_speed.py                     # both recipes (about 30 min on 2 cores)
    .venv/bin/python benchmarks/train_speed.py --recipes identity  # one of them
    .venv/bin/python benchmarks/train_speed.py --rows 40           # a quicker look at the alpaca recipe
    .venv/bin/python benchmarks/train_speed.py --method lora       # LoRA r 16 on all linear layers, TRL via peft
    .venv/bin/python benchmarks/train_speed.py --precision fp32    # the fp32 step (what AVX2-only hosts train in)

Recipes (the default model, SmolLM2-135M-Instruct, full fine-tuning):
- alpaca: the first 200 rows of alpaca_en_demo.json, one epoch, batch 8, max_length 1024, lr 2e-5;
- identity: the 91 identity rows of `make demo`, three epochs, batch 8, max_length 512, lr 5e-5.

Same training in every engine: the same rows, the same number of examples per optimizer step, the same
number of steps, the same schedule (cosine, warmup 3 %), clipping at 1.0, AdamW, the same precision
(what sftlab's `precision: auto` picks here). sftlab runs with its defaults (padding-free batches); TRL
1.16 gets prompt-completion data (only answers trained), no packing. The minimal loop takes the very
batches sftlab's Trainer draws (its dataloader) through forward on the padding-free rows, cross-entropy
of the trained positions only (head on those rows, plain `F.cross_entropy`), backward, clipping and
fused AdamW, with no Trainer around it: the ceiling for sftlab's overheads. Each engine runs in its own
process, so peak memory (RSS) is its own.

Printed per recipe: optimizer steps, training-loop wall time, trained tokens/s, peak RSS, mean step
loss and both engines' step losses side by side; then the ratios (the targets: ≥ 3× TRL, peak RSS
≤ 0.5× TRL, ≥ 90 % of the loop), the CPU flags, the matmul peaks measured in the same run, MFU (model FLOPs:
`model_flops`, attention counted by example length), and a per-op profile of sftlab's step 3 (torch profiler,
self CPU time grouped: matmuls, attention, casts, norms, activations, elementwise, head loss, optimizer, other).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ALPACA = ROOT / "tests" / "fixtures" / "data" / "alpaca_en_demo.json"
RECIPES = {
    "alpaca": {"rows": 200, "epochs": 1, "batch_size": 8, "max_length": 1024, "learning_rate": 2e-5},
    "identity": {"rows": None, "epochs": 3, "batch_size": 8, "max_length": 512, "learning_rate": 5e-5},
}
LORA_RANK = 16  # --method lora: rank 16, alpha 32, dropout 0.05 on all linear layers in every engine
SCHEDULE = {"lr_scheduler": "cosine", "warmup_ratio": 0.03, "max_grad_norm": 1.0, "seed": 42}


def recipe_rows(name: str, rows: int | None, work: Path) -> Path:
    """The recipe's data file (alpaca rows, or the identity rows filled as `make demo` fills them)."""
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"{name}.json"
    if name == "alpaca":
        data = json.loads(ALPACA.read_text())[: rows or RECIPES["alpaca"]["rows"]]
        path.write_text(json.dumps(data, ensure_ascii=False))
    else:
        sys.path.insert(0, str(ROOT / "examples"))
        from demo import fill

        fill(ROOT / "examples" / "identity.json", path)
    return path


def sftlab_config(name: str, data: Path, out: Path, precision: str, method: str = "full", extra: tuple = ()):
    from sftlab.config import load_config

    r = RECIPES[name]
    return load_config(None, [
        f"datasets=[{data}]", f"max_length={r['max_length']}", f"batch_size={r['batch_size']}",
        f"learning_rate={r['learning_rate']}", f"epochs={r['epochs']}", f"precision={precision}", "logging_steps=1",
        f"lr_scheduler={SCHEDULE['lr_scheduler']}", f"warmup_ratio={SCHEDULE['warmup_ratio']}",
        f"max_grad_norm={SCHEDULE['max_grad_norm']}", f"seed={SCHEDULE['seed']}", f"output_dir={out}",
        "save_steps=100000", "save_total_limit=1", f"method={method}",
    ] + ([f"lora_r={LORA_RANK}", f"lora_alpha={2 * LORA_RANK}", "lora_dropout=0.05", "lora_targets=all-linear"]
         if method == "lora" else []) + list(extra))


def step_timer():
    """A TrainerCallback that records each optimizer step's wall time (made lazily: transformers)."""
    from transformers import TrainerCallback

    class Timer(TrainerCallback):
        def __init__(self):
            self.times: list[float] = []
            self._t = 0.0

        def on_step_begin(self, args, state, control, **kw):
            self._t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.times.append(time.perf_counter() - self._t)

    return Timer()


# The per-op profile of one steady-state step: torch's CPU ops by self time, grouped by what they do (first match).
PROFILE_STEP = 3
# bmm, baddbmm and softmax appear in these models only in attention (the two-matmul kernel of short examples).
OP_GROUPS = (
    ("attention", ("scaled_dot_product", "flash_attention", "_efficient_attention", "aten::bmm", "aten::baddbmm",
                   "aten::_softmax", "_ShortCausal")),
    ("matmuls", ("aten::mm", "aten::addmm", "mkldnn", "onednn")),
    ("casts and copies", ("aten::to", "aten::_to_copy", "aten::copy_", "aten::clone", "aten::contiguous")),
    ("optimizer", ("adam", "Optimizer.step", "aten::_foreach", "clip_grad", "aten::norm", "linalg_vector_norm")),
    ("head loss", ("cross_entropy", "log_softmax", "nll_loss")),
    ("norms", ("rsqrt", "aten::pow", "aten::mean", "layer_norm", "rms_norm")),
    ("activations", ("silu", "gelu", "sigmoid")),
    ("elementwise (RoPE, SwiGLU, residual)", ("aten::mul", "aten::add", "aten::cat", "aten::neg", "aten::sub",
                                             "aten::div", "aten::cos", "aten::sin")),
)


def step_profiler(step: int = PROFILE_STEP):
    """A TrainerCallback that profiles optimizer step `step` (forward, backward, clipping, optimizer) with torch's
    profiler and keeps each op's self CPU time, summed into OP_GROUPS."""
    from transformers import TrainerCallback

    class Profiler(TrainerCallback):
        def __init__(self):
            self.groups: dict[str, float] = {}
            self.wall_ms = 0.0
            self._prof = None

        def on_step_begin(self, args, state, control, **kw):
            if state.global_step + 1 == step:
                from torch.profiler import ProfilerActivity, profile

                self._prof = profile(activities=[ProfilerActivity.CPU])
                self._prof.__enter__()
                self.wall_ms = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            if self._prof is None:
                return
            self._prof.__exit__(None, None, None)
            self.wall_ms = (time.perf_counter() - self.wall_ms) * 1000
            for event in self._prof.key_averages():
                group = next((g for g, keys in OP_GROUPS if any(k in event.key for k in keys)), "other")
                self.groups[group] = self.groups.get(group, 0.0) + event.self_cpu_time_total / 1000  # ms
            self._prof = None

    return Profiler()


def run_sftlab(name: str, data: Path, work: Path, precision: str, method: str) -> dict:
    import shutil

    from sftlab.training import train

    shutil.rmtree(work / "sftlab", ignore_errors=True)
    timer, profiler = step_timer(), step_profiler()
    result = train(sftlab_config(name, data, work / "sftlab", precision, method), callbacks=[timer, profiler],
                   quiet=True)
    counts = [r["trained_tokens"] for r in result.metrics]
    return {"steps": result.steps, "step_seconds": timer.times,
            "step_trained_tokens": [b - a for a, b in zip([0] + counts[:-1], counts)],
            "input_tokens": result.report.tokens * RECIPES[name]["epochs"], "examples": result.report.examples,
            "losses": [r["loss"] for r in result.metrics], "profile_ms": profiler.groups,
            "profile_wall_ms": profiler.wall_ms}


def print_profile(groups: dict[str, float], wall_ms: float, step_seconds: float) -> None:
    """The profiled step's self CPU time by group, largest first, as ms and share (the profiler's own overhead
    makes the profiled step slower than the others; the shares are what to read)."""
    total = sum(groups.values())
    if not total:
        print("profile: not taken (fewer steps than the profiled one)")
        return
    print(f"profile of step {PROFILE_STEP} (self CPU time of torch ops {total:.0f} ms, of {wall_ms:.0f} ms wall "
          f"profiled; a median step takes {1000 * step_seconds:.0f} ms unprofiled):")
    for group, ms in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"  {group:<40} {ms:>9.0f} ms  {ms / total:>6.1%}")


def run_loop(name: str, data: Path, work: Path, precision: str, method: str) -> dict:
    """The ceiling: sftlab's own batches (its Trainer's dataloader) through a plain PyTorch loop."""
    import math
    import shutil

    import torch
    import torch.nn.functional as F
    from transformers import get_scheduler, set_seed

    from sftlab.training.loss import base_model
    from sftlab.training.run import prepare_run

    shutil.rmtree(work / "loop", ignore_errors=True)
    run = prepare_run(sftlab_config(name, data, work / "loop", precision, method), quiet=True)
    trainer, config = run.trainer, run.config
    model = trainer.model
    model.train()
    loader = trainer.get_train_dataloader()
    total_steps = math.ceil(len(loader) * config.epochs)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=0.0, fused=True)
    scheduler = get_scheduler(config.lr_scheduler, optimizer, math.ceil(config.warmup_ratio * total_steps), total_steps)
    decoder, head = base_model(model).get_decoder(), base_model(model).get_output_embeddings()
    set_seed(config.seed)
    times, tokens, losses = [], [], []
    for _ in range(int(config.epochs)):
        for batch in loader:
            start = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=run.bf16):
                hidden = decoder(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                                 use_cache=False).last_hidden_state
                targets = batch["labels"][:, 1:]
                keep = targets != -100
                logits = head(hidden[:, :-1][keep]).float()
                loss = F.cross_entropy(logits, targets[keep])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - start)
            tokens.append(int(keep.sum()))
            losses.append(float(loss))
    return {"steps": len(times), "step_seconds": times, "step_trained_tokens": tokens, "losses": losses}


def run_trl(name: str, data: Path, work: Path, precision: str, method: str) -> dict:
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from sftlab.models import model_path

    r = RECIPES[name]
    path = model_path(None)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    records = []
    for row in json.loads(data.read_text()):
        user = row["instruction"] + ("\n" + row["input"] if row.get("input") else "")
        records.append({"prompt": [{"role": "user", "content": user}],
                        "completion": [{"role": "assistant", "content": row["output"]}]})
    args = SFTConfig(
        output_dir=str(work / "trl"), max_length=r["max_length"], per_device_train_batch_size=r["batch_size"],
        learning_rate=r["learning_rate"], num_train_epochs=r["epochs"], packing=False, completion_only_loss=True,
        bf16=precision == "bf16", use_cpu=not torch.cuda.is_available(), logging_steps=1, report_to="none",
        save_strategy="no", gradient_checkpointing=False, lr_scheduler_type=SCHEDULE["lr_scheduler"],
        warmup_steps=SCHEDULE["warmup_ratio"], max_grad_norm=SCHEDULE["max_grad_norm"], seed=SCHEDULE["seed"],
        disable_tqdm=True,
    )
    timer = step_timer()
    step_tokens: list[int] = []

    class Counting(SFTTrainer):
        """Counts the trained targets of every batch TRL trains on (one batch per step here)."""

        def training_step(self, model, inputs, num_items_in_batch=None):
            step_tokens.append(int((inputs["labels"][:, 1:] != -100).sum()))
            return super().training_step(model, inputs, num_items_in_batch)

    peft = None
    if method == "lora":
        from peft import LoraConfig

        peft = LoraConfig(r=LORA_RANK, lora_alpha=2 * LORA_RANK, lora_dropout=0.05, target_modules="all-linear",
                          task_type="CAUSAL_LM")
    trainer = Counting(model=model, args=args, train_dataset=datasets.Dataset.from_list(records), processing_class=tok,
                       callbacks=[timer], peft_config=peft)
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"steps": trainer.state.global_step, "step_seconds": timer.times, "step_trained_tokens": step_tokens,
            "losses": losses}


ENGINES = {"sftlab": run_sftlab, "trl": run_trl, "loop": run_loop}


def _child(engine: str, name: str, data: Path, work: Path, precision: str, method: str) -> None:
    start = time.perf_counter()
    result = ENGINES[engine](name, data, work, precision, method)
    result["process_seconds"] = time.perf_counter() - start
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result))


def _spawn(engine: str, name: str, data: Path, work: Path, precision: str, method: str) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", engine, "--recipes", name, "--data", str(data), "--work", str(work),
         "--precision", precision, "--method", method],
        capture_output=True, text=True,
    )
    line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        sys.exit(f"{engine} run failed:\n{proc.stderr[-3000:]}")
    return json.loads(line[len("RESULT "):])


def matmul_peak(dtype_name: str) -> float:
    """Best-of-15 GFLOP/s of a 2048² matmul on all cores (a shared host's median understates the peak)."""
    import torch

    dtype = torch.bfloat16 if dtype_name == "bf16" else torch.float32
    n = 2048
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    times = []
    for _ in range(15):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n**3 / min(times) / 1e9


def model_flops(input_tokens: int, trained_tokens: int, square_sum: int = 0, method: str = "full") -> float:
    """Forward + backward FLOPs of the model's own work (none of what a kernel recomputes or throws away):
    - full: 6 × non-embedding weights per input token (forward 2, backward 4: activations and weights), and the
      head's 6·V·d only at trained tokens (where it is evaluated);
    - lora: the frozen base 4 × weights per token (forward 2, backward through the activations 2), its head 4·V·d
      at trained tokens, and each adapter (rank r on a k → n layer) 6·r·(k + n) per token;
    - attention by example length: per layer, the causal half of q·kᵀ and of p·v (2·L²·heads·head_dim forward)
      × 3 for forward + backward, on Σ L² over the examples (`square_sum`)."""
    from transformers import AutoConfig

    from sftlab.models import model_path

    c = AutoConfig.from_pretrained(model_path(None))
    d, L, V, ff = c.hidden_size, c.num_hidden_layers, c.vocab_size, c.intermediate_size
    head_dim = getattr(c, "head_dim", None) or d // c.num_attention_heads
    q, kv = c.num_attention_heads * head_dim, c.num_key_value_heads * head_dim
    shapes = [(d, q), (d, kv), (d, kv), (q, d), (d, ff), (d, ff), (ff, d)]  # q k v o gate up down: (in, out)
    weights = sum(k * n for k, n in shapes)
    attention = 3 * 2 * L * q * square_sum
    if method == "lora":
        adapters = sum(6 * LORA_RANK * (k + n) for k, n in shapes)
        return L * (4 * weights + adapters) * input_tokens + 4 * V * d * trained_tokens + attention
    return 6 * L * weights * input_tokens + 6 * V * d * trained_tokens + attention


def example_lengths(name: str, data: Path) -> list[int]:
    """The token count of each example of the recipe's data, in order, as sftlab encodes it with the recipe."""
    from sftlab.config import DataSettings
    from sftlab.data.pipeline import Source, build_examples
    from sftlab.models import load_tokenizer

    examples, _ = build_examples([Source(str(data))], load_tokenizer(None),
                                 DataSettings(max_length=RECIPES[name]["max_length"]))
    return [len(e.input_ids) for e in examples]


def square_sum(name: str, data: Path, epochs: float) -> int:
    """Σ L² over the examples a run trains (each epoch's examples)."""
    return int(round(sum(n**2 for n in example_lengths(name, data)) * epochs))


def cpu_flags() -> str:
    try:
        flags = next(l for l in open("/proc/cpuinfo") if l.startswith("flags")).split(":", 1)[1].split()
        model = next(l for l in open("/proc/cpuinfo") if l.startswith("model name")).split(":", 1)[1].strip()
    except (OSError, StopIteration):
        return "unknown CPU"
    wanted = [f for f in flags if f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "fma")]
    return f"{model}; flags {' '.join(wanted)}"


def report(name: str, runs: dict[str, dict], precision: str, peaks: dict[str, float], method: str) -> None:
    def seconds(r: dict) -> float:
        return sum(r["step_seconds"])

    def tok_s(r: dict) -> float:
        return sum(r["step_trained_tokens"]) / seconds(r)

    print(f"\n== recipe {name}: {json.dumps(RECIPES[name])}, {runs['sftlab']['examples']} examples, {precision}, "
          f"method {method}")
    print(f"{'':8} {'steps':>5} {'loop wall s':>11} {'trained tok':>11} {'trained tok/s':>13} "
          f"{'median step s':>13} {'peak RSS MiB':>12} {'mean step loss':>14}")
    for engine, r in runs.items():
        print(f"{engine:8} {r['steps']:>5} {seconds(r):>11.1f} {sum(r['step_trained_tokens']):>11} {tok_s(r):>13.1f} "
              f"{statistics.median(r['step_seconds']):>13.2f} {r['peak_rss_mib']:>12.0f} "
              f"{statistics.fmean(r['losses']):>14.4f}")
    sft, trl, loop = runs["sftlab"], runs.get("trl"), runs["loop"]
    if trl:
        print("step losses (sftlab | TRL):")
        for i, (a, b) in enumerate(zip(sft["losses"], trl["losses"]), start=1):
            print(f"  {i:>3}  {a:.4f} | {b:.4f}")
        print(f"speed sftlab/TRL (same steps): wall {seconds(trl) / seconds(sft):.2f}x, trained tokens/s "
              f"{tok_s(sft) / tok_s(trl):.2f}x (target >= 3x)")
        print(f"peak RSS sftlab/TRL: {sft['peak_rss_mib'] / trl['peak_rss_mib']:.2f} (target <= 0.5)")
        diff = statistics.fmean(sft["losses"]) / statistics.fmean(trl["losses"]) - 1
        print(f"mean step loss sftlab vs TRL: {diff:+.1%} (target within 3 %)")
    print(f"sftlab / minimal loop throughput: {tok_s(sft) / tok_s(loop):.1%} (target >= 90 %)")
    print_profile(sft.get("profile_ms", {}), sft.get("profile_wall_ms", 0.0), statistics.median(sft["step_seconds"]))
    flops = model_flops(sft["input_tokens"], sum(sft["step_trained_tokens"]), sft["square_sum"], method)
    achieved = flops / seconds(sft) / 1e9
    native = "bf16" if precision == "bf16" else "fp32"
    print(f"sftlab model FLOPs {achieved:.1f} GFLOP/s; MFU {achieved / peaks[native]:.1%} of the {native} matmul peak "
          f"({peaks[native]:.0f} GFLOP/s)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipes", default="alpaca,identity")
    ap.add_argument("--rows", type=int, help="alpaca rows (default 200)")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "bench")
    ap.add_argument("--no-trl", action="store_true", help="sftlab and the loop only (TRL not installed)")
    ap.add_argument("--child")
    ap.add_argument("--data", type=Path)
    ap.add_argument("--precision", help="bf16 or fp32 (default: what precision auto picks here)")
    ap.add_argument("--method", default="full", choices=("full", "lora"),
                    help=f"full (default), or lora (rank {LORA_RANK} on all linear layers, TRL through peft)")
    args = ap.parse_args()
    if args.child:
        _child(args.child, args.recipes, args.data, args.work, args.precision, args.method)
        return
    from sftlab.machine.hardware import pick_device, use_bf16

    auto = "bf16" if use_bf16("auto", pick_device()) else "fp32"
    precision = args.precision or auto
    print(f"host: {cpu_flags()}; {os.cpu_count()} CPUs; precision auto -> {auto}; measured in {precision}")
    results = {}
    for name in args.recipes.split(","):
        data = recipe_rows(name, args.rows, args.work)
        engines = ["sftlab", "loop"] + ([] if args.no_trl else ["trl"])
        results[name] = {e: _spawn(e, name, data, args.work, precision, args.method) for e in engines}
        results[name]["sftlab"]["square_sum"] = square_sum(name, data, RECIPES[name]["epochs"])
    peaks = {"fp32": matmul_peak("fp32"), "bf16": matmul_peak("bf16")}
    print(f"matmul peak (2048², best of 15): fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s")
    for name, runs in results.items():
        report(name, runs, precision, peaks, args.method)
    (args.work / "results.json").write_text(json.dumps({"precision": precision, "peaks": peaks, **results}, indent=1))


if __name__ == "__main__":
    main()
