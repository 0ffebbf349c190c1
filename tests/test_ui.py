"""`sftlab ui`'s JSON API and its guards, through FastAPI's test client (no training, no browser: the end-to-end
flow in Chromium is tests/test_ui_browser.py)."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
import yaml

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from sftlab.ui import security  # noqa: E402
from sftlab.ui.app import create_app  # noqa: E402
from sftlab.ui.forms import form_groups  # noqa: E402
from sftlab.runs import read_run  # noqa: E402
from sftlab.ui.manager import STATE, status_of  # noqa: E402

LOCAL = "http://127.0.0.1"
ROWS = [{"instruction": f"Say {i}", "input": "", "output": f"The number {i}."} for i in range(6)] + [
    {"instruction": "Nothing to say", "input": "", "output": ""}]


@pytest.fixture
def work(tmp_path, monkeypatch):
    """A working folder with a data file and a runs/ folder holding one finished run written as `sftlab train` writes
    it (config.yaml, metrics.jsonl, data_report.json, weights)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data.json").write_text(json.dumps(ROWS), encoding="utf-8")
    run = tmp_path / "runs" / "done"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"method": "lora", "datasets": [{"path": "data.json"}],
                                                     "output_dir": str(run)}), encoding="utf-8")
    (run / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 2.0 / s, "learning_rate": 1e-4})
                                               + "\n" for s in range(1, 6)), encoding="utf-8")
    (run / "data_report.json").write_text(json.dumps({"rows_read": 7, "rejected_rows": []}), encoding="utf-8")
    _safetensors(run / "adapter_model.safetensors")
    return tmp_path


def _safetensors(path: Path) -> None:
    header = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    path.write_bytes(len(header).to_bytes(8, "little") + header + b"\0\0\0\0")


def client(work: Path, key: str | None = None, base_url: str = LOCAL) -> TestClient:
    return TestClient(create_app(work / "runs", work, key), base_url=base_url)


# ---- the API ----

def test_runs_are_listed_with_status_metrics_and_report(work):
    c = client(work)
    runs = c.get("/api/runs").json()["runs"]
    assert [(r["id"], r["status"], r["method"], r["steps"], r["started_by"]) for r in runs] == [
        ("done", "finished", "lora", 5, "cli")]
    detail = c.get("/api/runs/done").json()
    assert detail["status"] == "finished" and detail["output_dir"] == str(work / "runs" / "done")
    assert [m["step"] for m in detail["metrics"]] == [1, 2, 3, 4, 5]
    assert detail["config"]["method"] == "lora" and detail["data_report"]["rows_read"] == 7
    assert c.get("/api/runs/missing").status_code == 404


def test_events_replay_from_last_event_id_and_end_with_a_finished_run(work):
    with client(work).stream("GET", "/api/runs/done/events", headers={"Last-Event-ID": "3"}) as r:
        text = r.read().decode()
    ids = [int(line[4:]) for line in text.splitlines() if line.startswith("id: ")]
    assert ids == [4, 5]  # steps 1-3 the client had already
    assert "event: status" in text and '"status": "finished"' in text and text.rstrip().endswith("data: {}")


def test_an_invalid_config_is_the_cli_sentence_with_its_field(work):
    c = client(work)
    r = c.post("/api/runs", json={"config": {"datasets": ["data.json"], "epochs": "three"}})
    assert r.status_code == 400
    assert r.json()["error"]["field"] == "epochs"
    from pydantic import ValidationError

    from sftlab.config import TrainConfig, explain

    with pytest.raises(ValidationError) as e:
        TrainConfig(datasets=["data.json"], epochs="three")
    assert r.json()["error"]["message"] == explain(e.value, "config")  # the sentence `sftlab train` prints
    r = c.post("/api/runs", json={"config": {"datasets": ["data.json"], "learning_rat": 1}})
    assert r.json()["error"] == {"message": "config: unknown key `learning_rat` (did you mean `learning_rate`?)",
                                 "field": "learning_rat"}
    r = c.post("/api/runs", json={"config": {"datasets": ["nope.json"]}})
    assert r.status_code == 400 and r.json()["error"]["field"] == "datasets" and "not found" in r.json()["error"]["message"]
    r = c.post("/api/config/yaml", json={"config": {"datasets": ["data.json"]}, "yaml": {"clean": "[bad"}})
    assert r.status_code == 400 and r.json()["error"]["field"] == "clean"
    assert not [p for p in (work / "runs").iterdir() if p.name != "done"]  # nothing was created


def test_a_config_becomes_a_queued_run_folder_with_a_rerunnable_config(work, monkeypatch):
    started = []
    monkeypatch.setattr("sftlab.ui.manager.spawn", lambda *a, **k: started.append(a) or 999_999)
    c = client(work)
    r = c.post("/api/runs", json={"config": {"datasets": ["data.json"], "method": "lora", "max_steps": 2},
                                  "name": "mine"})
    assert r.status_code == 201 and r.json()["id"] == "mine"
    folder = work / "runs" / "mine"
    config = yaml.safe_load((folder / "config.yaml").read_text())
    assert config["output_dir"] == str(folder) and config["datasets"][0]["path"] == str(work / "data.json")
    assert config["learning_rate"] == 2e-4  # resolved as `sftlab train` writes it
    state_file, log, args, cwd = started[0][:4]
    assert args[:2] == ["train", str(folder / "config.yaml")] and cwd == work and log == folder / "train.log"
    # The runner (pid 999999) is not alive: the run shows as failed, not as running forever.
    assert c.get("/api/runs/mine").json()["status"] == "failed"
    # A name that leads out of the runs folder, or one taken, is refused next to the name field.
    r = c.post("/api/runs", json={"config": {"datasets": ["data.json"]}, "name": "../escape"})
    assert r.status_code == 400 and r.json()["error"]["field"] == "name"
    r = c.post("/api/runs", json={"config": {"datasets": ["data.json"]}, "name": "mine"})
    assert r.status_code == 400 and "exists" in r.json()["error"]["message"]


def test_queue_starts_one_run_at_a_time_and_stop_takes_a_queued_run_out(work, monkeypatch):
    import os

    started = []
    monkeypatch.setattr("sftlab.ui.manager.spawn", lambda *a, **k: started.append(a[0].parent.name) or os.getpid())
    from sftlab.ui.manager import read_state

    # (the runners are this process: alive while their state says so)
    monkeypatch.setattr("sftlab.ui.manager.runner_alive",
                        lambda f, s=None: os.getpid() if (s or read_state(f)).get("runner_pid") == os.getpid() else None)
    c = client(work)
    for name in ("a", "b", "c"):
        assert c.post("/api/runs", json={"config": {"datasets": ["data.json"]}, "name": name}).status_code == 201
    assert started == ["a"]  # b and c wait
    statuses = {r["id"]: r["status"] for r in c.get("/api/runs").json()["runs"]}
    assert statuses == {"done": "finished", "a": "running", "b": "queued", "c": "queued"}
    assert c.post("/api/runs/b/stop").json()["status"] == "stopped"
    assert c.post("/api/runs/done/stop").status_code == 409
    # a ends: the next queued one (c; b was taken out) starts.
    from sftlab.ui.manager import update_state

    update_state(work / "runs" / "a" / STATE, status="finished")
    c.app.state.runs.start_next()
    assert started == ["a", "c"]
    # Resume puts b back into the queue with resume=true.
    assert c.post("/api/runs/b/resume").json()["status"] == "queued"
    assert json.loads((work / "runs" / "b" / STATE).read_text())["resume"] is True


def _cli_run(work: Path, name: str = "cli") -> Path:
    folder = work / "runs" / name
    folder.mkdir()
    (folder / "config.yaml").write_text("method: full\n")
    (folder / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "loss": 0.5}\n')
    return folder


def test_a_run_from_the_command_line_is_running_while_its_process_holds_the_lock(work, hold_lock):
    """Whoever started it: running with its curve, total steps and ETA while its process lives (issue 38.1);
    Resume refused in one sentence; Stop signals that process; afterwards it is stopped, however old its files."""
    folder = _cli_run(work)
    c = client(work)
    assert c.get("/api/runs/cli").json()["status"] == "stopped"  # files just written, but nothing trains there
    trainer = hold_lock(folder, "--progress", "10", "20")  # 10 steps in all, began 20 s ago; 2 done
    detail = c.get("/api/runs/cli").json()
    assert (detail["status"], detail["started_by"], detail["pid"], detail["steps"], detail["total_steps"]) == (
        "running", "cli", trainer.pid, 2, 10)
    assert 75 <= detail["eta_seconds"] <= 90  # 10 s a step, 8 to go
    assert [m["loss"] for m in detail["metrics"]] == [1.0, 0.5]
    r = c.post("/api/runs/cli/resume")
    assert r.status_code == 409 and r.json()["error"]["message"] == (
        f"run cli is running (pid {trainer.pid}); stop it before resuming it, or a second training would write "
        "into the same folder")
    assert c.post("/api/runs/cli/stop").json() == {"id": "cli", "status": "stopping"}
    assert trainer.wait(timeout=30) == 143  # it got SIGTERM
    status, reason = status_of(folder, read_run(folder))
    assert status == "stopped" and "not running now" in reason


def test_a_run_killed_with_sigkill_is_not_running(work, hold_lock):
    import signal

    folder = _cli_run(work)
    trainer = hold_lock(folder)
    assert status_of(folder, read_run(folder))[0] == "running"
    trainer.send_signal(signal.SIGKILL)
    trainer.wait()
    assert status_of(folder, read_run(folder))[0] == "stopped"  # its lock went with it; its record stays
    r = client(work).post("/api/runs/cli/stop")
    assert r.status_code == 409 and "not running" in r.json()["error"]["message"]


def test_stop_on_a_copied_run_folder_never_signals_the_process_its_state_names(work):
    """A run folder copied from elsewhere: its ui_state.json says running and names the pid (and start time) of
    a live process that is not this run's training (here one whose command line even says sftlab). Stop says the
    run is not running and signals nothing (issue 33.4)."""
    import subprocess
    import sys

    from sftlab.runlock import process_start

    decoy = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", "sftlab", "train"])
    try:
        time.sleep(0.3)
        folder = _cli_run(work, "copied")
        (folder / STATE).write_text(json.dumps({"status": "running", "runner_pid": decoy.pid, "pid": decoy.pid,
                                                "runner_start": process_start(decoy.pid), "started": time.time()}))
        c = client(work)
        r = c.post("/api/runs/copied/stop")
        assert r.status_code == 409 and r.json()["error"]["message"].startswith("run copied is not running")
        assert c.get("/api/runs/copied").json()["status"] == "failed"
        time.sleep(0.3)
        assert decoy.poll() is None  # alive: no signal went to it
    finally:
        decoy.kill()
        decoy.wait()


def test_preview_shows_trained_tokens_and_every_dropped_row(work, tiny_chat_model):
    import shutil

    c = client(work)
    r = c.post("/api/preview", json={"config": {"model": str(tiny_chat_model), "datasets": ["data.json"]}})
    assert r.status_code == 400 and "outside the folders" in r.json()["error"]["message"]
    shutil.copytree(tiny_chat_model, work / "model")
    r = c.post("/api/preview", json={"config": {"model": "model", "datasets": ["data.json"]}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert "class='t" in body["html"]  # inspect --html's trained-token spans
    assert body["report"]["rows_read"] == 7
    dropped = body["report"]["rejected_rows"] + body["report"]["dropped_rows"]
    assert [d["row"] for d in dropped] == [7] and dropped[0]["reason"]
    assert "learning_rate:" in body["yaml"]


def test_form_is_generated_from_the_config_with_groups_defaults_and_help():
    groups = {g.title: {f.name: f for f in g.fields} for g in form_groups()}
    assert list(groups)[:3] == ["What to train", "How", "Optimisation"]
    assert groups["How"]["method"].kind == "select" and "lora" in groups["How"]["method"].choices
    assert groups["Optimisation"]["batch_size"].default == 4
    assert "tokenizer's own" in groups["What to train"]["template"].help
    names = {n for g in groups.values() for n in g}
    assert "output_dir" not in names and "resume" not in names  # the UI's own


def test_pages_render_in_english_and_chinese(work):
    c = client(work)
    for path in ("/", "/new", "/data", "/chat", "/eval", "/runs/done"):
        r = c.get(path)
        assert r.status_code == 200, path
        assert "http://" not in r.text.replace(LOCAL, "") and "https://" not in r.text  # nothing from elsewhere
    assert "新建训练" in c.get("/new?lang=zh").text
    assert "新建训练" in c.get("/").text  # the choice is kept (a cookie)
    assert "Content-Security-Policy" in c.get("/").headers


# ---- the guards ----

def test_a_non_loopback_host_without_a_key_is_refused_in_one_sentence(cli, monkeypatch):
    monkeypatch.delenv("SFTLAB_API_KEY", raising=False)
    with pytest.raises(Exception, match="give a key"):
        security.require_safe_host("0.0.0.0", None)
    security.require_safe_host("127.0.0.1", None)
    security.require_safe_host("0.0.0.0", "k")
    result = cli("ui", "--host", "0.0.0.0")
    assert result.returncode == 2 and "give a key" in result.stderr and "Traceback" not in result.stderr


def test_the_key_is_required_on_every_request_when_set(work):
    c = client(work, key="s3cret", base_url="http://10.0.0.5:7860")
    assert c.get("/api/runs").status_code == 401
    assert c.get("/api/runs", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert c.get("/api/runs", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    page = c.get("/", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"].startswith("/login")
    assert c.post("/login", data={"key": "wrong"}).status_code == 401
    r = c.post("/login", data={"key": "s3cret", "next": "/new"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/new"
    assert c.get("/new").status_code == 200  # the cookie the login set


def test_cross_site_state_changes_are_refused(work):
    c = client(work)
    body = {"config": {"datasets": ["data.json"]}}
    r = c.post("/api/runs", json=body, headers={"Origin": "http://evil.example"})
    assert r.status_code == 403 and "evil.example" in r.json()["error"]["message"]
    assert c.post("/api/runs/done/stop", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
    assert c.post("/api/preview", json=body, headers={"Sec-Fetch-Site": "same-site"}).status_code == 403
    # The UI's own pages send Origin = the host they were loaded from.
    assert c.post("/api/runs/done/stop", headers={"Origin": LOCAL, "Sec-Fetch-Site": "same-origin"}).status_code == 409
    # DNS rebinding: another site's name pointing at 127.0.0.1 is not the UI's host.
    rebound = client(work, base_url="http://evil.example:7860")
    assert rebound.get("/api/runs").status_code == 403


def test_paths_stay_inside_the_ui_folders(work, tmp_path_factory):
    c = client(work)
    outside = tmp_path_factory.mktemp("outside") / "secret.json"
    outside.write_text(json.dumps(ROWS))
    for path in ("../secret.json", str(outside), "runs/../../secret.json"):
        r = c.post("/api/runs", json={"config": {"datasets": [path]}})
        assert r.status_code == 400 and r.json()["error"]["field"] == "datasets", path
        r = c.post("/api/data/check", json={"path": path})
        assert r.status_code == 400, path
    (work / "link.json").symlink_to(outside)
    assert c.post("/api/data/check", json={"path": "link.json"}).status_code == 400
    for name in ("../up.json", "a/b.json", "..", ".hidden/../x.json"):
        assert c.post(f"/api/upload?name={name}", content=b"[]").status_code == 400, name
    r = c.post("/api/upload?name=mine.jsonl", content=b'{"prompt": "a", "completion": "b"}\n')
    assert r.status_code == 201 and r.json()["path"] == "uploads/mine.jsonl"
    assert "uploads/mine.jsonl" in c.get("/api/files").json()["files"]
    # a link planted where an upload's temporary file could be, or as the uploads folder: nothing outside is written
    victim = outside.parent / "victim.txt"
    victim.write_text("mine")
    (work / "uploads" / ".x.jsonl.part").symlink_to(victim)
    (work / "uploads" / ".upload-x.part").symlink_to(victim)
    assert c.post("/api/upload?name=x.jsonl", content=b'{"prompt": "a", "completion": "c"}\n').status_code == 201
    assert victim.read_text() == "mine" and (work / "uploads" / "x.jsonl").read_text().endswith('"c"}\n')
    assert sorted(p.name for p in (work / "uploads").iterdir()) == [".upload-x.part", ".x.jsonl.part", "mine.jsonl",
                                                                     "x.jsonl"]
    shutil.move(work / "uploads", work / "real-uploads")
    (work / "uploads").symlink_to(outside.parent)
    r = c.post("/api/upload?name=y.jsonl", content=b"[]")
    assert r.status_code == 400 and "is a link" in r.json()["error"]["message"]
    assert not (outside.parent / "y.jsonl").exists()
    assert c.get("/api/runs/..%2F..%2Fetc").status_code == 404


def test_inside_resolves_relative_paths_and_refuses_escapes(tmp_path):
    (tmp_path / "d.json").write_text("[]")
    from sftlab.files import inside

    assert inside([tmp_path], "d.json", "data file") == (tmp_path / "d.json").resolve()
    with pytest.raises(Exception, match="'..' is not allowed"):
        inside([tmp_path], "x/../../d.json", "data file")
    with pytest.raises(Exception, match="outside the folders"):
        inside([tmp_path], "/etc/passwd", "data file")



def test_export_options_are_checked_and_a_run_without_export_says_none(work):
    c = client(work)
    r = c.post("/api/runs/done/export", json={"format": "onnx"})
    assert r.status_code == 400 and r.json()["error"] == {
        "message": "`format` should be 'gguf' or 'safetensors' (got 'onnx')", "field": "format"}
    r = c.post("/api/runs/done/export", json={"format": "gguf", "quant": "q3_k"})
    assert r.status_code == 400 and r.json()["error"]["field"] == "quant"
    assert "should be 'q8_0', 'f16'" in r.json()["error"]["message"]
    got = c.get("/api/runs/done/export").json()
    assert (got["status"], got["lines"], got["out"]) == ("none", [], None)
    page = c.get("/export?run=done").text
    assert 'name="quant"' in page and 'value="q4_k_m"' in page and 'name="verify"' in page


# ---- issue 33: what a hostile user tried ----

def test_one_unreadable_run_folder_is_listed_as_such_and_the_others_as_they_are(work):
    for name, text in (("five", "stages: 5\n"), ("list", "- a\n- b\n")):
        (work / "runs" / name).mkdir()
        (work / "runs" / name / "config.yaml").write_text(text)
    locked = work / "runs" / "locked"
    locked.mkdir()
    (locked / "config.yaml").mkdir()  # a config.yaml that cannot be read as a file: not a run at all
    c = TestClient(create_app(work / "runs", work), base_url=LOCAL, raise_server_exceptions=False)
    r = c.get("/api/runs")
    assert r.status_code == 200, r.text
    runs = {run["id"]: run for run in r.json()["runs"]}
    assert runs["done"]["status"] == "finished"
    assert runs["five"]["status"] == "unreadable" and runs["five"]["error"].startswith("run five: config.yaml: stages")
    assert runs["list"]["status"] in ("unreadable", "stopped", "running")  # (a config that is no mapping)
    assert c.get("/api/runs/five").status_code == 409
    assert c.get("/").status_code == 200 and c.get("/runs/five").status_code == 409


def test_runs_dir_on_a_file_or_under_one_is_one_sentence(cli, tmp_path):
    (tmp_path / "afile").write_text("x")
    for target, says in ((tmp_path / "afile", "a file of that name exists"),
                         (tmp_path / "afile" / "runs", "a part of the path is a file")):
        result = cli("ui", "--runs-dir", target, "--port", "1")
        said = " ".join(result.stderr.split())
        assert result.returncode != 0 and says in said and "Traceback" not in said, said


def test_templates_and_stage_datasets_outside_the_ui_folders_are_refused(work, tmp_path_factory):
    c = client(work)
    outside = tmp_path_factory.mktemp("outside")
    (outside / "t.jinja").write_text("SECRET {{ messages }}")
    (outside / "d.json").write_text(json.dumps(ROWS))
    (work / "inner.jinja").symlink_to(outside / "t.jinja")
    for template in (str(outside / "t.jinja"), "inner.jinja", "../outside/t.jinja"):
        r = c.post("/api/preview", json={"config": {"datasets": ["data.json"], "template": template}})
        assert r.status_code == 400 and r.json()["error"]["field"] == "template", r.text
        assert "SECRET" not in r.text
        r = c.post("/api/data/check", json={"path": "data.json", "template": template})
        assert r.status_code == 400 and r.json()["error"]["field"] == "template", r.text
    for stage in ({"datasets": [str(outside / "d.json")]}, {"datasets": "../x.json"},
                  {"eval_datasets": [{"path": str(outside / "d.json")}]}, {"template": str(outside / "t.jinja")}):
        r = c.post("/api/config/yaml", json={"config": {"datasets": ["data.json"], "stages": [{"name": "a"}, stage]}})
        assert r.status_code == 400 and r.json()["error"]["field"] == "stages", (stage, r.text)
        assert "outside" in r.json()["error"]["message"] or "'..'" in r.json()["error"]["message"]
    r = c.post("/api/config/yaml", json={"config": {"datasets": ["data.json"], "stages": [{"datasets": ["data.json"]}]}})
    assert r.status_code == 200 and str(work / "data.json") in r.json()["yaml"]


@pytest.mark.parametrize("target", ["/\\evil.example", "/%2F%2Fevil.example", "//x", "https://x", "/%5Cevil.example",
                                    "http:/x", "/\t/evil.example", "javascript:alert(1)"])
def test_login_redirects_only_to_paths_of_this_ui(work, target):
    c = client(work, key="k", base_url="http://10.0.0.5:7860")
    r = c.post("/login", data={"key": "k", "next": target}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/"
    assert security.same_origin_path("/runs/a?x=1") == "/runs/a?x=1"


def test_one_run_per_name_under_concurrent_starts(work, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    import sftlab.ui.manager as manager

    monkeypatch.setattr(manager, "spawn", lambda *a, **k: 999_999)
    write = manager.write_text
    # Writing the config slowly widens the window between "is the name free?" and "it is mine" to all 12 starts.
    monkeypatch.setattr(manager, "write_text", lambda *a, **k: time.sleep(0.2) or write(*a, **k))
    app = create_app(work / "runs", work)

    def start(_: int) -> int:
        return TestClient(app, base_url=LOCAL).post("/api/runs", json={"config": {"datasets": ["data.json"]},
                                                                      "name": "same"}).status_code

    with ThreadPoolExecutor(12) as pool:
        codes = list(pool.map(start, range(12)))
    assert sorted(codes) == [201] + [400] * 11
    assert [p.name for p in (work / "runs").iterdir() if p.name.startswith("same")] == ["same"]


def test_nan_and_infinity_in_metrics_are_served_as_null(work):
    (work / "runs" / "done" / "metrics.jsonl").write_text(
        '{"step": 1, "loss": NaN, "grad_norm": Infinity}\n{"step": 2, "loss": -Infinity, "learning_rate": 1e-4}\n')
    c = client(work)
    for path in ("/api/runs/done", "/api/runs"):
        r = c.get(path)
        assert r.status_code == 200 and "NaN" not in r.text and "Infinity" not in r.text
    assert c.get("/api/runs/done").json()["metrics"][0] == {"step": 1, "loss": None, "grad_norm": None}
    with c.stream("GET", "/api/runs/done/events") as r:
        text = r.read().decode()
    data = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
    assert [json.loads(d) for d in data if '"step"' in d and '"id"' not in d][:2] == [
        {"step": 1, "loss": None, "grad_norm": None}, {"step": 2, "loss": None, "learning_rate": 1e-4}]
    assert not any("NaN" in d or "Infinity" in d for d in data)


def test_data_pickers_list_only_files_that_read_as_data(work):
    (work / "examples" / "deepspeed").mkdir(parents=True)
    (work / "examples" / "deepspeed" / "zero2.json").write_text(json.dumps({"zero_optimization": {"stage": 2}}))
    (work / "package.json").write_text('{"name": "x"}')
    (work / "broken.jsonl").write_text("{not json\n")
    (work / "chat.jsonl").write_text(json.dumps({"messages": [{"role": "user", "content": "a"},
                                                              {"role": "assistant", "content": "b"}]}) + "\n")
    (work / "pc.csv").write_text("prompt,completion\na,b\n")
    (work / "other.csv").write_text("x,y\n1,2\n")
    c = client(work)
    assert c.get("/api/files").json()["files"] == ["chat.jsonl", "data.json", "pc.csv"]
    for page in ("/new", "/eval"):
        text = c.get(page).text
        assert "zero2.json" not in text and "package.json" not in text and "data.json" in text


MARKUP = "<svg onload=alert(1)>\"'><script>alert(2)</script>"


def _no_markup(text: str, where: str) -> None:
    for raw in ("<svg onload", "<script>alert", "\"'><"):
        assert raw not in text, f"{where}: {raw!r} came back unescaped"


@pytest.mark.slow
def test_markup_in_every_user_controlled_string_is_served_as_text(work, tiny_chat_model):
    """Run name, file names, data rows, config values, log lines, the run's error, model answers (an eval's
    responses): each holds markup, and no page, report or stream serves it as markup."""
    import shutil

    shutil.copytree(tiny_chat_model, work / "model")
    rows = [{"instruction": f"{MARKUP} {i}", "input": MARKUP, "output": f"{MARKUP} answer {i}"} for i in range(4)]
    rows.append({"instruction": MARKUP, "input": "", "output": ""})  # a rejected row, its text in the report
    data = work / f"{MARKUP.replace('/', '')}.json"
    data.write_text(json.dumps(rows), encoding="utf-8")
    run = work / "runs" / MARKUP.replace("/", "")  # a run started from the command line may have any folder name
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"model": MARKUP, "method": "lora", "lr_scheduler": MARKUP,
                                                     "datasets": [{"path": str(data)}], "output_dir": str(run)}))
    (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 1.0, MARKUP: MARKUP}) + "\n")
    (run / "data_report.json").write_text(json.dumps({"rows_read": 5, "rejected_rows": [
        {"source": MARKUP, "row": 5, "reason": MARKUP}]}))
    (run / "train.log").write_text(f"error: {MARKUP}\n")
    (run / STATE).write_text(json.dumps({"status": "failed", "error": MARKUP}))
    (run / "eval").mkdir()
    (run / "eval" / "responses.jsonl").write_text(json.dumps({"prompt": MARKUP, "response": MARKUP}) + "\n")
    c = client(work)
    run_id = run.name
    from urllib.parse import quote

    pages = ["/", f"/runs/{quote(run_id)}", "/new", "/data", f"/chat?a={quote(MARKUP)}&b={quote(MARKUP)}",
             f"/eval?run={quote(MARKUP)}", f"/export?run={quote(MARKUP)}", f"/login?next={quote(MARKUP)}"]
    for page in pages:
        r = c.get(page)
        assert r.status_code == 200, (page, r.text[:300])
        _no_markup(r.text, page)
    assert MARKUP.replace("/", "").replace("<", "&lt;")[:10] in c.get(f"/runs/{quote(run_id)}").text  # shown, as text
    for api in ("/api/runs", f"/api/runs/{quote(run_id)}", f"/api/runs/{quote(run_id)}/eval"):
        r = c.get(api)
        assert r.status_code == 200 and "<svg onload=alert(1)>" in r.text, api  # JSON carries the text as it is
    with c.stream("GET", f"/api/runs/{quote(run_id)}/events") as r:
        events = r.read().decode()
    assert "<svg" in "".join(json.loads(line[6:]).get("error") or "" for line in events.splitlines()
                             if line.startswith("data: {\"checkpoints"))  # text in JSON, for textContent
    # The reports the pages show in a frame: the preview's token view and the data check's report.
    r = c.post("/api/preview", json={"config": {"model": "model", "datasets": [data.name], "on_error": "skip"}})
    assert r.status_code == 200, r.text
    _no_markup(r.json()["html"], "preview")
    assert "&lt;svg onload=alert(1)&gt;" in r.json()["html"]
    r = c.post("/api/data/check", json={"path": data.name, "model": "model"})
    assert r.status_code == 200, r.text
    _no_markup(r.json()["html"], "data check report")
    assert "&lt;svg onload=alert(1)&gt;" in r.json()["html"]


# ---- issue 38.2: a form that starts with what matters ----

def _fake_model(folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    _safetensors(folder / "model.safetensors")


def test_new_run_opens_with_the_essentials_and_folds_the_rest_in_the_schemas_groups(work):
    import html
    import re

    from sftlab.config import TrainConfig

    page = client(work).get("/new").text
    essentials = page[page.index('class="card essentials"'):page.index("<details")]
    assert re.findall(r'data-field="(\w+)"', essentials) == [
        "model", "datasets", "method", "epochs", "learning_rate", "batch_size", "max_length"]
    groups = re.findall(r'<details class="card group" data-group="([^"]+)">', page)
    schema = TrainConfig.model_json_schema()["properties"]
    assert sorted(groups) == sorted({p["group"] for k, p in schema.items()
                                     if k not in ("output_dir", "resume")})  # every group, folded (no `open`)
    assert "<details open" not in page
    assert html.escape(schema["lora_r"]["description"], quote=False) in page  # help from each field's description
    assert 'id="method-defaults"' in page
    data = json.loads(re.search(r'<script type="application/json" id="form-data">(.*?)</script>', page).group(1))
    assert data["method_defaults"]["lora"]["learning_rate"] == 2e-4 and data["method_defaults"]["full"]["learning_rate"] == 2e-5
    assert data["from"] is None and data["values"] == {}


def test_start_from_a_runs_config_fills_the_form_in(work):
    import re

    c = client(work)
    assert 'href="/new?from=done"' in c.get("/runs/done").text
    page = c.get("/new?from=done").text
    data = json.loads(re.search(r'<script type="application/json" id="form-data">(.*?)</script>', page).group(1))
    assert data["from"] == "done"
    assert data["values"]["method"] == "lora" and data["values"]["datasets"] == [
        {"path": "data.json", "format": None, "weight": None, "names": ""}]
    assert '<option value="lora" selected>' in page
    assert c.get("/new?from=missing").status_code == 404


def test_model_fields_are_one_picker_of_the_default_model_finished_runs_and_model_folders(work):
    import re

    _fake_model(work / "models" / "mine")
    (work / "models" / "q.gguf").write_bytes(b"GGUF")
    c = client(work)
    expected = ["smollm2-135m-instruct", str(work / "runs" / "done"), str(work / "models" / "mine"),
                str(work / "models" / "q.gguf")]
    for path, name in (("/new", "model"), ("/chat", "model_a"), ("/chat", "model_b"), ("/data", "model"),
                       ("/eval", "baseline")):
        page = c.get(path).text
        select = re.search(rf'<select name="{name}"[^>]*data-picker="model"[^>]*>(.*?)</select>', page, re.S)
        assert select, (path, name)
        values = [v for v in re.findall(r'<option value="([^"]*)"', select.group(1)) if v]
        assert values == expected, (path, name, values)
    for path in ("/eval", "/export"):
        select = re.search(r'<select name="run"[^>]*data-picker="run"[^>]*>(.*?)</select>', c.get(path).text, re.S)
        assert re.findall(r'<option value="([^"]*)"', select.group(1)) == ["done"], path


def test_concurrent_eval_and_export_starts_start_one_child_each(tmp_path, monkeypatch):
    """Eight requests at once to start an eval (and an export) of one run: one child each, the others told why;
    a run's eval folder that is a link is refused, nothing written where it leads."""
    import subprocess
    import sys
    from concurrent.futures import ThreadPoolExecutor

    from sftlab.errors import SftlabError
    from sftlab.ui import jobs

    children = []

    def fake_spawn(state, log, args, cwd, queue=None):  # a child that looks like a runner of this state file
        time.sleep(0.05)  # (a wide window between the check and the start)
        p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "sftlab.ui.runner", str(state)])
        children.append(p)
        return p.pid

    monkeypatch.setattr(jobs, "spawn", fake_spawn)
    run = tmp_path / "run"
    run.mkdir()
    starts = [lambda: jobs.start_eval(run, tmp_path, tmp_path / "d.json", None, None, 32, None, None),
              lambda: jobs.start_export(run, tmp_path, "gguf", "q8_0", True)]
    try:
        for start in starts:
            def attempt(_):
                try:
                    return start()["status"]
                except SftlabError as e:
                    return str(e)
            with ThreadPoolExecutor(8) as pool:
                got = list(pool.map(attempt, range(8)))
            assert got.count("running") == 1, got
            assert all(g == "running" or g.endswith("of run is running already") for g in got), got
        assert len(children) == 2
        assert [p.name for p in (run / "export").iterdir() if not p.name.startswith(".")] == ["ui_export.json"]
    finally:
        for p in children:
            p.kill()
            p.wait()
    other = tmp_path / "other"
    other.mkdir()
    run2 = tmp_path / "run2"
    run2.mkdir()
    (run2 / "eval").symlink_to(other)
    with pytest.raises(SftlabError, match="is a link"):
        jobs.start_eval(run2, tmp_path, tmp_path / "d.json", None, None, 32, None, None)
    assert list(other.iterdir()) == []


# ---- issue 46: state files, locks and run folders as a hostile user leaves them ----

def _unblocked(call, timeout: float = 20.0):
    """`call()` in a thread: its result, or a failure naming the hang (a FIFO opened for reading waits for a writer
    forever: the thread is a daemon, so the test process still ends)."""
    import threading

    box: list = []
    thread = threading.Thread(target=lambda: box.append(call()), daemon=True)
    thread.start()
    thread.join(timeout)
    assert box, f"no answer in {timeout:.0f} s: the request hangs"
    return box[0]


def _release_fifos(folder: Path) -> None:
    """Open every FIFO under `folder` for writing once, so a reader the code under test left blocked ends."""
    import stat as st

    for path in folder.rglob("*"):
        if st.S_ISFIFO(path.lstat().st_mode):
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass


def test_an_export_state_naming_a_folder_outside_the_run_is_not_ours(work, tmp_path_factory):
    outside = tmp_path_factory.mktemp("elsewhere")
    (outside / "export_report.json").write_text(json.dumps({"SECRET": "from elsewhere"}))
    export = work / "runs" / "done" / "export"
    export.mkdir()
    (export / "inner").symlink_to(outside)  # inside by name, outside once the link is followed
    c = client(work)
    for out in (str(outside), "../../../elsewhere", str(export / "inner"), str(export / ".." / ".." / "..")):
        (export / "ui_export.json").write_text(json.dumps({"status": "finished", "out": out, "format": "gguf"}))
        r = c.get("/api/runs/done/export")
        assert r.status_code == 200, r.text
        got = r.json()
        assert "SECRET" not in r.text and got["report"] is None and got["lines"] == [] and got["out"] is None, out
        assert got["status"] == "unreadable" and got["error"].startswith("runs/done/export/ui_export.json: `out` "), got
    (export / "mine").mkdir()
    (export / "mine" / "export_report.json").write_text(json.dumps({"SECRET": "ours"}))
    (export / "ui_export.json").write_text(json.dumps({"status": "finished", "out": str(export / "mine")}))
    assert c.get("/api/runs/done/export").json()["report"] == {"SECRET": "ours"}  # a folder of the run's: read


FORGED_STATES = [
    '{"status": "running", "runner_pid": 1180591620717411303424, "runner_start": 1}',  # pid 2**70
    '{"status": "running", "runner_pid": -1, "runner_start": 1}',
    '{"status": "running", "runner_pid": "123", "runner_start": "1"}',
    '{"status": "running", "runner_pid": true, "runner_start": 0}',
    '{"status": "queued", "queued_at": "yesterday"}',
    '{"status": "queued", "queued_at": [1, 2]}',
    '{"status": "failed", "started": NaN}',
    '{"status": "failed", "started": Infinity}',
    '{"status": "stopped", "error": {"message": "x"}}',
    '{"status": 5}',
    '{"status": "running", "start_step": "many"}',
    '["status", "running"]',
    '{"status": "failed"' + ', "x": [' * 100_000 + ']' * 100_000 + '}',  # deeper than Python's json reads
]


@pytest.mark.parametrize("state", FORGED_STATES, ids=range(len(FORGED_STATES)))
def test_a_forged_run_state_is_an_unreadable_run_never_a_500(work, state):
    folder = _cli_run(work, "forged")
    (folder / STATE).write_text(state)
    c = TestClient(create_app(work / "runs", work), base_url=LOCAL, raise_server_exceptions=False)
    r = c.get("/api/runs")
    assert r.status_code == 200, r.text
    runs = {run["id"]: run for run in r.json()["runs"]}
    assert runs["done"]["status"] == "finished"
    assert runs["forged"]["status"] == "unreadable", runs["forged"]
    message = runs["forged"]["error"]
    assert message.startswith("run forged: runs/forged/ui_state.json: ") and "\n" not in message and len(message) < 300
    for method, path in (("GET", "/api/runs/forged"), ("POST", "/api/runs/forged/stop"),
                         ("POST", "/api/runs/forged/resume"), ("GET", "/runs/forged")):
        r = c.request(method, path)
        assert r.status_code == 409 and r.json()["error"]["message"] == message, (path, r.text)
    assert c.get("/").status_code == 200


@pytest.mark.parametrize("state", FORGED_STATES + ['{"status": "finished", "out": 5}', '{"data": ["a"]}'],
                         ids=range(len(FORGED_STATES) + 2))
def test_a_forged_eval_or_export_state_is_shown_as_unreadable(work, state):
    c = TestClient(create_app(work / "runs", work), base_url=LOCAL, raise_server_exceptions=False)
    for what, name in (("eval", "ui_eval.json"), ("export", "ui_export.json")):
        (work / "runs" / "done" / what).mkdir(exist_ok=True)
        (work / "runs" / "done" / what / name).write_text(state)
        r = c.get(f"/api/runs/done/{what}")
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "unreadable", r.json()
        assert r.json()["error"].startswith(f"runs/done/{what}/{name}: "), r.json()


def test_an_upload_onto_a_folder_or_into_an_uploads_file_is_one_sentence(work):
    c = TestClient(create_app(work / "runs", work), base_url=LOCAL, raise_server_exceptions=False)
    (work / "uploads" / "taken.jsonl").mkdir(parents=True)
    r = c.post("/api/upload?name=taken.jsonl", content=b"[]")
    assert r.status_code == 400 and r.json()["error"] == {
        "message": "upload taken.jsonl: uploads/taken.jsonl is a folder; choose another name", "field": "name"}
    assert (work / "uploads" / "taken.jsonl").is_dir() and [p.name for p in (work / "uploads").iterdir()] == [
        "taken.jsonl"]  # no temporary file left behind
    shutil.rmtree(work / "uploads")
    (work / "uploads").write_text("a file where the folder goes")
    r = c.post("/api/upload?name=new.jsonl", content=b"[]")
    assert r.status_code == 400 and r.json()["error"] == {
        "message": "upload new.jsonl: uploads is a file, not a folder; move it away to upload", "field": "name"}
    assert (work / "uploads").read_text() == "a file where the folder goes"


@pytest.mark.parametrize("kind", ["link", "fifo", "folder"])
def test_a_link_fifo_or_folder_at_a_lock_path_is_refused_never_followed(work, monkeypatch, kind):
    from sftlab.ui import jobs

    monkeypatch.setattr(jobs, "spawn", lambda *a, **k: pytest.fail("a child was started"))
    export = work / "runs" / "done" / "export"
    export.mkdir()
    lock = export / ".ui_export.json.start"
    victim = work / "victim"
    if kind == "link":
        lock.symlink_to(victim)
    elif kind == "fifo":
        os.mkfifo(lock)
    else:
        lock.mkdir()
    c = TestClient(create_app(work / "runs", work), base_url=LOCAL, raise_server_exceptions=False)
    try:
        r = _unblocked(lambda: c.post("/api/runs/done/export", json={"format": "safetensors"}))
    finally:
        _release_fifos(export)
    what = {"link": "a symbolic link", "fifo": "a FIFO", "folder": "a folder"}[kind]
    assert r.status_code == 409 and r.json()["error"]["message"] == (
        f"runs/done/export/.ui_export.json.start is {what}, not a lock file sftlab ui made; remove it"), r.text
    # The queue's lock: said before a run folder is made (not after the run is queued, nor beside its name).
    shutil.move(lock, work / "runs" / ".ui-queue.lock")
    try:
        r = _unblocked(lambda: c.post("/api/runs", json={"config": {"datasets": ["data.json"]}, "name": "new"}))
    finally:
        _release_fifos(work / "runs")
    assert r.status_code == 409 and r.json()["error"] == {
        "message": f"runs/.ui-queue.lock is {what}, not a lock file sftlab ui made; remove it"}, r.text
    assert not (work / "runs" / "new").exists() and not victim.exists()


def _deny(monkeypatch, folder: Path) -> None:
    """What chmod 000 on `folder` does to a reader that is not root (the tests may run as root, where chmod
    blocks nothing): listing it, or looking at anything inside it, is PermissionError; the folder itself is seen."""
    import pathlib

    def guarded(name):
        original = getattr(pathlib.Path, name)

        def method(self, *a, **k):
            if folder in self.parents or (self == folder and name in ("iterdir", "glob")):
                raise PermissionError(13, "Permission denied", str(self))
            return original(self, *a, **k)
        return method

    for name in ("is_file", "is_dir", "iterdir", "stat", "read_text", "glob", "exists"):
        monkeypatch.setattr(pathlib.Path, name, guarded(name))


def test_a_run_folder_that_cannot_be_read_is_listed_as_such(work, monkeypatch):
    locked_out = _cli_run(work, "locked")
    _deny(monkeypatch, locked_out)
    c = TestClient(create_app(work / "runs", work), base_url=LOCAL, raise_server_exceptions=False)
    r = c.get("/api/runs")
    assert r.status_code == 200, r.text
    runs = {run["id"]: run for run in r.json()["runs"]}
    assert runs["done"]["status"] == "finished"
    assert runs["locked"]["status"] == "unreadable" and "Permission denied" in runs["locked"]["error"], runs
    for path in ("/", "/eval", "/api/models"):
        assert c.get(path).status_code == 200, path


def test_the_run_page_carries_its_data_as_json_without_nan_or_infinity(work):
    import re

    (work / "runs" / "done" / "metrics.jsonl").write_text('{"step": 1, "loss": NaN, "grad_norm": Infinity}\n')
    (work / "runs" / "done" / "data_report.json").write_text('{"rows_read": Infinity}')
    page = client(work).get("/runs/done").text
    data = re.search(r'<script type="application/json" id="run-data">(.*?)</script>', page).group(1)

    def refuse(word):
        raise AssertionError(f"{word} in the page's JSON")

    run = json.loads(data, parse_constant=refuse)
    assert run["metrics"] == [{"step": 1, "loss": None, "grad_norm": None}] and run["data_report"] == {"rows_read": None}


@pytest.mark.parametrize("name", [".train.lock", "train.log", "metrics.jsonl", "data_report.json", "ui_state.json",
                                  "eval/responses.jsonl", "eval/eval.log", "export/export.log"])
def test_a_fifo_planted_in_a_run_folder_never_hangs_a_page(work, name):
    folder = work / "runs" / "done"
    (folder / name).parent.mkdir(exist_ok=True)
    (folder / name).unlink(missing_ok=True)
    os.mkfifo(folder / name)
    c = TestClient(create_app(work / "runs", work), base_url=LOCAL, raise_server_exceptions=False)
    try:
        for path in ("/api/runs", "/api/runs/done", "/api/runs/done/eval", "/api/runs/done/export", "/"):
            r = _unblocked(lambda: c.get(path), 20 if path == "/api/runs" else 5)
            assert r.status_code in (200, 409), (path, r.text)
    finally:
        _release_fifos(folder)
    if "/" not in name:
        run = {r["id"]: r for r in c.get("/api/runs").json()["runs"]}["done"]
        assert run["status"] == "unreadable" and run["error"].startswith("run done: ") and (
            f"{name} is a FIFO, not a file sftlab writes" in run["error"]), run


@pytest.mark.parametrize("name, text", [
    ("data_report.json", "[" * 500 + "]" * 500),
    ("metrics.jsonl", '{"step": 1, "x": ' + "[" * 500 + "]" * 500 + "}\n"),
    ("config.yaml", "method: lora\nx: &a [*a]\n"),  # an alias that holds itself: nested forever
])
def test_files_nested_too_deep_to_serve_are_one_sentence_never_a_500(work, name, text):
    (work / "runs" / "done" / name).write_text(text)
    c = TestClient(create_app(work / "runs", work), base_url=LOCAL, raise_server_exceptions=False)
    for path in ("/api/runs/done", "/runs/done", "/api/runs/done/events"):
        r = c.get(path)
        assert r.status_code == 409 and r.json()["error"]["message"] == (
            f"run done: runs/done/{name}: nested more than 100 levels deep, which sftlab never writes; remove it"), path
    assert c.get("/api/runs").status_code == 200


def test_a_body_json_cannot_hold_is_the_one_error_shape(work):
    c = TestClient(create_app(work / "runs", work), base_url=LOCAL, raise_server_exceptions=False)
    r = c.post("/api/config/yaml", content=b'{"config": {"seed": 1' + b"0" * 5000 + b"}}",
               headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json() == {"error": {"message": (
        "the request body cannot be read as JSON (a number longer than 4300 digits, or bytes that are no text)")}}


def test_the_runner_never_writes_its_log_through_a_link_or_into_a_fifo(tmp_path, monkeypatch):
    from sftlab.ui.runner import main

    monkeypatch.setattr("signal.signal", lambda *a: None)  # (main() runs in a thread here: signals are the main's)

    os.mkfifo(tmp_path / "fifo.log")
    (tmp_path / "link.log").symlink_to(tmp_path / "elsewhere.log")
    for log, why in (("fifo.log", "No such device or address"), ("link.log", "Too many levels of symbolic links")):
        state = tmp_path / f"{log}.json"
        assert _unblocked(lambda: main(["--state", str(state), "--log", str(tmp_path / log), "--", "--version"])) == 2
        recorded = json.loads(state.read_text())
        assert (recorded["status"], recorded["error"]) == (
            "failed", f"its log {tmp_path / log} cannot be written ({why}); remove what is there")
    assert not (tmp_path / "elsewhere.log").exists()


def test_a_fifo_named_like_a_data_file_never_hangs_the_pickers(work):
    os.mkfifo(work / "pipe.jsonl")
    c = TestClient(create_app(work / "runs", work), base_url=LOCAL, raise_server_exceptions=False)
    try:
        r = _unblocked(lambda: c.get("/api/files"))
    finally:
        _release_fifos(work)
    assert r.status_code == 200 and r.json()["files"] == ["data.json"]


def test_every_config_key_has_its_help_in_chinese(work):
    """The 中文 form explains every key it shows in Chinese (a user found half of them in English)."""
    import re

    from sftlab.config import TrainConfig
    from sftlab.ui.i18n import FIELD_HELP, field_help

    missing = [k for k in TrainConfig.model_fields if not re.search(r"[\u4e00-\u9fff]", FIELD_HELP.get(k, ""))]
    assert missing == []
    assert field_help("packing", "English", "zh").startswith("先把整个数据集打包成长度为 max_length 的行")
    page = client(work).get("/new?lang=zh").text
    assert "把编码好的样本保存在 $SFTLAB_HOME/encoded" in page  # encode_cache's help, as the form shows it


def test_a_dataset_row_gives_its_files_own_names_and_gets_them_back(work):
    # The form's row: path, format, weight and the file's names as one YAML text (docs/data.md "Your own column names").
    c = client(work)
    spec = {"path": "data.json", "format": "alpaca", "names": "{columns: {instruction: 问题, output: 回答}}"}
    r = c.post("/api/config/yaml", json={"config": {"datasets": [spec]}})
    assert r.status_code == 200, r.text
    saved = yaml.safe_load(r.json()["yaml"])["datasets"][0]
    assert saved["columns"] == {"instruction": "问题", "output": "回答"} and saved["format"] == "alpaca"
    assert "names" not in saved
    from sftlab.ui.forms import form_values

    row = form_values({"datasets": [saved]}, work)["datasets"][0]
    assert (row["path"], row["format"], row["weight"]) == ("data.json", "alpaca", None)
    assert yaml.safe_load(row["names"]) == {"columns": {"instruction": "问题", "output": "回答"}}
    for names, field in (("{rows: {a: b}}", "datasets"), ("[1, 2", "datasets"), ("{roles: {bot: gpt}}", "datasets")):
        r = c.post("/api/config/yaml", json={"config": {"datasets": [{**spec, "names": names}]}})
        assert r.status_code == 400 and r.json()["error"]["field"] == field, r.text
