"""sftlab runs: run folders built by hand (files of known sizes) in, the literal listing out; pruning drops only
finished runs' checkpoints; keep_checkpoints at the end of a real tiny run."""

import json
import logging
import re

import pytest

from sftlab.runs import find_runs, format_bytes, format_runs, listing, prune_checkpoints, settle_checkpoints


def _text(path, text="", size=100):
    """A file of exactly `size` bytes starting with `text` (padded with spaces, which YAML and JSON ignore)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    assert len(text) <= size
    path.write_text(text.ljust(size))


def _weights(path, data=1000, written=None):
    """A safetensors file of 8 + 128 + `data` bytes (or cut to `written` bytes of data: a truncated one)."""
    header = json.dumps({"w": {"dtype": "U8", "shape": [data], "data_offsets": [0, data]}}).ljust(128).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * (data if written is None else written))


def _checkpoint(run, step, max_steps, optimizer):
    _text(run / f"checkpoint-{step}" / "trainer_state.json", json.dumps({"global_step": step, "max_steps": max_steps}))
    _text(run / f"checkpoint-{step}" / "optimizer.pt", size=optimizer)


def _metrics(run, losses):
    _text(run / "metrics.jsonl", "\n".join(json.dumps({"step": s, "loss": l}) for s, l in losses), size=200)


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    # finished: the final model is there (model 1136 + 100, checkpoints 2 × 3100, other 100 + 200 + 300)
    done = root / "done"
    _text(done / "config.yaml", "method: full\n")
    _metrics(done, [(1, 2.5), (4, 1.25)])
    _text(done / "data_report.json", "{}", size=300)
    _weights(done / "model.safetensors")
    _text(done / "config.json", "{}")
    _checkpoint(done, 2, 4, 3000)
    _checkpoint(done, 4, 4, 3000)
    # interrupted after step 6 of 10: a checkpoint at 5, the adapter cut short (136 + 500 bytes)
    cut = root / "group" / "cut"
    _text(cut / "config.yaml", "method: lora\n")
    _metrics(cut, [(1, 2.0), (6, 1.875)])
    _weights(cut / "adapter_model.safetensors", written=500)
    _checkpoint(cut, 5, 10, 2000)
    # staged: the first stage finished (its merged model: 1136), the second interrupted at step 2 of 8
    staged = root / "staged"
    _text(staged / "config.yaml", "method: full\nstages:\n- {name: cpt}\n- {name: sft, method: lora}\n")
    _text(staged / "cpt" / "config.yaml", "method: full\n")
    _metrics(staged / "cpt", [(3, 3.5)])
    _text(staged / "cpt" / "stage_done.json", "{}")
    _weights(staged / "cpt" / "model.safetensors")
    _checkpoint(staged / "cpt", 3, 3, 1000)
    _text(staged / "sft" / "config.yaml", "method: lora\n")
    _checkpoint(staged / "sft", 2, 8, 500)
    # not runs: an eval output, a folder of other things
    _text(root / "eval" / "summary.json", "{}")
    return root


def test_every_run_is_found_with_its_status_steps_loss_and_sizes(runs):
    found = listing(find_runs(runs))
    rows = [{k: r[k] for k in ("path", "status", "method", "steps", "total_steps", "final_loss", "bytes",
                               "model_bytes", "checkpoint_bytes", "other_bytes", "checkpoints")} for r in found["runs"]]
    assert rows == [
        {"path": str(runs / "done"), "status": "finished", "method": "full", "steps": 4, "total_steps": 4,
         "final_loss": 1.25, "bytes": 8036, "model_bytes": 1236, "checkpoint_bytes": 6200, "other_bytes": 600,
         "checkpoints": ["checkpoint-2", "checkpoint-4"]},
        {"path": str(runs / "group" / "cut"), "status": "unfinished", "method": "lora", "steps": 6, "total_steps": 10,
         "final_loss": 1.875, "bytes": 3036, "model_bytes": 636, "checkpoint_bytes": 2100, "other_bytes": 300,
         "checkpoints": ["checkpoint-5"]},
        {"path": str(runs / "staged"), "status": "unfinished", "method": "full→lora", "steps": 5, "total_steps": 11,
         "final_loss": 3.5, "bytes": 3436, "model_bytes": 1136, "checkpoint_bytes": 1700, "other_bytes": 600,
         "checkpoints": []},
    ]
    stages = [(s["path"], s["status"], s["method"], s["steps"], s["total_steps"], s["checkpoint_bytes"])
              for s in found["runs"][2]["stages"]]
    assert stages == [(str(runs / "staged" / "cpt"), "finished", "full", 3, 3, 1100),
                      (str(runs / "staged" / "sft"), "unfinished", "lora", 2, 8, 600)]
    assert found["total"] == {"runs": 3, "bytes": 8036 + 3036 + 3436, "model_bytes": 1236 + 636 + 1136,
                              "checkpoint_bytes": 6200 + 2100 + 1700, "other_bytes": 600 + 300 + 600}


def test_the_listing_reads_as_a_table_with_a_total_and_how_unfinished_runs_go_on(runs):
    lines = format_runs(find_runs(runs)).splitlines()
    cells = [re.split(r"\s{2,}", line.strip()) for line in lines[:7]]
    assert cells == [
        ["run", "status", "method", "steps", "final loss", "size", "model", "checkpoints", "other"],
        [str(runs / "done"), "finished", "full", "4/4", "1.2500", "8.0 KB", "1.2 KB", "6.2 KB", "600 B"],
        [str(runs / "group" / "cut"), "unfinished", "lora", "6/10", "1.8750", "3.0 KB", "636 B", "2.1 KB", "300 B"],
        [str(runs / "staged"), "unfinished", "full→lora", "5/11", "3.5000", "3.4 KB", "1.1 KB", "1.7 KB", "600 B"],
        ["cpt", "finished", "full", "3/3", "3.5000", "2.6 KB", "1.1 KB", "1.1 KB", "400 B"],
        ["sft", "unfinished", "lora", "2/8", "-", "700 B", "0 B", "600 B", "100 B"],
        ["total", "3 runs", "15 KB", "3.0 KB", "10 KB", "1.5 KB"],
    ]
    assert lines[7:] == [f"{runs / 'group' / 'cut'}: unfinished; `resume: true` continues it from checkpoint-5",
                         f"{runs / 'staged' / 'sft'}: unfinished; `resume: true` continues it from checkpoint-2"]


@pytest.mark.parametrize("n, text", [(0, "0 B"), (999, "999 B"), (1000, "1.0 KB"), (514_000_000, "514 MB"),
                                     (1_600_000_000, "1.6 GB"), (12_345_678_901_234, "12 TB")])
def test_sizes_read_in_decimal_units(n, text):
    assert format_bytes(n) == text


def test_prune_removes_only_finished_runs_checkpoints(runs):
    pruned = prune_checkpoints(runs)
    assert [(p.relative_to(runs).as_posix(), n) for p, n in pruned.removed] == [
        ("done/checkpoint-2", 3100), ("done/checkpoint-4", 3100), ("staged/cpt/checkpoint-3", 1100)]
    assert pruned.freed == 7300
    assert [p.relative_to(runs).as_posix() for p, _ in pruned.skipped] == ["group/cut", "staged/sft"]
    left = sorted(p.relative_to(runs).as_posix() for p in runs.rglob("checkpoint-*"))
    assert left == ["group/cut/checkpoint-5", "staged/sft/checkpoint-2"]
    assert (runs / "done" / "model.safetensors").is_file()  # the model stays


def test_prune_never_follows_a_link_never_leaves_the_folder_and_keeps_going(runs, tmp_path, cli):
    """A run folder outside reached through a symlink inside, a symlinked checkpoint and .staging: none is
    followed, each is reported with its reason, the other runs are pruned (issue 33.4; main crashed half-way on
    `rmtree on a symbolic link`)."""
    outside = tmp_path / "outside"
    _text(outside / "config.yaml", "method: full\n")
    _weights(outside / "model.safetensors")
    _checkpoint(outside, 3, 3, 1000)
    (runs / "link").symlink_to(outside)
    (runs / "done" / "checkpoint-9").symlink_to(outside / "checkpoint-3")
    (runs / "done" / ".staging").symlink_to(outside)
    result = cli("runs", runs, "--prune-checkpoints", "--json")
    assert result.returncode == 0 and "Traceback" not in result.stderr
    pruned = json.loads(result.stdout)
    assert [(d["path"], d["bytes"]) for d in pruned["removed"]] == [
        (str(runs / "done" / "checkpoint-2"), 3100), (str(runs / "done" / "checkpoint-4"), 3100),
        (str(runs / "staged" / "cpt" / "checkpoint-3"), 1100)]
    skipped = {d["path"]: d["reason"] for d in pruned["skipped"]}
    assert skipped[str(runs / "link")] == f"a symbolic link (to {outside}); links are not followed"
    assert skipped[str(runs / "done" / "checkpoint-9")] == (
        f"a symbolic link (to {outside / 'checkpoint-3'}); links are not followed")
    assert skipped[str(runs / "done" / ".staging")] == f"a symbolic link (to {outside}); links are not followed"
    assert (outside / "checkpoint-3" / "optimizer.pt").is_file() and (outside / "config.yaml").is_file()
    assert (runs / "done" / "checkpoint-9").is_symlink()  # the links themselves stay too


def test_prune_leaves_a_running_run_alone(runs, hold_lock, cli):
    """A finished-looking run whose training still holds its lock (here: one writing its final model), and a
    staged run in training: their checkpoints are in use; `sftlab runs` lists them as running."""
    done = hold_lock(runs / "done")
    staged = hold_lock(runs / "staged")
    pruned = prune_checkpoints(runs)
    assert pruned.removed == []
    why = {p.relative_to(runs).as_posix(): reason for p, reason in pruned.skipped}
    assert why["done"] == f"running (pid {done.pid}): its training uses its checkpoints"
    assert why["staged"] == f"running (pid {staged.pid}): its training uses its checkpoints"
    assert len(list(runs.rglob("checkpoint-*"))) == 5
    listed = cli("runs", runs)
    rows = {line.split()[0]: line.split()[1] for line in listed.stdout.splitlines()[1:] if line.split()}
    assert rows[str(runs / "done")] == "running" and rows[str(runs / "staged")] == "running"
    assert rows["sft"] == "running" and rows["cpt"] == "finished"  # the stage in training: the first not done
    assert f"{runs / 'done'}: training now (pid {done.pid})" in listed.stdout.splitlines()
    as_json = json.loads(cli("runs", runs, "--json").stdout)
    assert [(r["status"], r["pid"]) for r in as_json["runs"]] == [
        ("running", done.pid), ("unfinished", None), ("running", staged.pid)]


def test_prune_dry_run_removes_nothing(runs, cli):
    result = cli("runs", runs, "--prune-checkpoints", "--dry-run")
    assert result.returncode == 0
    assert result.stdout.splitlines() == [
        f"would remove {runs / 'done' / 'checkpoint-2'} (3.1 KB)",
        f"would remove {runs / 'done' / 'checkpoint-4'} (3.1 KB)",
        f"would remove {runs / 'staged' / 'cpt' / 'checkpoint-3'} (1.1 KB)",
        f"kept {runs / 'group' / 'cut'}: unfinished: its checkpoints are needed to resume it",
        f"kept {runs / 'staged' / 'sft'}: unfinished: its checkpoints are needed to resume it",
        "would free 7.3 KB (3 checkpoint folders)",
    ]
    assert len(list(runs.rglob("checkpoint-*"))) == 5


def test_the_command_lists_prints_json_and_says_what_is_wrong_in_one_sentence(runs, cli, tmp_path):
    listed = cli("runs", runs)
    assert listed.returncode == 0 and listed.stdout.splitlines()[1].startswith(str(runs / "done"))
    as_json = json.loads(cli("runs", runs, "--json").stdout)
    assert as_json["total"]["bytes"] == 14508
    assert cli("runs", runs / "done", "--json").returncode == 0  # one run's own folder
    missing = cli("runs", tmp_path / "nowhere")
    assert missing.returncode == 2  # (rich wraps the sentence at the terminal's width)
    assert " ".join(missing.stderr.split()) == f"error: runs: folder {tmp_path / 'nowhere'} not found"
    assert "Traceback" not in missing.stderr
    alone = cli("runs", runs, "--dry-run")
    assert alone.returncode == 2 and "--dry-run goes with --prune-checkpoints" in alone.stderr
    (tmp_path / "empty").mkdir()
    assert cli("runs", tmp_path / "empty").stdout == "no runs (no folder with config.yaml)\n"


def test_json_is_json_when_metrics_hold_nan_and_infinity(tmp_path, cli):
    run = tmp_path / "runs" / "diverged"
    _text(run / "config.yaml", "method: full\n")
    # what Python's json writes for float('nan') / float('inf'), and json.loads reads back
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 2.5}\n{"step": 2, "loss": NaN}\n{"step": 3, "loss": Infinity}\n')
    result = cli("runs", tmp_path / "runs", "--json")
    assert result.returncode == 0
    for word in ("NaN", "Infinity"):
        assert word not in result.stdout
    strict = json.loads(result.stdout, parse_constant=lambda word: pytest.fail(f"{word} in runs --json"))
    assert strict["runs"][0]["final_loss"] is None and strict["runs"][0]["steps"] == 3


@pytest.mark.parametrize("keep, left, freed", [("all", ["checkpoint-2", "checkpoint-4"], 0),
                                                ("last", ["checkpoint-4"], 3100), ("none", [], 6200)])
def test_keep_checkpoints_at_the_end_of_a_run(runs, caplog, keep, left, freed):
    done = runs / "done"
    with caplog.at_level(logging.INFO, logger="sftlab"):
        removed = settle_checkpoints(done, keep)
    assert sorted(p.name for p in done.glob("checkpoint-*")) == left
    assert sum(n for _, n in removed) == freed
    said = {
        "all": f"checkpoint-2, checkpoint-4 in {done} take 6.2 KB (for resuming only): `sftlab runs "
               f"--prune-checkpoints {done}` or keep_checkpoints: last | none drops them",
        "last": f"keep_checkpoints: last — removed checkpoint-2 from {done}, 3.1 KB freed",
        "none": f"keep_checkpoints: none — removed checkpoint-2, checkpoint-4 from {done}, 6.2 KB freed",
    }[keep]
    assert caplog.messages == [said]


def test_keep_checkpoints_is_a_checked_config_key():
    from sftlab.config import load_config
    from sftlab.errors import SftlabError

    assert load_config(None, ["datasets=[x.json]", "keep_checkpoints=none"], check_files=False).keep_checkpoints == "none"
    assert load_config(None, ["datasets=[x.json]"], check_files=False).keep_checkpoints == "all"
    with pytest.raises(SftlabError, match="keep_checkpoints"):
        load_config(None, ["datasets=[x.json]", "keep_checkpoints=some"], check_files=False)


@pytest.mark.slow
def test_a_real_run_logs_its_precision_and_keeps_no_checkpoints(tiny_model, tmp_path, caplog):
    from helpers import SHARED_DATA

    from sftlab.config import load_config
    from sftlab.training import train

    out = tmp_path / "run"
    sets = [f"model={tiny_model}", f"datasets=[{SHARED_DATA / 'alpaca_en_demo.json'}]", "template=llama2", "limit=16",
            "max_length=128", "batch_size=4", "precision=fp32", f"output_dir={out}", "max_steps=4", "save_steps=2",
            "keep_checkpoints=none"]
    with caplog.at_level(logging.INFO, logger="sftlab"):
        result = train(load_config(None, sets), quiet=True)
    assert caplog.messages.count("precision: fp32 (set in the config)") == 1
    removed = [m for m in caplog.messages if m.startswith("keep_checkpoints: none")]
    assert len(removed) == 1 and removed[0].startswith(f"keep_checkpoints: none — removed checkpoint-2, checkpoint-4 from {out}, ")
    assert not list(out.glob("checkpoint-*"))
    [run] = find_runs(out)
    assert (run.status, run.steps, run.total_steps, run.checkpoint_bytes) == ("finished", 4, 4, 0)
    assert run.final_loss == pytest.approx(result.final_loss)
    weights = sum(p.stat().st_size for p in out.glob("*.safetensors"))
    assert weights > 0 and run.model_bytes >= weights


# ---- damaged run folders: one line each, never a traceback, never a hang ------------------------------------

@pytest.fixture
def deny(monkeypatch):
    """deny(path): reading `path` fails with PermissionError as after `chmod 000` for a user who is not root
    (tests may run as root, whom chmod does not stop): a folder cannot be listed nor anything inside it looked
    at; a file cannot be opened."""
    import io
    import os

    denied: list[str] = []

    def under(path, itself):
        try:
            text = os.fsdecode(path)
        except TypeError:
            return False
        text = os.path.abspath(text)
        return any(text.startswith(d + os.sep) or (itself and text == d) for d in denied)

    def wrap(module, name, itself):
        real = getattr(module, name)

        def denied_call(path, *args, **kwargs):
            if not isinstance(path, int) and under(path, itself(path)):
                raise PermissionError(13, "Permission denied", os.fsdecode(path))
            return real(path, *args, **kwargs)

        monkeypatch.setattr(module, name, denied_call)

    listing = lambda path: os.path.isdir(os.fsdecode(path)) if not under(path, False) else True
    for name in ("stat", "lstat"):
        wrap(os, name, lambda path: False)
    for name in ("scandir", "listdir"):
        wrap(os, name, listing)
    wrap(os, "open", lambda path: True)
    wrap(io, "open", lambda path: True)
    return lambda path: denied.append(os.path.abspath(path))


def _damaged(cli, root):
    """(`sftlab runs` lines after the table, {path: (status, problem)} of --json): both exit 0, no traceback."""
    text, as_json = cli("runs", root), cli("runs", root, "--json")
    assert (text.returncode, as_json.returncode, text.stderr, as_json.stderr) == (0, 0, "", "")
    notes = [line for line in text.stdout.splitlines() if ": damaged: " in line or ": training now" in line]
    runs = {r["path"]: (r["status"], r["problem"]) for r in json.loads(as_json.stdout)["runs"]}
    return notes, runs


@pytest.mark.parametrize("config, problem", [
    ("method: full\nstages: 5\n", "config.yaml: stages is 5, not a list of stages"),
    ("method: full\nstages: [5]\n", "config.yaml: stages[1] is not a mapping of keys"),
    ("method: full\nstages: [{name: ../../etc}]\n",
     "config.yaml: stages[1].name '../../etc' is not a plain folder name (no '/', '\\', '..' or surrounding spaces): "
     "it names a folder inside {run}"),
    ("[1, 2]\n", "config.yaml is not a mapping of keys"),
    ("a: [" * 5000 + "\n", "config.yaml is not YAML"),
])
def test_a_config_that_is_not_a_run_config_is_one_damaged_line(runs, cli, config, problem):
    run = runs / "bad"
    _text(run / "config.yaml", config, size=max(100, len(config)))
    notes, found = _damaged(cli, runs)
    problem = problem.format(run=run)
    assert notes == [f"{run}: damaged: {problem}"]
    assert found[str(run)] == ("damaged", problem)
    assert found[str(runs / "done")] == ("finished", None)  # the others are listed as before


@pytest.mark.parametrize("denied, problem", [
    ("done", "the folder cannot be read (Permission denied)"),
    ("done/config.yaml", "config.yaml cannot be read (Permission denied)"),
    ("done/checkpoint-4", "checkpoint-4 cannot be read (Permission denied)"),
    ("done/metrics.jsonl", "metrics.jsonl cannot be read (Permission denied)"),
])
def test_a_run_that_cannot_be_read_is_one_damaged_line(runs, cli, deny, denied, problem):
    deny(runs / denied)
    notes, found = _damaged(cli, runs)
    assert f"{runs / 'done'}: damaged: {problem}" in notes
    assert found[str(runs / "done")] == ("damaged", problem)
    assert found[str(runs / "group" / "cut")] == ("unfinished", None)
    assert prune_checkpoints(runs, dry_run=True).skipped[0] == (runs / "done", f"damaged: {problem}")


@pytest.mark.skipif(hasattr(__import__("os"), "geteuid") and __import__("os").geteuid() == 0,
                    reason="root reads a chmod 000 folder anyway (the `deny` test above simulates it)")
def test_a_run_folder_chmod_000_is_one_damaged_line(runs, cli):
    (runs / "done").chmod(0)
    try:
        notes, found = _damaged(cli, runs)
    finally:
        (runs / "done").chmod(0o755)
    assert found[str(runs / "done")][0] == "damaged"


def _without_hanging(call, fifo):
    import os
    import threading

    out = {}
    worker = threading.Thread(target=lambda: out.update(result=call()), daemon=True)
    worker.start()
    worker.join(20)
    if worker.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # (releases the blocked reader)
        pytest.fail("blocked on a FIFO")
    return out["result"]


@pytest.mark.parametrize("plant, problem", [
    (".train.lock", ".train.lock is a FIFO, not a file sftlab writes; not ours, so it is not read (remove it)"),
    ("metrics.jsonl", "metrics.jsonl is a FIFO, not a file sftlab writes"),
    ("config.yaml", "config.yaml is a FIFO, not a file sftlab writes"),
    ("checkpoint-4/trainer_state.json", "checkpoint-4/trainer_state.json is a FIFO, not a file sftlab writes"),
])
def test_a_fifo_in_a_run_folder_is_damage_never_a_hang(runs, plant, problem):
    import os

    path = runs / "done" / plant
    path.unlink(missing_ok=True)
    os.mkfifo(path)
    found = _without_hanging(lambda: {r.path.name: (r.status, r.problem) for r in find_runs(runs)}, path)
    assert found["done"] == ("damaged", problem)
    assert found["cut"] == ("unfinished", None)


def test_a_forged_train_process_json_of_a_held_lock_is_not_believed(runs, cli):
    import fcntl
    import os

    fd = os.open(runs / "done" / ".train.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # held, as a training holds it
    try:
        (runs / "done" / "train_process.json").write_text(
            '{"pid": 1180591620717411303424, "start": 1, "cmdline": [], "started": NaN}')
        notes, found = _damaged(cli, runs)
    finally:
        os.close(fd)
    problem = "train_process.json: pid is not a process id"
    assert found[str(runs / "done")] == ("running", problem)
    assert notes == [f"{runs / 'done'}: training now (by a process whose train_process.json is damaged: {problem})"]
    assert json.loads(cli("runs", runs, "--json").stdout)["runs"][0]["pid"] is None


def test_hostile_metrics_and_checkpoint_names_are_read_as_what_they_are(runs, cli):
    """A 10 MB line, binary garbage, deep nesting and a U+2028 inside a record; checkpoint-N names that are a
    link, a file, 20 digits and a superscript digit."""
    done = runs / "done"
    (done / "metrics.jsonl").write_bytes(
        b'{"step": 1, "loss": 2.5}\n' + b'{"x": "' + b"a" * 10_000_000 + b'"}\n' + b"\xff\xfe\x00garbage\n"
        + b"[" * 100_000 + b"\n" + '{"step": 4, "loss": 1.25, "note": "a\u2028b"}\n'.encode())
    (done / "checkpoint-7").symlink_to(done / "checkpoint-4")
    (done / "checkpoint-8").write_text("{}")
    _text(done / "checkpoint-99999999999999999999" / "trainer_state.json", '{"global_step": 5, "max_steps": 9}')
    (done / "checkpoint-²").mkdir()
    [run] = [r for r in find_runs(runs) if r.path == done]
    assert (run.status, run.problem, run.steps, run.final_loss) == (
        "damaged", "metrics.jsonl line 2 is not a record sftlab writes", 5, 1.25)
    assert run.checkpoints == ["checkpoint-2", "checkpoint-4", "checkpoint-99999999999999999999"]


def test_a_diverged_loss_is_null_in_the_listing_too(tmp_path, cli):
    run = tmp_path / "runs" / "diverged"
    _text(run / "config.yaml", "method: full\n")
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 2.5}\n{"step": 2, "loss": Infinity}\n')
    [found] = find_runs(tmp_path / "runs")
    assert found.final_loss is None
    assert cli("runs", tmp_path / "runs").stdout.splitlines()[1].split()[:5] == [str(run), "unfinished", "full",
                                                                                   "2/?", "-"]


def test_names_that_hold_newlines_cannot_forge_lines_of_the_listing(tmp_path, cli):
    run = tmp_path / "runs" / "a\nb: damaged: forged\u2028"
    _text(run / "config.yaml", "method: \"full\\nforged\"\n")
    text = cli("runs", tmp_path / "runs").stdout
    assert text.splitlines()[1].split()[:3] == [str(tmp_path / "runs" / "a\\nb:"), "damaged:", "forged\\u2028"]
    assert len(text.splitlines()) == 4  # header, the run, the total, how it goes on


def test_a_yaml_alias_bomb_in_config_is_never_written_out_whole(runs):
    """method and stages holding 9^9 strings through YAML aliases: the listing says what they are, cut short."""
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    _text(runs / "bomb" / "config.yaml", "\n".join([*lines, "method: *i", "stages: {x: *i}"]) + "\n", size=2000)
    [bomb] = [r for r in find_runs(runs) if r.path.name == "bomb"]
    assert (bomb.status, bomb.problem) == (
        "damaged", "config.yaml: stages is {'x': [[[[[[...], [...], [...], [...], …, not a list of stages")
