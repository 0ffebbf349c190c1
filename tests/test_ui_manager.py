"""sftlab.ui.manager.run_log: the log the UI shows for a run, including one started from the command line (no
train.log), which shows a sentence and its metrics.jsonl records, never an empty box."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("fastapi")


def _cli_run(folder, records):
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text("method: lora\ndatasets: [data.json]\n")
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


def test_a_run_started_from_the_command_line_shows_its_steps(tmp_path):
    from sftlab.ui.manager import run_log

    run = _cli_run(tmp_path / "runs" / "cli", [{"step": 1, "loss": 2.5, "learning_rate": 0.0002},
                                               {"step": 2, "loss": 1.25, "grad_norm": 0.75, "learning_rate": 0.0001}])
    assert run_log(run) == (
        "This run was started from the command line (sftlab train): what it printed went to that terminal, not to a "
        "file here. Its logged steps (metrics.jsonl, 2):\n"
        "step 1: loss 2.5, learning_rate 0.0002\n"
        "step 2: loss 1.25, grad_norm 0.75, learning_rate 0.0001")
    assert run_log(run, lines=2).splitlines()[1:] == ["step 2: loss 1.25, grad_norm 0.75, learning_rate 0.0001"]


def test_a_command_line_run_without_steps_yet_says_so(tmp_path):
    from sftlab.ui.manager import run_log

    run = _cli_run(tmp_path / "cli", [])
    assert run_log(run).endswith("Its logged steps (metrics.jsonl, 0):\nnone yet")


def test_a_ui_run_shows_its_log_and_a_queued_one_says_it_has_not_started(tmp_path):
    from sftlab.ui.manager import run_log

    run = _cli_run(tmp_path / "ui", [{"step": 1, "loss": 2.5}])
    (run / "ui_state.json").write_text(json.dumps({"status": "queued"}))
    assert run_log(run) == "queued: the log starts when the run does"
    (run / "train.log").write_text("$ sftlab train --config x\nstep 1/4 loss 2.5\n")
    assert run_log(run) == "$ sftlab train --config x\nstep 1/4 loss 2.5"


def test_the_run_api_and_its_events_show_a_command_line_runs_steps(tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    from sftlab.ui.app import create_app

    monkeypatch.chdir(tmp_path)
    _cli_run(tmp_path / "runs" / "cli", [{"step": 1, "loss": 2.5}])
    c = TestClient(create_app(tmp_path / "runs", tmp_path), base_url="http://127.0.0.1")
    log = c.get("/api/runs/cli").json()["log"]
    assert log.startswith("This run was started from the command line") and log.endswith("\nstep 1: loss 2.5")
    events = c.get("/api/runs/cli/events").text
    assert "This run was started from the command line" in events and "step 1: loss 2.5" in events
