"""A run killed at any moment and resumed gives the same per-step losses, learning rates and data
order as an uninterrupted run: bitwise on CPU with the same seed."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import SHARED_DATA
import re
import shutil
import signal
import time
from helpers import _one_line, _train_sets
from sftlab.config import load_config
from sftlab.errors import SftlabError

pytestmark = pytest.mark.slow  # real trainings, models, servers and subprocess CLIs

HERE = Path(__file__).parent


def _run(mode, step, sets):
    return subprocess.run([sys.executable, str(HERE / "killable_run.py"), mode, str(step), *sets],
                          capture_output=True, text=True, cwd=HERE.parent, timeout=600)


def _records(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def uninterrupted(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("resume") / "full"
    sets = _sets(tiny_model, out)
    done = _run("none", 0, sets)
    assert done.returncode == 0, done.stderr[-2000:]
    return _records(out)


def _sets(tiny_model, out):
    return [f"model={tiny_model}", f"datasets=[{SHARED_DATA / 'alpaca_en_demo.json'}]", "template=llama2",
            "limit=40", "max_length=256", "batch_size=2", "grad_accum=2", "max_steps=8", "save_steps=3",
            "logging_steps=1", "learning_rate=1e-3", "neftune_alpha=5",
            "precision=fp32", "seed=3", f"output_dir={out}"]


@pytest.mark.parametrize("mode, step", [("step", 5), ("save", 6)])
def test_killed_and_resumed_run_matches_the_uninterrupted_one(tiny_model, tmp_path, uninterrupted, mode, step):
    out = tmp_path / "killed"
    sets = _sets(tiny_model, out)
    killed = _run(mode, step, sets)
    assert killed.returncode == 17, killed.stderr[-2000:]
    checkpoints = sorted(p.name for p in out.glob("checkpoint-*"))
    assert checkpoints == ["checkpoint-3"]  # a half-written checkpoint-6 never appears under its name
    resumed = _run("none", 0, sets + ["resume=true"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    got = _records(out)
    assert [r["step"] for r in got] == list(range(1, 9))
    for key in ("loss", "learning_rate", "grad_norm", "trained_tokens"):
        assert [r[key] for r in got] == [r[key] for r in uninterrupted], key


def test_resume_of_a_tied_model_reports_no_missing_keys(tiny_model, tmp_path, cli):
    """The tiny model ties lm_head to the embeddings; a checkpoint holds the matrix once, and resuming must
    not claim lm_head.weight is missing. (`sftlab train` in this process: what it logs, transformers' warnings
    included, is captured as a subprocess's stderr would be.)"""
    from helpers import SHARED_DATA

    base = ["train", "--set", f"model={tiny_model}", "--set",
            f"datasets=[{SHARED_DATA / 'identity.json'}]", "--set", "template=llama2", "--set", "save_steps=1",
            "--set", f"output_dir={tmp_path / 'out'}", "--set", "limit=8", "--set", "precision=fp32"]
    first = cli(*base, "--set", "max_steps=2")
    assert first.returncode == 0, first.stderr
    again = cli(*base, "--set", "max_steps=4", "--set", "resume=true")
    assert again.returncode == 0, again.stderr
    assert "4 steps" in again.stderr and "missing keys" not in again.stderr.lower()
    # A finished run resumed as it was takes no step past its end (transformers alone would take one).
    finished = cli(*base, "--set", "max_steps=4", "--set", "resume=true")
    assert finished.returncode == 0, finished.stderr
    steps = [json.loads(line)["step"] for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 4] and sorted(p.name for p in (tmp_path / "out").glob("checkpoint-*")) == [
        "checkpoint-3", "checkpoint-4"]


def test_a_finished_run_reruns_from_its_config_yaml_anywhere_and_says_there_is_nothing_to_train(
        tiny_model, tmp_path, monkeypatch, caplog):
    from sftlab.config import load_config
    from sftlab.training import train

    work = tmp_path / "work"
    (work / "data").mkdir(parents=True)
    (work / "data" / "d.json").write_text((SHARED_DATA / "alpaca_en_demo.json").read_text(encoding="utf-8"))
    monkeypatch.chdir(work)
    first = train(load_config(None, [f"model={tiny_model}", "datasets=[data/d.json]", "template=llama2", "limit=8",
                                     "max_length=128", "batch_size=4", "max_steps=2", "precision=fp32",
                                     "output_dir=runs/x"]), quiet=True)
    saved = (work / "runs" / "x" / "config.yaml").read_text(encoding="utf-8")
    assert f"path: {work / 'data' / 'd.json'}" in saved and f"output_dir: {work / 'runs' / 'x'}" in saved
    assert "resume: false" in saved
    monkeypatch.chdir(tmp_path)  # elsewhere: the saved config names everything by absolute path
    with caplog.at_level("INFO", logger="sftlab"):
        again = train(load_config(work / "runs" / "x" / "config.yaml", ["resume=true"]), quiet=True)
    assert f"resume: continuing from {work / 'runs' / 'x' / 'checkpoint-2'} (step 2, " in caplog.text
    assert again.steps == 2 and again.summary() == f"nothing to train: the run had finished at step 2 " \
                                                    f"(final loss {first.final_loss:.4f})"


@pytest.mark.cuda
def test_on_cuda_a_killed_and_resumed_run_matches_the_uninterrupted_one(tiny_model, tmp_path, uninterrupted):
    """The same comparison on a GPU (the processes pick CUDA by themselves): bitwise."""
    test_killed_and_resumed_run_matches_the_uninterrupted_one(tiny_model, tmp_path, uninterrupted, "step", 5)


# ---- hostile and odd input (issue 25's rounds) ----

@pytest.fixture(scope="module")
def two_checkpoints(tiny_model, tmp_path_factory):
    from sftlab.training import train

    out = tmp_path_factory.mktemp("ckpt") / "run"
    train(load_config(None, _train_sets(tiny_model, out, "max_steps=4", "save_steps=2", "limit=16")), quiet=True)
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    return out


def _damaged(two_checkpoints, tmp_path, damage):
    out = tmp_path / "run"
    shutil.copytree(two_checkpoints, out)
    target = out / "checkpoint-4" / damage
    if damage in ("optimizer.pt", "sftlab_state.json"):
        target.unlink()
    else:
        data = target.read_bytes()
        target.write_bytes(data[: len(data) // 2])
    return out


@pytest.mark.parametrize(
    "damage, problem",
    [("optimizer.pt", "optimizer.pt is missing"), ("sftlab_state.json", "sftlab_state.json is missing"),
     ("model.safetensors", "model.safetensors is truncated"), ("trainer_state.json", "trainer_state.json is unreadable")],
)
@pytest.mark.slow
def test_resume_passes_over_an_incomplete_checkpoint(two_checkpoints, tmp_path, damage, problem, caplog):
    from sftlab.training.resume import checkpoint_problem, resume_checkpoint

    out = _damaged(two_checkpoints, tmp_path, damage)
    assert checkpoint_problem(out / "checkpoint-2") is None
    assert checkpoint_problem(out / "checkpoint-4") == problem
    config = load_config(None, _train_sets("m", out, "resume=true"), check_files=False)
    with caplog.at_level("WARNING", logger="sftlab"):
        assert resume_checkpoint(config) == str(out / "checkpoint-2")
    assert f"checkpoint-4 is incomplete ({problem}); resuming from checkpoint-2" in caplog.text
    named = load_config(None, _train_sets("m", out, f"resume={out / 'checkpoint-4'}"), check_files=False)
    with pytest.raises(SftlabError, match=f"checkpoint {out / 'checkpoint-4'} is incomplete \\({problem}\\)"):
        resume_checkpoint(named)


def test_resume_with_no_complete_checkpoint_stops(two_checkpoints, tmp_path):
    from sftlab.training.resume import resume_checkpoint

    out = _damaged(two_checkpoints, tmp_path, "optimizer.pt")
    (out / "checkpoint-2" / "optimizer.pt").unlink()
    config = load_config(None, _train_sets("m", out, "resume=true"), check_files=False)
    with pytest.raises(SftlabError, match="no complete checkpoint"):
        resume_checkpoint(config)


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_says_how_to_resume(tiny_model, tmp_path):
    out = tmp_path / "run"
    sets = [a for s in _train_sets(tiny_model, out, "max_steps=400", "save_steps=1000", "limit=64", "batch_size=1")
            for a in ("--set", s)]
    proc = subprocess.Popen([sys.executable, "-m", "sftlab", "train", "--quiet", *sets], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not (out / "metrics.jsonl").is_file() and time.time() < deadline:  # training has begun
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=240)[1]
    assert proc.returncode == 143, err[-3000:]
    flat = _one_line(err)
    m = re.search(r"stopped by SIGTERM at step (\d+) of 400; (\S+) holds the run up to step (\d+)", flat)
    assert m and m.group(1) == m.group(3) and m.group(2) == str(out / f"checkpoint-{m.group(1)}"), flat[-2000:]
    assert "continue with: sftlab train --quiet" in flat and "--set resume=true" in flat and "Traceback" not in err
    from sftlab.training.resume import checkpoint_problem

    assert checkpoint_problem(out / f"checkpoint-{m.group(1)}") is None
    assert not (out / "model.safetensors").exists()  # an unfinished run has no final model


def _handmade_checkpoint(folder, step, trainer_state=None, sftlab_state=None):
    """A checkpoint as complete as checkpoint_problem asks (zip archives as torch.save writes, whole weights),
    written by hand: no training needed to test what resuming reads of it."""
    import zipfile

    folder.mkdir(parents=True)
    (folder / "trainer_state.json").write_text(json.dumps(trainer_state or {"global_step": step, "max_steps": 8}))
    (folder / "sftlab_state.json").write_text(json.dumps(sftlab_state or {"trained_tokens": 10 * step}))
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
        with zipfile.ZipFile(folder / name, "w") as z:
            z.writestr("data.pkl", b"x")
    header = json.dumps({"w": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]}}).encode()
    (folder / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 4)
    return folder


def _within(seconds, call, fifo):
    import os
    import threading

    out = {}
    worker = threading.Thread(target=lambda: out.update(result=call()), daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # (releases the blocked reader)
        pytest.fail("blocked on a FIFO")
    return out["result"]


@pytest.mark.parametrize("planted", ["trainer_state.json", "sftlab_state.json", "rng_state.pth", "model.safetensors"])
def test_a_fifo_planted_in_a_checkpoint_is_passed_over_never_read(tmp_path, planted, caplog):
    import os

    from sftlab.training.resume import checkpoint_problem, resume_checkpoint

    out = tmp_path / "run"
    _handmade_checkpoint(out / "checkpoint-2", 2)
    newest = _handmade_checkpoint(out / "checkpoint-4", 4)
    (newest / planted).unlink()
    os.mkfifo(newest / planted)
    problem = f"{planted} is a FIFO, not a file sftlab writes"
    assert _within(10, lambda: checkpoint_problem(newest), newest / planted) == problem
    config = load_config(None, _train_sets("m", out, "resume=true"), check_files=False)
    with caplog.at_level("WARNING", logger="sftlab"):
        assert _within(10, lambda: resume_checkpoint(config), newest / planted) == str(out / "checkpoint-2")
    assert f"checkpoint-4 is incomplete ({problem}); resuming from checkpoint-2" in caplog.text


@pytest.mark.parametrize("trainer_state, sftlab_state, problem", [
    ({"global_step": "4"}, None, "trainer_state.json: global_step is not a count"),
    ({"global_step": 1e300}, None, "trainer_state.json: global_step is not a count"),
    ({"max_steps": 8}, None, "trainer_state.json: global_step is missing"),
    ([4], None, "trainer_state.json is not a mapping"),
    (None, {"trained_tokens": float("nan")}, "sftlab_state.json: trained_tokens is not a count"),
    (None, {"processes": 0, "global_batch": 8}, "sftlab_state.json: processes is not a positive count"),
    (None, {"processes": 2}, "sftlab_state.json: processes is recorded without global_batch"),
    (None, {"processes": 2, "global_batch": [8]}, "sftlab_state.json: global_batch is not a positive count"),
])
def test_forged_checkpoint_state_is_an_incomplete_checkpoint_not_a_traceback(tmp_path, trainer_state, sftlab_state,
                                                                           problem):
    from sftlab.training.resume import checkpoint_problem, resume_checkpoint

    out = tmp_path / "run"
    forged = _handmade_checkpoint(out / "checkpoint-4", 4, trainer_state, sftlab_state)
    assert checkpoint_problem(forged) == problem
    named = load_config(None, _train_sets("m", out, f"resume={forged}"), check_files=False)
    with pytest.raises(SftlabError) as e:
        resume_checkpoint(named)
    assert str(e.value) == (f"resume: checkpoint {forged} is incomplete ({problem}); an exact resume needs model, "
                            "optimizer, scheduler, RNG and trainer state")


def test_checkpoint_names_that_are_no_checkpoint_or_a_link(tmp_path, caplog):
    """checkpoint-² (a digit to str.isdigit, not to int()), a file named checkpoint-9, a link named checkpoint-7,
    and a 20-digit step."""
    from sftlab.training.resume import existing_checkpoints, resume_checkpoint

    out = tmp_path / "run"
    _handmade_checkpoint(out / "checkpoint-2", 2)
    _handmade_checkpoint(tmp_path / "elsewhere", 6)
    (out / "checkpoint-²").mkdir()
    (out / "checkpoint-9").write_text("")
    (out / "checkpoint-7").symlink_to(tmp_path / "elsewhere")
    _handmade_checkpoint(out / "checkpoint-99999999999999999999", 5)
    assert [p.name for p in existing_checkpoints(out)] == ["checkpoint-2", "checkpoint-7",
                                                            "checkpoint-99999999999999999999"]
    config = load_config(None, _train_sets("m", out, "resume=true"), check_files=False)
    assert resume_checkpoint(config) == str(out / "checkpoint-99999999999999999999")
    import shutil

    shutil.rmtree(out / "checkpoint-99999999999999999999")
    with caplog.at_level("WARNING", logger="sftlab"):
        assert resume_checkpoint(config) == str(out / "checkpoint-2")
    assert ("checkpoint-7 is incomplete (it is a symbolic link (sftlab writes checkpoints as folders)); resuming "
            "from checkpoint-2") in caplog.text
