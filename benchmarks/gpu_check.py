"""The one GPU check: what a session lent a GPU runs at once (such a session starts bare, with 15 minutes).

    python3 benchmarks/gpu_check.py --wheels .whl          # here, first: the wheels the GPU image lacks (below)
    python3 benchmarks/gpu_check.py --out "$OUT"           # on the GPU: well under 8 minutes on one H200
    python3 benchmarks/gpu_check.py --smoke --out DIR      # on CPU: a tiny model, 2 steps (the suite runs this)

It runs, in order, writing everything under --out:
1. the versions and the device (env.json), and the bf16 matmul peak measured in the same run (8192³ on a GPU);
2. the tests marked `cuda` (pytest -m cuda, the files in CUDA_TESTS: a bf16 step, the kernel attention against the
   per-example reference in loss and gradients, the trained-tokens-only head against full logits, QLoRA steps,
   resume bitwise) → pytest_cuda.txt;
3. sftlab against TRL's SFTTrainer on the same rows and steps (alpaca_en_demo, batch 8, max_length 1024, AdamW,
   cosine with 3 % warmup, clipping at 1.0, bf16 autocast over float32 weights in both) on randomly initialised
   models of Qwen2.5-0.5B's and Llama-3.2-1B's shapes (configs written out below from the published values) with
   the real tokenizers of tests/fixtures; each engine in a process of its own. sftlab runs with its defaults
   (padding-free rows, its attention choice). TRL gets its own best honest settings: prompt-completion rows (only
   answers trained), `padding_free` where flash-attention is installed (its padding-free batches are only exact
   under flash-attention; without it, padded batches with sdpa), Liger kernels only where liger-kernel is installed.
   Reported per engine: steps, trained tokens/s, median step, peak GPU memory (torch.cuda.max_memory_allocated),
   MFU (6 × non-embedding weights per input token + the head at trained tokens, over the measured peak) and mean
   loss → results.json, results.md (the table, printed last).

What the GPU image lacks (the device tool's KINDS.md: torch, transformers, peft and accelerate are there; the
image's own versions are used) travels as wheels in the repository's ignored `.whl/` folder, within the 64 MiB
that a call carries beside the working tree: `--wheels .whl` downloads them here (pip download, CPython 3.12,
manylinux, no dependencies: WHEELS, at the versions installed here) and trims bitsandbytes to its CUDA 13 and CPU
libraries (its wheel holds one library per CUDA version, ~40 MB; the image's torch is a CUDA 13 build). Then:

    echo /.whl/ >> .git/info/exclude; python3 benchmarks/gpu_check.py --wheels .whl
    # device run, carry [".whl"]:
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \\
        .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 && python3 benchmarks/gpu_check.py --out $OUT
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
ALPACA = FIXTURES / "data" / "alpaca_en_demo.json"
CUDA_TESTS = ["tests/test_attention.py", "tests/test_loss.py", "tests/test_train.py", "tests/test_resume.py"]
# The packages sftlab's training (and the TRL comparison) needs that the GPU image does not hold.
WHEELS = ["bitsandbytes", "trl", "datasets", "dill", "multiprocess", "pydantic", "pydantic-core", "annotated-types",
          "typing-inspection"]
BENCH_PINS = {"trl": "1.16.0"}  # pyproject.toml's bench extra, where it is not installed here
BNB_KEEP = ("libbitsandbytes_cuda130.so", "libbitsandbytes_cuda132.so", "libbitsandbytes_cpu.so")

# Published shapes, written out by hand (nothing from a hub); the weights are random.
SHAPES = {
    "qwen2.5-0.5b": ("qwen2", {
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864,
        "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936,
        "max_position_embeddings": 32768, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": True,
        "hidden_act": "silu", "use_sliding_window": False}),
    "llama-3.2-1b": ("llama3", {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 2048, "intermediate_size": 8192,
        "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64,
        "vocab_size": 128256, "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "tie_word_embeddings": True,
        "hidden_act": "silu", "rope_theta": 500000.0,
        "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 8192}}),
    # --smoke: the Qwen2 family at a size the CPU trains in seconds.
    "tiny-qwen2": ("qwen2", {
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 151936,
        "max_position_embeddings": 4096, "tie_word_embeddings": True, "hidden_act": "silu"}),
    # (--smoke --models tiny-llama3: the Llama 3 path, its tokenizer given sftlab's llama3 template)
    "tiny-llama3": ("llama3", {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 128256,
        "max_position_embeddings": 4096, "tie_word_embeddings": True, "hidden_act": "silu"}),
}
RUN = {"batch_size": 8, "max_length": 1024, "steps": 40, "learning_rate": 2e-5, "warmup_ratio": 0.03,
       "max_grad_norm": 1.0, "seed": 42}
SMOKE = {**RUN, "batch_size": 2, "max_length": 128, "steps": 2}


def _installed(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": sys.version.split()[0]}
    for name in ("torch", "transformers", "peft", "accelerate", "bitsandbytes", "trl", "liger-kernel", "flash-attn",
                 "datasets", "pydantic"):
        out[name] = _installed(name)
    return out


def matmul_peak(device: str, n: int) -> float:
    """bf16 GFLOP/s of an n³ matmul on random data: the mean of 10 after 3 warm-ups (GPU: synchronised)."""
    import torch

    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(3):
        a @ b
    sync()
    start = time.perf_counter()
    for _ in range(10):
        a @ b
    sync()
    return 2 * n**3 * 10 / (time.perf_counter() - start) / 1e9


def random_model(name: str, out: Path) -> Path:
    """A randomly initialised model of SHAPES[name] with its family's real tokenizer, saved in bf16."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder = out / name
    if (folder / "config.json").is_file():
        return folder
    tokenizer_name, config = SHAPES[name]
    tok = AutoTokenizer.from_pretrained(str(FIXTURES / "tokenizers" / tokenizer_name))
    if not tok.chat_template:  # (the Llama 3 tokenizer of the fixtures is the base model's: give it the Instruct one's)
        tok.chat_template = (ROOT / "sftlab" / "templates" / f"{tokenizer_name}.jinja").read_text()
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    ids = {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id}
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**config, **ids), dtype=torch.bfloat16)
    model.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder


def rows(run: dict, work: Path) -> Path:
    path = work / "rows.json"
    path.write_text(json.dumps(json.loads(ALPACA.read_text())[: run["steps"] * run["batch_size"]], ensure_ascii=False))
    return path


def model_flops(model: Path, input_tokens: int, trained_tokens: int) -> float:
    c = json.loads((model / "config.json").read_text())
    d, layers, vocab, ff = c["hidden_size"], c["num_hidden_layers"], c["vocab_size"], c["intermediate_size"]
    head_dim = c.get("head_dim") or d // c["num_attention_heads"]
    q, kv = head_dim * c["num_attention_heads"], head_dim * c["num_key_value_heads"]
    per_layer = d * q * 2 + d * kv * 2 + 3 * d * ff
    return 6 * layers * per_layer * input_tokens + 6 * vocab * d * trained_tokens


# --- the engines (each in a process of its own) ---

def _timer():
    from transformers import TrainerCallback

    class Timer(TrainerCallback):
        def __init__(self):
            self.times: list[float] = []

        def on_train_begin(self, args, state, control, **kw):
            import torch

            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()

        def on_step_begin(self, args, state, control, **kw):
            self._sync()
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self._sync()
            self.times.append(time.perf_counter() - self.t)

        @staticmethod
        def _sync():
            import torch

            if torch.cuda.is_available():
                torch.cuda.synchronize()

    return Timer()


def run_sftlab(model: Path, data: Path, work: Path, run: dict) -> dict:
    from sftlab.config import load_config
    from sftlab.training import train

    timer = _timer()
    sets = [f"model={model}", f"datasets=[{data}]", f"max_length={run['max_length']}",
            f"batch_size={run['batch_size']}", f"max_steps={run['steps']}", f"learning_rate={run['learning_rate']}",
            "lr_scheduler=cosine", f"warmup_ratio={run['warmup_ratio']}", f"max_grad_norm={run['max_grad_norm']}",
            f"seed={run['seed']}", "precision=bf16", "logging_steps=1", "save_steps=100000", "save_total_limit=1",
            f"output_dir={work / 'sftlab'}"]
    result = train(load_config(None, sets), callbacks=[timer], quiet=True)
    counts = [r["trained_tokens"] for r in result.metrics]
    from sftlab.machine.hardware import pick_device
    from sftlab.training.attention import choose

    # (one epoch over the rows: its input tokens are the examples' tokens, padding-free rows hold nothing else)
    return {"step_seconds": timer.times, "step_trained_tokens": [b - a for a, b in zip([0] + counts[:-1], counts)],
            "input_tokens": result.report.tokens, "losses": [r["loss"] for r in result.metrics],
            "settings": f"defaults (padding-free, attention {choose(pick_device(), True)})"}


def run_trl(model: Path, data: Path, work: Path, run: dict) -> dict:
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    flash = importlib.util.find_spec("flash_attn") is not None
    liger = importlib.util.find_spec("liger_kernel") is not None
    tok = AutoTokenizer.from_pretrained(str(model))
    attn = "flash_attention_2" if flash else "sdpa"
    net = AutoModelForCausalLM.from_pretrained(str(model), dtype=torch.float32, attn_implementation=attn)
    records = []
    for row in json.loads(data.read_text()):
        user = row["instruction"] + ("\n" + row["input"] if row.get("input") else "")
        records.append({"prompt": [{"role": "user", "content": user}],
                        "completion": [{"role": "assistant", "content": row["output"]}]})
    args = SFTConfig(
        output_dir=str(work / "trl"), max_length=run["max_length"], per_device_train_batch_size=run["batch_size"],
        learning_rate=run["learning_rate"], max_steps=run["steps"], packing=False, padding_free=flash,
        completion_only_loss=True, use_liger_kernel=liger, bf16=True, use_cpu=not torch.cuda.is_available(),
        logging_steps=1, report_to="none", save_strategy="no", gradient_checkpointing=False,
        lr_scheduler_type="cosine", warmup_steps=run["warmup_ratio"], max_grad_norm=run["max_grad_norm"],
        seed=run["seed"], disable_tqdm=True,
    )
    timer = _timer()
    trained: list[int] = []
    inputs_seen: list[int] = []

    class Counting(SFTTrainer):
        """Counts the trained targets and the input tokens (padding excluded) of every batch TRL trains on."""

        def training_step(self, model, inputs, num_items_in_batch=None):
            trained.append(int((inputs["labels"][:, 1:] != -100).sum()))
            mask = inputs.get("attention_mask")
            inputs_seen.append(int(mask.sum()) if mask is not None else int(inputs["input_ids"].numel()))
            return super().training_step(model, inputs, num_items_in_batch)

    trainer = Counting(model=net, args=args, train_dataset=datasets.Dataset.from_list(records), processing_class=tok,
                       callbacks=[timer])
    trainer.train()
    settings = (f"attn {attn}, padding_free {flash}, liger {liger}, completion_only_loss, no packing")
    return {"step_seconds": timer.times, "step_trained_tokens": trained, "input_tokens": sum(inputs_seen),
            "losses": [h["loss"] for h in trainer.state.log_history if "loss" in h], "settings": settings}


ENGINES = {"sftlab": run_sftlab, "trl": run_trl}


def _child(engine: str, model: Path, data: Path, work: Path, run: dict) -> None:
    import torch

    result = ENGINES[engine](model, data, work, run)
    result["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    print("RESULT " + json.dumps(result))


def _spawn(engine: str, model: Path, data: Path, work: Path, run: dict, log: Path) -> dict | str:
    proc = subprocess.run([sys.executable, __file__, "--child", engine, str(model), str(data), str(work),
                           json.dumps(run)], capture_output=True, text=True)
    log.write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        tail = [l for l in proc.stderr.strip().splitlines() if l.strip()][-1:] or ["no output"]
        return f"failed (exit {proc.returncode}): {tail[0][:300]}"
    return json.loads(line[len("RESULT "):])


# --- the stages ---

def stage_tests(out: Path, cuda: bool) -> dict:
    """pytest -m cuda over CUDA_TESTS, counted from its JUnit XML. Without CUDA they are only collected (each would
    be skipped): the smoke run checks that the marker still selects them."""
    import xml.etree.ElementTree as ET

    report = out / "pytest_cuda.xml"
    command = [sys.executable, "-m", "pytest", "-m", "cuda", "-p", "no:cacheprovider", "-rfEs", "--tb=short",
               f"--junitxml={report}", *CUDA_TESTS]
    if not cuda:
        command.append("--collect-only")
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    (out / "pytest_cuda.txt").write_text(proc.stdout + proc.stderr)
    seconds = round(time.perf_counter() - start, 1)
    if not cuda:
        # (-q lists test ids; -qq, counts per file)
        listed = [line for line in proc.stdout.splitlines() if line.startswith("tests/")]
        selected = sum(1 if "::" in line else int(line.rsplit(":", 1)[1]) for line in listed)
        return {"exit": proc.returncode, "selected": selected, "seconds": seconds,
                "summary": f"{selected} collected, not run (no CUDA)"}
    suite = ET.parse(report).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return {"exit": proc.returncode, "selected": counts["tests"], "seconds": seconds,
            "summary": f"{passed} passed, {counts['failures']} failed, {counts['errors']} errors, "
                       f"{counts['skipped']} skipped"}


def stage_engines(out: Path, models: list[str], run: dict, peak_gflops: float) -> list[dict]:
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    data = rows(run, work)
    have_trl = importlib.util.find_spec("trl") is not None
    table = []
    for name in models:
        model = random_model(name, work / "models")
        for engine in ENGINES:
            entry: dict = {"model": name, "engine": engine}
            if engine == "trl" and not have_trl:
                entry["result"] = "skipped: trl is not installed (pip install 'sftlab[bench]')"
                table.append(entry)
                continue
            got = _spawn(engine, model, data, work / f"{name}-{engine}", run, out / f"log_{name}_{engine}.txt")
            if isinstance(got, str):
                entry["result"] = got
            else:
                seconds = sum(got["step_seconds"])
                trained = sum(got["step_trained_tokens"])
                inputs = got["input_tokens"]
                entry.update({
                    "steps": len(got["step_seconds"]), "trained_tokens": trained, "seconds": round(seconds, 3),
                    "trained_tokens_per_s": round(trained / seconds, 1) if seconds else None,
                    "median_step_s": round(statistics.median(got["step_seconds"]), 4) if got["step_seconds"] else None,
                    "peak_gpu_mib": round(got["peak_gpu_mib"]) if got["peak_gpu_mib"] is not None else None,
                    "mean_loss": round(statistics.mean(got["losses"]), 4) if got["losses"] else None,
                    "settings": got["settings"], "input_tokens": inputs,
                })
            table.append(entry)
    # MFU: the model FLOPs of each engine's own input tokens (padding not counted) over its step time.
    for entry in table:
        if entry.get("input_tokens") and entry.get("seconds"):
            flops = model_flops(work / "models" / entry["model"], entry["input_tokens"], entry["trained_tokens"])
            entry["mfu_percent"] = round(100 * flops / entry["seconds"] / (peak_gflops * 1e9), 1)
    return table


def markdown(env: dict, peak: float, tests: dict, table: list[dict]) -> str:
    lines = [f"device: {env['device']}; " + ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v),
             f"bf16 matmul peak measured in this run: {peak:,.0f} GFLOP/s",
             f"tests marked cuda: {tests['summary']} (exit {tests['exit']}, {tests['seconds']} s)", "",
             "| model | engine | steps | trained tokens/s | median step s | peak GPU MiB | MFU % | mean loss | settings |",
             "|---|---|---|---|---|---|---|---|---|"]
    for e in table:
        if "seconds" not in e:
            lines.append(f"| {e['model']} | {e['engine']} | {e['result']} | | | | | | |")
            continue
        lines.append(f"| {e['model']} | {e['engine']} | {e['steps']} | {e['trained_tokens_per_s']} | "
                     f"{e['median_step_s']} | {e['peak_gpu_mib']} | {e.get('mfu_percent', '')} | {e['mean_loss']} | "
                     f"{e['settings']} |")
    return "\n".join(lines) + "\n"


def prepare_wheels(folder: Path) -> None:
    """pip download (CPython 3.12, manylinux x86-64, no dependencies) of WHEELS at the versions installed here;
    bitsandbytes trimmed to BNB_KEEP."""
    folder.mkdir(parents=True, exist_ok=True)
    platforms = [a for p in ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64",
                             "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64")
                 for a in ("--platform", p)]
    pins = [f"{name}=={_installed(name) or BENCH_PINS[name]}" for name in WHEELS]
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version",
                    "3.12", "--implementation", "cp", *platforms, "-d", str(folder), *pins], check=True)
    for wheel in folder.glob("bitsandbytes-*.whl"):
        trimmed = wheel.with_suffix(".trim")
        with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(trimmed, "w", zipfile.ZIP_DEFLATED) as dst:
            for item in src.infolist():
                name = item.filename
                if name.endswith(".so") and Path(name).name not in BNB_KEEP:
                    continue
                data = src.read(item)
                if name.endswith(".dist-info/RECORD"):  # the dropped libraries leave the record too
                    data = "".join(l for l in data.decode().splitlines(keepends=True)
                                   if not (l.split(",")[0].endswith(".so")
                                           and Path(l.split(",")[0]).name not in BNB_KEEP)).encode()
                dst.writestr(item, data)
        trimmed.replace(wheel)
    total = sum(p.stat().st_size for p in folder.glob("*.whl"))
    tracked = subprocess.run(["git", "ls-files", "-z"], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    tree = sum((ROOT / f).stat().st_size for f in tracked.split("\0") if f and (ROOT / f).is_file())
    print(f"{len(list(folder.glob('*.whl')))} wheels, {total / 2**20:.1f} MiB in {folder}; with the tracked tree "
          f"({tree / 2**20:.1f} MiB): {(total + tree) / 2**20:.1f} MiB of the 64 MiB a device call carries")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ROOT / "runs" / "gpu_check")))
    ap.add_argument("--smoke", action="store_true", help="CPU: a tiny model, 2 steps")
    ap.add_argument("--models", help="comma-separated: " + ", ".join(SHAPES))
    ap.add_argument("--steps", type=int)
    ap.add_argument("--skip-tests", action="store_true")
    ap.add_argument("--wheels", type=Path, help="download the wheels the GPU image lacks into this folder, and stop")
    ap.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        engine, model, data, work, run = args.child
        _child(engine, Path(model), Path(data), Path(work), json.loads(run))
        return
    if args.wheels:
        prepare_wheels(args.wheels)
        return

    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.smoke:
        sys.exit("gpu_check: no CUDA GPU here (torch sees none); on CPU run it with --smoke")
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    run = dict(SMOKE if args.smoke else RUN)
    if args.steps:
        run["steps"] = args.steps
    models = (args.models or ("tiny-qwen2" if args.smoke else "qwen2.5-0.5b,llama-3.2-1b")).split(",")
    env = {"device": torch.cuda.get_device_name() if cuda else f"CPU ({os.cpu_count()} cores)",
           "versions": versions(), "run": run, "smoke": args.smoke}
    (out / "env.json").write_text(json.dumps(env, indent=2))
    peak = matmul_peak("cuda" if cuda else "cpu", 8192 if cuda else 512)
    print(f"device: {env['device']}; bf16 matmul peak {peak:,.0f} GFLOP/s", flush=True)
    tests = ({"exit": None, "summary": "not run (--skip-tests)", "seconds": 0} if args.skip_tests
             else stage_tests(out, cuda))
    print(f"tests marked cuda: {tests['summary']}", flush=True)
    table = stage_engines(out, models, run, peak)
    (out / "results.json").write_text(json.dumps({"env": env, "peak_gflops": peak, "tests": tests, "table": table},
                                                 indent=2))
    text = markdown(env, peak, tests, table)
    (out / "results.md").write_text(text)
    print(text)
    failed = [e for e in table if str(e.get("result", "")).startswith("failed")]
    sys.exit(1 if failed or (tests["exit"] not in (None, 0, 5)) else 0)


if __name__ == "__main__":
    main()
