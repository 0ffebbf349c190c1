"""sftlab.runs.folder: each reader of a run folder's files, on files damaged every way a run folder can be (a FIFO,
a folder or a link where a file goes, bytes that are not UTF-8, fields that are not what sftlab writes), gives
"unreadable: why" naming the file; and such a folder of runs read through `sftlab runs`, `sftlab runs --json` and
the UI's API: each damaged run listed with its reason, never a traceback, a 500 or `Infinity`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from sftlab.runs.folder import (KIND, MISSING, SYNTAX, Records, Stage, Unreadable, checkpoint_candidates,
                                checkpoints, entries, read_config, read_metrics, read_stage_done, read_stages,
                                read_state, stage_finished)


def _file(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def _plant(path, kind):
    """Something that is not a regular file where one goes: a FIFO, a folder or a link (to a real file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    else:
        path.symlink_to(_file(path.parent / "elsewhere.txt", "{}"))


# ---- each reader ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind, what", [("fifo", "a FIFO"), ("folder", "a folder"), ("link", "a symbolic link")])
def test_a_file_that_is_no_file_is_unreadable_in_every_reader(tmp_path, kind, what):
    for name in ("config.yaml", "metrics.jsonl", "stage_done.json", "checkpoint-4/trainer_state.json"):
        _plant(tmp_path / kind / name, kind)
    run = tmp_path / kind
    said = f"is {what}, not a file sftlab writes"
    assert read_config(run) == Unreadable("config.yaml", said, KIND)
    assert read_metrics(run) == Unreadable("metrics.jsonl", said, KIND)
    assert stage_finished(run) == Unreadable("stage_done.json", said, KIND)
    assert read_stage_done(run) == Unreadable("stage_done.json", said, KIND)
    assert str(checkpoints(run)) == f"checkpoint-4/trainer_state.json {said}"
    assert str(read_state(run / "checkpoint-4")) == f"trainer_state.json {said}"


def test_config_yaml(tmp_path):
    assert read_config(tmp_path) == {}  # none yet
    _file(tmp_path / "config.yaml", "method: lora\nstages: 5\n")
    assert read_config(tmp_path) == {"method": "lora", "stages": 5}
    assert str(read_stages(tmp_path, {"stages": 5})) == "config.yaml: stages is 5, not a list of stages"
    for text, said in [(b"method: \xff\xfe\n", "config.yaml is not UTF-8 text (byte 9)"),
                       (b"- a\n- b\n", "config.yaml is not a mapping of keys"),
                       (b"a: [\n", "config.yaml is not YAML")]:
        _file(tmp_path / "config.yaml", text)
        assert str(read_config(tmp_path)) == said


def test_stages_are_named_as_staged_runs_name_their_folders(tmp_path):
    config = {"method": "full", "stages": [{"name": "cpt"}, {"method": "lora"}]}
    assert read_stages(tmp_path, config) == [Stage("cpt", "full"), Stage("stage-2", "lora")]
    assert read_stages(tmp_path, {"method": "full"}) == []
    assert str(read_stages(tmp_path, {"stages": [5]})) == "config.yaml: stages[1] is not a mapping of keys"
    assert str(read_stages(tmp_path, {"stages": [{"name": ".."}]})).startswith(
        "config.yaml: stages[1].name '..' is not a plain folder name")


def test_metrics_nan_and_infinity_are_none_and_a_bad_line_is_named(tmp_path):
    _file(tmp_path / "metrics.jsonl", b'{"step": 1, "loss": NaN, "grad_norm": Infinity}\n'
          b'{"loss": 2.0}\n\xff\xfe{"step": 2}\n{"step": 3, "loss": -Infinity, "lr": 1e400, "x": [NaN]}\n')
    assert read_metrics(tmp_path) == Records(
        [{"step": 1, "loss": None, "grad_norm": None}, {"step": 3, "loss": None, "lr": None, "x": [None]}],
        Unreadable("metrics.jsonl", "line 2 is not a record sftlab writes"))
    assert read_metrics(tmp_path / "none") == Records([])


def test_one_rule_names_checkpoints_and_resuming_sees_more_of_them(tmp_path):
    for step in (2, 10, 3):
        _file(tmp_path / f"checkpoint-{step}" / "optimizer.pt", "")
    for step in (2, 10):
        _file(tmp_path / f"checkpoint-{step}" / "trainer_state.json", json.dumps({"global_step": step}))
    (tmp_path / "checkpoint-5").symlink_to(tmp_path / "checkpoint-2")
    _file(tmp_path / "checkpoint-7", "a file")
    (tmp_path / "checkpoint-²").mkdir()
    assert [p.name for p in checkpoints(tmp_path)] == ["checkpoint-2", "checkpoint-10"]
    assert [p.name for p in checkpoint_candidates(tmp_path)] == ["checkpoint-2", "checkpoint-3", "checkpoint-5",
                                                                "checkpoint-10"]


@pytest.mark.parametrize("data, said, cause", [
    (b"{", "trainer_state.json is not JSON", SYNTAX),
    (b'{"global_step": 4, "x": "\xff"}', "trainer_state.json is not UTF-8 text (byte 26)", SYNTAX),
    (b'{"global_step": "4"}', "trainer_state.json: global_step is not a count", "content"),
    (b"[4]", "trainer_state.json is not a mapping", "content"),
])
def test_checkpoint_state(tmp_path, data, said, cause):
    _file(tmp_path / "trainer_state.json", data)
    found = read_state(tmp_path)
    assert (str(found), found.cause) == (said, cause)
    assert read_state(tmp_path, "sftlab_state.json").cause == MISSING


def test_stage_done_gives_the_next_stages_model_never_a_path_it_names(tmp_path):
    assert (stage_finished(tmp_path), read_stage_done(tmp_path)) == (False, None)
    _file(tmp_path / "stage_done.json", json.dumps({"model": "/elsewhere/merged"}))
    assert (stage_finished(tmp_path), read_stage_done(tmp_path)) == (True, tmp_path / "merged")
    _file(tmp_path / "stage_done.json", json.dumps({"model": "/elsewhere"}))
    assert read_stage_done(tmp_path) == tmp_path
    _file(tmp_path / "stage_done.json", "{}")
    assert str(read_stage_done(tmp_path)) == 'stage_done.json is not {"model": FOLDER}'


def test_a_folder_that_is_a_file(tmp_path):
    assert str(entries(_file(tmp_path / "run", "x"))) == "the folder is a file"
    assert entries(tmp_path) == [tmp_path / "run"]


# ---- a folder of runs damaged every way, read by every reader of it ------------------------------------------

CHECKPOINT = b'{"global_step": 4, "max_steps": 8}'
# run name → (how it is damaged, what `sftlab runs` says of it)
DAMAGED = {
    "stages-5": "config.yaml: stages is 5, not a list of stages",
    "config-fifo": "config.yaml is a FIFO, not a file sftlab writes",
    "config-folder": "config.yaml is a folder, not a file sftlab writes",
    "config-link": "config.yaml is a symbolic link, not a file sftlab writes",
    "config-utf8": "config.yaml is not UTF-8 text (byte 9)",
    "checkpoint-fifo": "checkpoint-4/trainer_state.json is a FIFO, not a file sftlab writes",
    "checkpoint-folder": "checkpoint-4/trainer_state.json is a folder, not a file sftlab writes",
    "checkpoint-link": "checkpoint-4/trainer_state.json is a symbolic link, not a file sftlab writes",
    "checkpoint-utf8": "checkpoint-4/trainer_state.json is not UTF-8 text (byte 1)",
    "metrics-folder": "metrics.jsonl is a folder, not a file sftlab writes",
    "stage-file": "sft: a file where the stage's folder goes",
    "stage-done-fifo": "cpt: stage_done.json is a FIFO, not a file sftlab writes",
}


@pytest.fixture
def damaged(tmp_path):
    root = tmp_path / "runs"
    for name in ("good", "nan", *DAMAGED):
        _file(root / name / "config.yaml", "method: lora\n")
        _file(root / name / "metrics.jsonl", '{"step": 1, "loss": 2.5}\n')
    _file(root / "nan" / "metrics.jsonl", '{"step": 1, "loss": 2.5}\n{"step": 2, "loss": NaN, "grad_norm": Infinity}\n')
    _file(root / "stages-5" / "config.yaml", "method: full\nstages: 5\n")
    for kind in ("fifo", "folder", "link"):
        (root / f"config-{kind}" / "config.yaml").unlink()
        _plant(root / f"config-{kind}" / "config.yaml", kind)
        _plant(root / f"checkpoint-{kind}" / "checkpoint-4" / "trainer_state.json", kind)
    _file(root / "config-utf8" / "config.yaml", b"method: \xff\n")
    _file(root / "checkpoint-utf8" / "checkpoint-4" / "trainer_state.json", b"\xff" + CHECKPOINT)
    (root / "metrics-folder" / "metrics.jsonl").unlink()
    (root / "metrics-folder" / "metrics.jsonl").mkdir()
    for name in ("stage-file", "stage-done-fifo"):
        _file(root / name / "config.yaml", "method: full\nstages: [{name: cpt}, {name: sft}]\n")
    _file(root / "stage-file" / "sft", "a file where a folder goes")
    _plant(root / "stage-done-fifo" / "cpt" / "stage_done.json", "fifo")
    return root


def _strict(text):
    """JSON as every parser reads it: NaN or Infinity in it fails the test."""
    return json.loads(text, parse_constant=lambda word: pytest.fail(f"{word} in the JSON"))


def test_sftlab_runs_lists_each_damaged_run_with_its_reason(damaged, cli):
    text, as_json = cli("runs", damaged), cli("runs", damaged, "--json")
    assert (text.returncode, as_json.returncode, text.stderr, as_json.stderr) == (0, 0, "", "")
    notes = sorted(line for line in text.stdout.splitlines() if ": damaged: " in line)
    assert notes == sorted(f"{damaged / name}: damaged: {why}" for name, why in DAMAGED.items())
    found = {r["path"]: (r["status"], r["problem"], r["final_loss"]) for r in _strict(as_json.stdout)["runs"]}
    assert found == {str(damaged / "good"): ("unfinished", None, 2.5), str(damaged / "nan"): ("unfinished", None, None),
                     **{str(damaged / name): ("damaged", why, None) for name, why in DAMAGED.items()}}
    alone = cli("runs", damaged / "good" / "metrics.jsonl")  # a run folder that is a file: one sentence
    assert alone.returncode == 2 and "Traceback" not in alone.stderr
    said = f"error: runs: {damaged / 'good' / 'metrics.jsonl'} is a file, not a folder of runs"
    assert " ".join(alone.stderr.split()) == said


def test_the_ui_lists_each_damaged_run_as_unreadable_with_its_reason(damaged, monkeypatch):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from sftlab.ui.app import create_app

    work = damaged.parent
    monkeypatch.chdir(work)
    c = TestClient(create_app(work / "runs", work, None), base_url="http://127.0.0.1", raise_server_exceptions=False)
    r = c.get("/api/runs")
    assert r.status_code == 200, r.text
    runs = {run["id"]: (run["status"], run.get("error"), run["last_loss"]) for run in _strict(r.text)["runs"]}
    assert runs == {"good": ("stopped", "unfinished (started outside the UI, not running now); Resume starts it again",
                             2.5),
                    "nan": ("stopped", "unfinished (started outside the UI, not running now); Resume starts it again",
                            None),
                    **{name: ("unreadable", f"run {name}: {why}", None) for name, why in DAMAGED.items()}}
    for name, why in DAMAGED.items():
        for path in (f"/api/runs/{name}", f"/api/runs/{name}/events", f"/runs/{name}"):
            r = c.get(path)
            assert (r.status_code, r.json()["error"]["message"]) == (409, f"run {name}: {why}"), path
    detail = c.get("/api/runs/nan")
    assert detail.status_code == 200 and _strict(detail.text)["metrics"] == [
        {"step": 1, "loss": 2.5}, {"step": 2, "loss": None, "grad_norm": None}]
    assert c.get("/api/runs/good/metrics.jsonl").status_code == 404  # a run folder that is a file: no run


@pytest.mark.slow  # subprocesses
@pytest.mark.skipif(shutil.which("capsh") is None or os.geteuid() != 0, reason="needs root and capsh")
def test_chmod_000_is_unreadable_for_a_user_chmod_stops(damaged):
    """Root without the capabilities that pass file permissions reads as any user would: `chmod 000` on a
    config, a checkpoint and a run folder stops it (root itself reads them anyway)."""
    for path in ("good/config.yaml", "nan/metrics.jsonl"):
        (damaged / path).chmod(0)
    _file(damaged / "stages-5" / "config.yaml", "method: lora\n")
    _file(damaged / "stages-5" / "checkpoint-4" / "trainer_state.json", CHECKPOINT).parent.chmod(0)
    (damaged / "config-utf8").chmod(0)
    script = ("import sys; from fastapi.testclient import TestClient; from pathlib import Path; "
              "from sftlab.ui.app import create_app; work = Path(sys.argv[1]); "
              "c = TestClient(create_app(work / 'runs', work, None), base_url='http://127.0.0.1', "
              "raise_server_exceptions=False); r = c.get('/api/runs'); print(r.status_code); print(r.text)")
    drop = ["capsh", "--drop=cap_dac_override,cap_dac_read_search", "--", "-c"]
    try:
        listed = subprocess.run([*drop, f'"{sys.executable}" -m sftlab runs "{damaged}" --json'],
                                capture_output=True, text=True, timeout=120)
        ui = subprocess.run([*drop, f'"{sys.executable}" -c "{script}" "{damaged.parent}"'], capture_output=True,
                            text=True, timeout=120, cwd=damaged.parent)
    finally:
        for path in ("good/config.yaml", "nan/metrics.jsonl", "stages-5/checkpoint-4", "config-utf8"):
            (damaged / path).chmod(0o755)
    assert listed.returncode == 0 and listed.stderr == "", listed.stderr[-2000:]
    found = {r["path"]: (r["status"], r["problem"]) for r in _strict(listed.stdout)["runs"]}
    assert found[str(damaged / "good")] == ("damaged", "config.yaml cannot be read (Permission denied)")
    assert found[str(damaged / "nan")] == ("damaged", "metrics.jsonl cannot be read (Permission denied)")
    assert found[str(damaged / "stages-5")] == ("damaged", "checkpoint-4 cannot be read (Permission denied)")
    assert found[str(damaged / "config-utf8")] == ("damaged", "the folder cannot be read (Permission denied)")
    status, text = ui.stdout.split("\n", 1)
    assert status == "200", ui.stderr[-2000:]
    runs = {run["id"]: (run["status"], run["error"]) for run in _strict(text)["runs"]}
    assert runs["good"] == ("unreadable", "run good: config.yaml cannot be read (Permission denied)")
    assert runs["nan"] == ("unreadable", "run nan: metrics.jsonl cannot be read (Permission denied)")
    assert runs["stages-5"] == ("unreadable", "run stages-5: checkpoint-4 cannot be read (Permission denied)")
    assert runs["config-utf8"] == ("unreadable", "run config-utf8: the folder cannot be read (Permission denied)")
