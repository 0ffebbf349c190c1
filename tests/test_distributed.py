"""`torchrun --nproc_per_node 2 -m sftlab train …` (gloo on CPU) reaches the same losses and weights as
one process with the same global batch."""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM

from conftest import SHARED_DATA

pytestmark = pytest.mark.slow  # real trainings, models, servers and subprocess CLIs


def _sets(tiny_model, out, batch_size):
    return [f"--set=model={tiny_model}", f"--set=datasets=[{SHARED_DATA / 'alpaca_en_demo.json'}]",
            "--set=template=llama2", "--set=limit=24", "--set=max_length=256", "--set=packing=false",
            f"--set=batch_size={batch_size}", "--set=max_steps=3", "--set=logging_steps=1",
            "--set=learning_rate=1e-3", "--set=precision=fp32", "--set=seed=5", f"--set=output_dir={out}",
            "--set=save_steps=100", "--quiet"]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _losses(out):
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_match_one_with_the_same_global_batch(tiny_model, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    one = subprocess.run([sys.executable, "-m", "sftlab", "train", *_sets(tiny_model, tmp_path / "one", 4)],
                         capture_output=True, text=True, env=env, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
         "-m", "sftlab", "train", *_sets(tiny_model, tmp_path / "two", 2)],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    assert len(_losses(tmp_path / "two")) == 3
    assert _losses(tmp_path / "two") == pytest.approx(_losses(tmp_path / "one"), rel=1e-5)
    a = AutoModelForCausalLM.from_pretrained(str(tmp_path / "one"))
    b = AutoModelForCausalLM.from_pretrained(str(tmp_path / "two"))
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(p, q, atol=1e-5), n
