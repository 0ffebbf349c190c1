"""benchmarks/gpu_check.py --smoke: the GPU check's own run, on CPU with a tiny model, so that the script a lent GPU
runs cannot rot between GPUs."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a subprocess that trains (and TRL too, where installed)

ROOT = Path(__file__).resolve().parent.parent
# The tests marked cuda: attention 2 (varlen, flex), loss 2 (fp32, bf16), train 2 (bf16 step, qlora), resume 1.
CUDA_TESTS = 7


def test_the_smoke_run_trains_sftlab_and_trl_or_says_trl_was_skipped(tmp_path):
    import importlib.util

    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--smoke", "--out",
                           str(tmp_path)], capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["tests"]["selected"] == CUDA_TESTS and results["tests"]["exit"] == 0
    assert results["peak_gflops"] > 0 and results["env"]["smoke"] is True
    rows = {r["engine"]: r for r in results["table"]}
    assert rows.keys() == {"sftlab", "trl"} and {r["model"] for r in results["table"]} == {"tiny-qwen2"}
    sftlab = rows["sftlab"]
    assert sftlab["steps"] == 2 and sftlab["trained_tokens"] > 0 and sftlab["mfu_percent"] > 0
    assert sftlab["peak_gpu_mib"] is None and "sftlab_packed" in sftlab["settings"]  # CPU: no GPU memory, the loop
    if importlib.util.find_spec("trl") is None:
        assert rows["trl"]["result"] == "skipped: trl is not installed (pip install 'sftlab[bench]')"
    else:
        assert rows["trl"]["steps"] == 2 and rows["trl"]["trained_tokens"] > 0
    table = (tmp_path / "results.md").read_text()
    assert "| tiny-qwen2 | sftlab | 2 |" in table and table in done.stdout
    for name in ("env.json", "pytest_cuda.txt", "log_tiny-qwen2_sftlab.txt"):
        assert (tmp_path / name).is_file(), name


def test_without_a_gpu_the_full_check_refuses_in_one_line(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here")
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--out", str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 1
    assert done.stderr.strip() == "gpu_check: no CUDA GPU here (torch sees none); on CPU run it with --smoke"
