"""More than one process (gloo on CPU, 2 processes, a tiny model): DDP and FSDP2 reach the same losses and
weights as one process with the same global batch; a run killed after a checkpoint and resumed gives the same
per-step losses as the uninterrupted run, at the same or at another number of processes."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from helpers import SHARED_DATA

pytestmark = pytest.mark.slow  # real trainings, models, servers and subprocess CLIs

HERE = Path(__file__).parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


def _sets(tiny_model, out, batch_size, strategy="ddp"):
    return [f"model={tiny_model}", f"datasets=[{SHARED_DATA / 'alpaca_en_demo.json'}]", "template=llama2",
            "limit=24", "max_length=256", "packing=false", f"batch_size={batch_size}", "max_steps=3",
            "logging_steps=1", "learning_rate=1e-3", "precision=fp32", "seed=5", f"output_dir={out}",
            "save_steps=100", f"distributed.strategy={strategy}"]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(nproc, args, script=("-m", "sftlab", "train")):
    """`torchrun --nproc_per_node nproc …` (nproc 0: one plain process, no launcher)."""
    launcher = [] if nproc == 0 else ["-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
                                      "--master_port", str(_free_port())]
    return subprocess.run([sys.executable, *launcher, *script, *args], capture_output=True, text=True, env=ENV,
                          cwd=HERE.parent, timeout=600)


def _records(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def one_process(tiny_model, tmp_path_factory):
    """The output_dir of the one-process run of each method (made once); lora_dropout 0, since dropout draws
    differ with the number of processes."""
    runs: dict[str, Path] = {}

    def get(method):
        if method not in runs:
            out = tmp_path_factory.mktemp("one") / method
            sets = _sets(tiny_model, out, 4) + [f"method={method}", *(["lora_dropout=0"] if method != "full" else [])]
            done = _launch(0, [f"--set={s}" for s in sets] + ["--quiet"])
            assert done.returncode == 0, done.stderr[-3000:]
            runs[method] = out
        return runs[method]

    return get


# (FSDP2's full training is the first phase of its hybrid run, compared weight by weight at the end)
@pytest.mark.parametrize("strategy, method", [("ddp", "full"), ("fsdp2", "lora"), ("fsdp2", "hybrid")])
def test_two_processes_match_one_with_the_same_global_batch(tiny_model, tmp_path, one_process, strategy, method):
    """fp32; losses within 1e-6 relative, weights (or the adapter) and logits of the final model within 1e-5."""
    out, one = tmp_path / "two", one_process(method)
    sets = [f"--set={s}" for s in _sets(tiny_model, out, 2, strategy)
            + [f"method={method}", *(["lora_dropout=0"] if method != "full" else [])]]
    if strategy == "ddp":
        done = _launch(2, sets + ["--quiet"])
    else:  # through the convenience flag, which runs torchrun itself
        done = _launch(0, ["--nproc", "2", *sets, "--quiet"])
        assert "torch.distributed.run --standalone --nproc_per_node 2 -m sftlab train --set=model=" in done.stderr
    assert done.returncode == 0, done.stderr[-3000:]
    two = [r["loss"] for r in _records(out)]
    assert len(two) == 3
    assert two == pytest.approx([r["loss"] for r in _records(one)], rel=1e-6)
    if strategy == "fsdp2":  # sharded while training, an ordinary model folder at the end
        assert (out / "checkpoint-3" / "pytorch_model_fsdp_0" / ".metadata").is_file()
    if method == "lora":
        a, b = (load_file(str(d / "adapter_model.safetensors")) for d in (one, out))
        assert sorted(a) == sorted(b) and len(a) == 28  # A and B of 7 projections × 2 layers
        for name, value in a.items():
            assert torch.allclose(value, b[name], atol=1e-5), name
        return
    a = AutoModelForCausalLM.from_pretrained(str(one))
    b = AutoModelForCausalLM.from_pretrained(str(out))
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(p, q, atol=1e-5), n
    ids = torch.tensor([[1, 450, 4996, 17354, 1701, 432, 29871, 30919]])
    with torch.no_grad():
        assert torch.allclose(a(ids).logits, b(ids).logits, atol=1e-5)


def _resume_sets(tiny_model, out, strategy):
    return [f"model={tiny_model}", f"datasets=[{SHARED_DATA / 'alpaca_en_demo.json'}]", "template=llama2",
            "limit=40", "max_length=256", "batch_size=2", "grad_accum=2", "max_steps=6", "save_steps=2",
            "logging_steps=1", "learning_rate=1e-3", "precision=fp32", "seed=3", f"output_dir={out}",
            f"distributed.strategy={strategy}"]


KILLABLE = (str(HERE / "killable_run.py"),)


@pytest.fixture(scope="module")
def uninterrupted(tiny_model, tmp_path_factory):
    """The metrics of the uninterrupted 2-process run of each strategy (made once)."""
    runs: dict[str, list[dict]] = {}

    def get(strategy):
        if strategy not in runs:
            out = tmp_path_factory.mktemp("full") / strategy
            full = _launch(2, ["none", "0", *_resume_sets(tiny_model, out, strategy)], KILLABLE)
            assert full.returncode == 0, full.stderr[-3000:]
            runs[strategy] = _records(out)
        return runs[strategy]

    return get


@pytest.fixture(scope="module")
def killed(tiny_model, tmp_path_factory):
    """The folder of a 2-process run of each strategy killed after step 5 (made once; each test resumes a copy)."""
    runs: dict[str, Path] = {}

    def get(strategy):
        if strategy not in runs:
            out = tmp_path_factory.mktemp("killed") / strategy
            died = _launch(2, ["step", "5", *_resume_sets(tiny_model, out, strategy)], KILLABLE)
            assert died.returncode != 0
            assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
            runs[strategy] = out
        return runs[strategy]

    return get


@pytest.mark.parametrize("strategy, resumed_by", [("ddp", 2), ("fsdp2", 2), ("ddp", 1), ("fsdp2", 1)])
def test_killed_and_resumed_two_process_run_matches_the_uninterrupted_one(tiny_model, tmp_path, uninterrupted,
                                                                           killed, strategy, resumed_by):
    """Killed after step 5 (checkpoints 2 and 4 written), resumed by 2 processes (the same losses to 1e-6) or by
    one (grad_accum doubled so an optimizer step takes the same 8 examples: the same losses to 1e-5)."""
    out = tmp_path / "killed"
    shutil.copytree(killed(strategy), out, symlinks=True)
    # One process resumes a DDP run on its own, an FSDP2 run under torchrun (sharded checkpoints need a group).
    nproc = 2 if resumed_by == 2 else (1 if strategy == "fsdp2" else 0)
    resumed = _launch(nproc, ["none", "0", *_resume_sets(tiny_model, out, strategy), "resume=true"], KILLABLE)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    got, want = _records(out), uninterrupted(strategy)
    assert [r["step"] for r in got] == list(range(1, 7))
    tolerance = 1e-6 if resumed_by == 2 else 1e-5
    assert [r["loss"] for r in got] == pytest.approx([r["loss"] for r in want], rel=tolerance)
    assert [r["trained_tokens"] for r in got] == [r["trained_tokens"] for r in want]
    if resumed_by == 1:
        assert ("checkpoint-4 was written by 2 processes, this run has 1; grad_accum 2 → 4 keeps 8 examples per "
                "optimizer step") in " ".join(resumed.stderr.split())


def test_resume_by_a_number_of_processes_that_cannot_keep_the_global_batch_is_refused(tiny_model, tmp_path,
                                                                                      monkeypatch):
    from sftlab.config import load_config
    from sftlab.errors import SftlabError
    from sftlab.training.resume import keep_global_batch

    checkpoint = tmp_path / "checkpoint-4"
    checkpoint.mkdir()
    (checkpoint / "sftlab_state.json").write_text('{"trained_tokens": 1, "processes": 2, "global_batch": 4}')
    (checkpoint / "trainer_state.json").write_text('{"global_step": 4}')
    config = load_config(None, [f"datasets=[{SHARED_DATA / 'alpaca_en_demo.json'}]", "batch_size=3"])
    with pytest.raises(SftlabError, match="4 examples per optimizer step, which 1 processes × batch_size 3 cannot"):
        keep_global_batch(config, checkpoint)
    kept = keep_global_batch(config.model_copy(update={"batch_size": 1}), checkpoint)
    assert kept.grad_accum == 4
    # A checkpoint from before the number of processes was recorded is resumed as it comes.
    (checkpoint / "sftlab_state.json").write_text('{"trained_tokens": 1}')
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert keep_global_batch(config, checkpoint) is config


@pytest.mark.skipif(not torch.cuda.is_available(), reason="DeepSpeed's engine needs CUDA (no GPU here); run on a "
                    "GPU machine with `pip install deepspeed`")
@pytest.mark.parametrize("zero", ["zero2", "zero3"])
def test_deepspeed_matches_one_process(tiny_model, tmp_path, one_process, zero):
    pytest.importorskip("deepspeed", reason="DeepSpeed is not installed (pip install deepspeed)")
    gpus = torch.cuda.device_count()
    if 4 % gpus:
        pytest.skip(f"{gpus} GPUs cannot split the global batch of 4")
    out = tmp_path / zero
    sets = _sets(tiny_model, out, 4 // gpus, "deepspeed") + [
        f"distributed.deepspeed={HERE.parent / 'examples' / 'deepspeed' / f'{zero}.json'}"]
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(gpus),
                           "--master_port", str(_free_port()), "-m", "sftlab", "train",
                           *[f"--set={s}" for s in sets], "--quiet"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    want = [r["loss"] for r in _records(one_process("full"))]
    assert [r["loss"] for r in _records(out)] == pytest.approx(want, rel=1e-3)
