"""sftlab/training/session.py: the lifecycle every run shares, seen through a task head's run (the SFT run's is
tests/test_train.py's and tests/test_resume.py's): its total steps noted for `sftlab runs` and the UI while it trains,
a signal stopping it at a checkpoint it resumes from. And no module of the training package but the methods' setups
names a method (the method table's records say what a method does)."""

from __future__ import annotations

import ast
import json
import os
import signal
from pathlib import Path

import pytest
from transformers import TrainerCallback

import sftlab
from sftlab.config.methods import METHOD_NAMES

# 12 labelled rows, 4 a batch, one epoch: 3 optimizer steps.
ROWS = [{"text": f"good fine {i}", "label": "pos"} for i in range(6)] + [{"text": f"bad {i}", "label": "neg"}
                                                                       for i in range(6)]


def _head_config(model: Path, tmp_path: Path, **keys):
    from sftlab.config import load_config

    data = tmp_path / "rows.json"
    data.write_text(json.dumps(ROWS))
    sets = {"model": model, "datasets": f"[{data}]", "task": "classification", "batch_size": 4, "epochs": 1,
            "logging_steps": 1, "precision": "fp32", "output_dir": tmp_path / "head", **keys}
    return load_config(None, [f"{k}={v}" for k, v in sets.items()])


class AtStep(TrainerCallback):
    """Calls `act(output_dir)` at the end of optimizer step `step`, keeping what it returns."""

    def __init__(self, step: int, act):
        self.step, self.act, self.seen = step, act, None

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            self.seen = self.act(Path(args.output_dir))


@pytest.mark.slow
def test_a_head_run_notes_its_total_steps_while_it_trains(tiny_chat_model, tmp_path):
    from sftlab import runlock
    from sftlab.training import train

    config = _head_config(tiny_chat_model, tmp_path)
    out = Path(config.output_dir)
    # What `sftlab runs` and the UI read of a live run: the run lock's record, train_process.json.
    probe = AtStep(1, lambda folder: runlock.holder(folder).progress)
    result = train(config, callbacks=[probe], quiet=True)
    assert probe.seen["max_steps"] == 3 and probe.seen["start_step"] == 0
    assert probe.seen["output_dir"] == str(out.absolute())
    assert result.steps == 3 and runlock.holder(out) is None  # (released once the run ended)


@pytest.mark.slow
def test_a_head_run_stopped_by_a_signal_keeps_a_checkpoint_and_resumes_from_it(tiny_chat_model, tmp_path):
    from sftlab.training import train
    from sftlab.training.interrupt import Interrupted

    config = _head_config(tiny_chat_model, tmp_path, save_steps=1, keep_checkpoints="all")
    out = Path(config.output_dir)
    with pytest.raises(Interrupted) as stopped:
        train(config, callbacks=[AtStep(1, lambda _: os.kill(os.getpid(), signal.SIGINT))], quiet=True)
    assert stopped.value.sentence() == (f"stopped by Ctrl-C at step 1 of 3; {out / 'checkpoint-1'} holds the run up "
                                        "to step 1 (model, optimizer, scheduler, data order)")
    assert not (out / "model.safetensors").exists()  # (stopped early: no final model)
    state = json.loads((out / "checkpoint-1" / "sftlab_state.json").read_text())
    assert state["processes"] == 1 and state["global_batch"] == 4 and state["trained_tokens"] > 0

    resumed = train(config.model_copy(update={"resume": True}), quiet=True)
    assert (resumed.resumed_step, resumed.steps) == (1, 3)
    assert resumed.resumed_tokens == state["trained_tokens"] < resumed.trained_tokens
    assert [r["step"] for r in resumed.metrics if "loss" in r] == [1, 2, 3]  # (step 1's record kept from before)
    assert (out / "model.safetensors").is_file() and (out / "loss.png").is_file()


def _method_names_in(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and n.value in METHOD_NAMES]


def test_no_training_module_but_the_setups_names_a_method():
    training = Path(sftlab.__file__).parent / "training"
    named = {p.name: _method_names_in(p) for p in sorted(training.glob("*.py"))}
    assert {name: found for name, found in named.items() if found and name != "methods.py"} == {}
    assert sorted(set(named["methods.py"])) == sorted(METHOD_NAMES)  # (the check sees the setups' names)
