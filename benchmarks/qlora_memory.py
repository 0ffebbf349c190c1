"""Memory of `method: qlora` against `method: lora` on this machine: peak RSS of the whole run, and of the training
steps alone.

    .venv/bin/python benchmarks/qlora_memory.py --steps 1 --batch-size 2 --max-length 128   # docs/benchmarks.md
    .venv/bin/python benchmarks/qlora_memory.py --models default

Models: the default model (SmolLM2-135M-Instruct) and a randomly initialised model of Qwen2.5-0.5B's shape (its
config written out below from the published values: 24 layers, hidden 896, 14 heads / 2 key-value heads, MLP 4864,
vocabulary 151 936, tied embeddings) with the real Qwen2 tokenizer of tests/fixtures. Each run: the first 16
alpaca rows, `--max-length` (256), `--batch-size` (4), `--steps` optimizer steps (2), LoRA r 16 on all linear layers, `precision: auto`,
in a process of its own (so that its peak is its own). "steps" is the peak from the first training step on (the
kernel's high-water mark reset once the model is loaded: /proc/self/clear_refs), "run" the peak of the whole
process (loading included: transformers reads the float weights before it quantises them).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
ALPACA = ROOT / "tests" / "fixtures" / "data" / "alpaca_en_demo.json"
QWEN_TOKENIZER = ROOT / "tests" / "fixtures" / "tokenizers" / "qwen2"

# Qwen2.5-0.5B's config.json, by hand (no hub): the published shape.
QWEN25_05B = {
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864,
    "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936,
    "max_position_embeddings": 32768, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": True,
    "hidden_act": "silu", "bos_token_id": 151643, "eos_token_id": 151643, "use_sliding_window": False,
}


def random_model(config: dict, tokenizer: Path, out: Path) -> Path:
    """A randomly initialised model of `config`'s shape with a real tokenizer, saved in bf16 (as such models ship)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if (out / "config.json").is_file():
        return out
    torch.manual_seed(0)
    cfg = AutoConfig.for_model(**config)
    AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16).save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(tokenizer)).save_pretrained(str(out))
    return out


def _hwm_mib() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(model: str, method: str, steps: int, work: Path, batch_size: int = 4, max_length: int = 256) -> None:
    from transformers import TrainerCallback

    from sftlab.config import load_config
    from sftlab.training import train

    class Peak(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            self.loaded = _hwm_mib()
            Path("/proc/self/clear_refs").write_text("5")  # the high-water mark restarts here
            self.t = time.perf_counter()

        def on_train_end(self, args, state, control, **kw):
            self.steps = _hwm_mib()
            self.seconds = time.perf_counter() - self.t

    data = work / "rows.json"
    data.write_text(json.dumps(json.loads(ALPACA.read_text())[:16]))
    sets = [f"datasets=[{data}]", f"method={method}", f"max_length={max_length}", f"batch_size={batch_size}",
            f"max_steps={steps}",
            "lora_r=16", "logging_steps=1", "save_steps=100000", f"output_dir={work / method}"]
    if model != "default":
        sets.append(f"model={model}")
    peak = Peak()
    train(load_config(None, sets), callbacks=[peak], quiet=True)
    print(json.dumps({"loaded": peak.loaded, "steps": peak.steps, "run": _hwm_mib(),
                      "step_s": peak.seconds / steps}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="default,qwen2.5-0.5b")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--child", nargs=3)
    ap.add_argument("--work", type=Path)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]), args.work, args.batch_size, args.max_length)
        return

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from train_speed import cpu_flags

    from sftlab.machine.hardware import choose_precision

    print(f"host: {cpu_flags()}; precision auto -> {'bf16' if choose_precision('auto', 'cpu').bf16 else 'fp32'}")
    print(f"{'model':16}{'method':8}{'run peak MiB':>14}{'steps peak MiB':>16}{'s/step':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            model = "default" if name == "default" else str(random_model(QWEN25_05B, QWEN_TOKENIZER, Path(tmp) / name))
            for method in ("lora", "qlora"):
                work = Path(tmp) / f"{name}-{method}"
                work.mkdir()
                done = subprocess.run([sys.executable, __file__, "--child", model, method, str(args.steps),
                                       "--work", str(work), "--batch-size", str(args.batch_size),
                                       "--max-length", str(args.max_length)], capture_output=True, text=True)
                if done.returncode:
                    print(f"{name:16}{method:8} failed: {done.stderr.strip().splitlines()[-1:]}")
                    continue
                r = json.loads(done.stdout.strip().splitlines()[-1])
                print(f"{name:16}{method:8}{r['run']:14.0f}{r['steps']:16.0f}{r['step_s']:8.1f}")


if __name__ == "__main__":
    main()
