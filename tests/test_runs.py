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
    from conftest import SHARED_DATA

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
