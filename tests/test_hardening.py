"""Hostile and odd input: no row is ever lost silently, and every failure is one sentence, not a traceback."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import FIXTURES, SHARED_DATA
from sftlab.config import load_config
from sftlab.data.load import load_conversations
from sftlab.errors import SftlabError

QWEN = str(FIXTURES / "tokenizers" / "qwen2")
ALPACA = {"instruction": "q", "input": "", "output": "a"}


def _cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "sftlab", *args], capture_output=True, text=True, timeout=300, **kw)


def _lines(path, *lines: str | bytes):
    path.write_bytes(b"".join((l if isinstance(l, bytes) else l.encode()) + b"\n" for l in lines))
    return path


def _accounted(loaded) -> list[int]:
    """Every row number, from the conversations and the rejects together."""
    return sorted([c.row for c in loaded.conversations] + [r.row for r in loaded.rejects])


# --- 1. a `null` row is a row -------------------------------------------------------------------------

@pytest.mark.parametrize("extra", ["", '{"instruction": "x", "input": "", "output": "y", "z": 1}'])
def test_a_null_line_is_rejected_not_lost(tmp_path, extra):
    # The second variant has a type change between rows, which once sent the file to a fallback reader.
    f = _lines(tmp_path / "d.jsonl", json.dumps(ALPACA), "null", json.dumps(ALPACA), *( [extra] if extra else []))
    with pytest.raises(SftlabError, match=r"d.jsonl, row 2: must be an object, got null"):
        load_conversations(f)
    loaded = load_conversations(f, on_error="skip")
    assert loaded.rows == (4 if extra else 3) and len(loaded.conversations) == loaded.rows - 1
    assert [(r.row, r.reason) for r in loaded.rejects] == [(2, "must be an object, got null")]
    assert _accounted(loaded) == list(range(1, loaded.rows + 1))


def test_data_check_counts_null_rows(tmp_path):
    from sftlab.quality.rows import read_files

    f = _lines(tmp_path / "d.jsonl", json.dumps(ALPACA), "null", json.dumps(ALPACA), "null")
    rows, _ = read_files([f])
    assert [r.row for r in rows] == [1, 2, 3, 4]
    assert [r.error is not None for r in rows] == [False, True, False, True]


# --- 2. one stray key does not flip the file's format -------------------------------------------------

def test_a_stray_key_in_one_row_blames_that_row_only(tmp_path):
    f = _lines(tmp_path / "d.jsonl", *[json.dumps(ALPACA)] * 5, json.dumps({**ALPACA, "messages": "oops"}))
    loaded = load_conversations(f, on_error="skip")
    assert loaded.format == "alpaca" and len(loaded.conversations) == 6 and not loaded.rejects
    mixed = _lines(tmp_path / "m.jsonl", *[json.dumps(ALPACA)] * 5, json.dumps({"messages": "oops"}))
    loaded = load_conversations(mixed, on_error="skip")
    assert loaded.format == "alpaca" and len(loaded.conversations) == 5
    assert [r.row for r in loaded.rejects] == [6]


# --- 3. CSV text that looks like a missing value is text ----------------------------------------------

def test_csv_cells_none_na_nan_null_stay_text(tmp_path):
    f = tmp_path / "d.csv"
    f.write_text('instruction,input,output\nq1,,None\nq2,,NA\nq3,,NaN\nq4,,null\nq5,,"",\n'.replace(',\n', '\n'))
    loaded = load_conversations(f, on_error="skip")
    answers = [c.messages[-1].content for c in loaded.conversations]
    assert answers == ["None", "NA", "NaN", "null"]
    assert [(r.row, r.reason) for r in loaded.rejects] == [
        (5, "field 'output': is null (or an empty cell) (the format 'alpaca' was detected from the first row; "
            "set format to override)")]


# --- 4. Ctrl-C is a non-zero exit with a word ---------------------------------------------------------

@pytest.mark.slow
def test_ctrl_c_exits_130_with_a_message(tiny_chat_model):
    proc = subprocess.Popen([sys.executable, "-m", "sftlab", "chat", "--model", str(tiny_chat_model)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(8)  # imports and the prompt
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "aborted" in err and "Traceback" not in err


# --- 5. one sentence, never a traceback ---------------------------------------------------------------

@pytest.mark.parametrize(
    "content, reason",
    [
        (b'{"instruction": "q\\ud800", "input": "", "output": "a"}',
         ", row 2, field 'instruction': text holds a lone surrogate (U+D800), which is not Unicode"),
        (b'{"instruction": "q", "input": "", "output": "\xff\xfe"}', ": not valid UTF-8 (byte 45 of line 2)"),
        (b'{"instruction": "q", "input": "", "output": "a", "output": "b"}',
         ", row 2: key 'output' is given more than once"),
        (b"[" * 100_000 + b"]" * 100_000, ": line 2 is nested too deeply to read"),
        (b"[1, 2]", ", row 2: must be an object, got a list"),
    ],
)
def test_bad_rows_are_one_sentence_and_skippable(tmp_path, content, reason):
    f = _lines(tmp_path / "d.jsonl", json.dumps(ALPACA), content, json.dumps(ALPACA))
    with pytest.raises(SftlabError) as e:
        load_conversations(f)
    assert str(e.value) == f"{f}{reason}"
    loaded = load_conversations(f, on_error="skip")
    assert len(loaded.conversations) == 2 and [r.row for r in loaded.rejects] == [2]
    assert _accounted(loaded) == [1, 2, 3]


def test_bad_rows_through_the_cli_are_one_sentence(tmp_path, cli):
    f = _lines(tmp_path / "d.jsonl", json.dumps(ALPACA), b'{"instruction": "q", "input": "", "output": "\xff"}')
    for args in (["inspect", "--model", QWEN, "--template", "chatml", "--data", str(f)],
                 ["data", "check", str(f), "--model", QWEN, "--template", "chatml", "--no-clusters"]):
        r = cli(*args)
        assert "Traceback" not in r.stderr, r.stderr[-2000:]
        if args[0] == "inspect":
            assert r.returncode == 2 and "d.jsonl: not valid UTF-8 (byte 45 of line 2)" in " ".join(r.stderr.split())


def test_invalid_utf8_in_a_json_file_names_the_line(tmp_path):
    f = tmp_path / "d.json"
    f.write_bytes(b'[{"instruction": "q", "input": "", "output": "a"},\n {"instruction": "\xc3(", "output": "b"}]')
    with pytest.raises(SftlabError, match=r"d.json: not valid UTF-8 \(byte 69, line 2\)"):
        load_conversations(f)


def test_a_jsonl_holding_one_list_says_so(tmp_path):
    f = _lines(tmp_path / "d.jsonl", json.dumps([ALPACA, ALPACA]))
    with pytest.raises(SftlabError, match="no row is a JSON object \\(row 1 is a list\\)"):
        load_conversations(f)


def _train_sets(tiny_model, out, *extra):
    return [f"model={tiny_model}", f"datasets=[{SHARED_DATA / 'alpaca_en_demo.json'}]", "template=llama2",
            "limit=8", "max_length=128", "batch_size=4", "precision=fp32", f"output_dir={out}", *extra]


@pytest.mark.parametrize("case", ["file", "under_file", "read_only"])
def test_an_unusable_output_dir_is_one_sentence(tiny_model, tmp_path, case):
    from sftlab.train.run import train

    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    out = {"file": blocker, "under_file": blocker / "run", "read_only": tmp_path / "ro" / "run"}[case]
    if case == "read_only":
        (tmp_path / "ro").mkdir()
        os.chmod(tmp_path / "ro", 0o500)
        if os.access(tmp_path / "ro", os.W_OK):  # root writes anyway
            (tmp_path / "ro" / "run").mkdir()
            os.chmod(tmp_path / "ro" / "run", 0o500)
            if os.access(tmp_path / "ro" / "run", os.W_OK):
                pytest.skip("running as root: permissions do not stop writes here")
    want = {"file": "a file of that name exists", "under_file": "a part of the path is a file",
            "read_only": "cannot write there"}[case]
    with pytest.raises(SftlabError, match=f"output_dir {out}: {want}"):
        train(load_config(None, _train_sets(tiny_model, out)), quiet=True)


# --- 5/6. checkpoints: complete, or passed over with a word, or one sentence --------------------------

@pytest.fixture(scope="module")
def two_checkpoints(tiny_model, tmp_path_factory):
    from sftlab.train.run import train

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
    from sftlab.train.run import checkpoint_problem, resume_checkpoint

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
    from sftlab.train.run import resume_checkpoint

    out = _damaged(two_checkpoints, tmp_path, "optimizer.pt")
    (out / "checkpoint-2" / "optimizer.pt").unlink()
    config = load_config(None, _train_sets("m", out, "resume=true"), check_files=False)
    with pytest.raises(SftlabError, match="no complete checkpoint"):
        resume_checkpoint(config)


# --- 9. accounting and messages -----------------------------------------------------------------------

def test_null_and_absent_fields_are_told_apart(tmp_path):
    f = _lines(tmp_path / "d.jsonl", json.dumps(ALPACA), json.dumps({"instruction": "q", "output": None}),
               json.dumps({"instruction": "q"}))
    loaded = load_conversations(f, fmt="alpaca", on_error="skip")
    assert [(r.row, r.reason) for r in loaded.rejects] == [
        (2, "field 'output': is null (or an empty cell)"), (3, "field 'output': missing field")]


def test_report_counts_reasons_whole(tmp_path):
    from sftlab.data.pipeline import Source, build_examples
    from conftest import tokenizer

    f = _lines(tmp_path / "d.jsonl", json.dumps(ALPACA), "{bad", "{worse", json.dumps({"instruction": "q"}))
    _, report = build_examples([Source(str(f))], tokenizer("qwen2"), "chatml", on_error="skip")
    assert report.to_dict()["rejected_reasons"] == {
        "invalid JSON: Expecting property name enclosed in double quotes": 2,
        "missing field (the format 'alpaca' was detected from the first row; set format to override)": 1,
    }


def test_a_set_mistake_is_blamed_on_set_not_the_file(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text(f"datasets: [{SHARED_DATA / 'alpaca_en_demo.json'}]\nepochs: 2\n")
    with pytest.raises(SftlabError, match="^--set: `epochs` input should be a valid number"):
        load_config(f, ["epochs=three"])
    with pytest.raises(SftlabError, match="^--set: unknown key `learning_rat`"):
        load_config(f, ["learning_rat=1"])
    f.write_text("epochs: three\n")
    with pytest.raises(SftlabError, match=f"^{f}: `epochs` input should be a valid number"):
        load_config(f, [f"datasets=[{SHARED_DATA / 'alpaca_en_demo.json'}]"])


def test_inspect_limit_must_be_positive(tmp_path, cli):
    f = _lines(tmp_path / "d.jsonl", json.dumps(ALPACA), json.dumps(ALPACA))
    r = cli("inspect", "--model", QWEN, "--template", "chatml", "--data", str(f), "--limit", "-1")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "--limit" in r.stderr


def test_an_unreadable_csv_is_one_sentence_without_the_libraries_log(tmp_path, cli):
    f = tmp_path / "d.csv"
    f.write_text("instruction,input,output\nq,,a\nq,,a,extra,cells\n")
    r = cli("inspect", "--model", QWEN, "--template", "chatml", "--data", str(f))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "ERROR" not in r.stderr and f"{f}: cannot be read as csv" in " ".join(r.stderr.split())


def test_version_flag(cli):
    r = cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == "sftlab 0.1.0"
