"""Hostile and odd input: no row is ever lost silently, and every failure is one sentence, not a traceback."""

from __future__ import annotations

import json
import os
import re
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


def _cli(*args, timeout=300, **kw):
    return subprocess.run([sys.executable, "-m", "sftlab", *args], capture_output=True, text=True, timeout=timeout, **kw)


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
    from sftlab.training import train

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


# --- 9. accounting and messages -----------------------------------------------------------------------

def test_null_and_absent_fields_are_told_apart(tmp_path):
    f = _lines(tmp_path / "d.jsonl", json.dumps(ALPACA), json.dumps({"instruction": "q", "output": None}),
               json.dumps({"instruction": "q"}))
    loaded = load_conversations(f, fmt="alpaca", on_error="skip")
    assert [(r.row, r.reason) for r in loaded.rejects] == [
        (2, "field 'output': is null (or an empty cell)"), (3, "field 'output': missing field")]


def test_report_counts_reasons_whole(tmp_path):
    from sftlab.config import DataSettings
    from sftlab.data.pipeline import Source, build_examples
    from conftest import tokenizer

    f = _lines(tmp_path / "d.jsonl", json.dumps(ALPACA), "{bad", "{worse", json.dumps({"instruction": "q"}))
    _, report = build_examples([Source(str(f))], tokenizer("qwen2"), DataSettings(template="chatml", on_error="skip"))
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


# === The second hostile-input round (issue 25): each case as it was reported =============================

def _vocab_only_gguf(path):
    """A GGUF file with a vocabulary and no tensors, as llama.cpp's ggml-vocab-*.gguf files are."""
    from gguf import GGUFWriter

    w = GGUFWriter(str(path), "llama")
    w.add_tokenizer_model("gpt2")
    w.add_token_list(["a", "b", "ab"])
    w.add_token_types([1, 1, 1])
    w.add_token_merges(["a b"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _one_line(stderr: str) -> str:
    return " ".join(stderr.split())


# --- silently wrong ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["../../escape", "a/b", "..", "/tmp/abs", " padded", "x\\y"])
def test_a_stage_name_cannot_lead_out_of_output_dir(tmp_path, name, cli):
    out = tmp_path / "deep" / "run"
    sets = [f"datasets=[{SHARED_DATA / 'alpaca_en_demo.json'}]", f"output_dir={out}",
            f"stages=[{json.dumps({'name': name, 'epochs': 1})}]"]
    with pytest.raises(SftlabError, match=r"stages\[1\]\.name .* is not a plain folder name"):
        load_config(None, sets)
    r = cli("train", *[a for s in sets for a in ("--set", s)])
    assert r.returncode == 2 and "is not a plain folder name" in _one_line(r.stderr), r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written, not even output_dir


def test_a_model_without_weights_is_one_sentence_for_every_command(tmp_path, cli):
    gguf = _vocab_only_gguf(tmp_path / "vocab.gguf")
    data = _lines(tmp_path / "d.jsonl", json.dumps(ALPACA))
    want = f"{gguf}: holds a vocabulary only, no weights"
    for args in (["chat", "--model", gguf, "--prompt", "hi"],
                 ["eval", "--model", gguf, "--data", data, "--out", tmp_path / "ev"],
                 ["serve", "--model", gguf, "--port", "1"],
                 ["merge", "--model", gguf, "--out", tmp_path / "merged"],
                 ["train", "--set", f"model={gguf}", "--set", f"datasets=[{data}]", "--set", f"output_dir={tmp_path / 'r'}"]):
        r = cli(*args)
        assert r.returncode == 2 and want in _one_line(r.stderr), (args[0], r.stderr[-1500:])
    assert not (tmp_path / "merged").exists() and not (tmp_path / "r" / "config.yaml").exists()


def test_a_config_key_given_twice_is_refused(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text(f"datasets: [{SHARED_DATA / 'alpaca_en_demo.json'}]\nlearning_rate: 1e-5\nepochs: 1\n"
                 "learning_rate: 3e-4\n")
    with pytest.raises(SftlabError, match=f"^{f}: invalid YAML on line 4 \\(the key 'learning_rate' is given more "
                                          "than once\\)$"):
        load_config(f)
    f.write_text(f"datasets: [{{path: {SHARED_DATA / 'alpaca_en_demo.json'}, weight: 1, weight: 2}}]\n")
    with pytest.raises(SftlabError, match="the key 'weight' is given more than once"):
        load_config(f)
    with pytest.raises(SftlabError, match="the key 'a' is given more than once"):
        load_config(None, ["distributed={a: 1, a: 2}"])
    # A merge key (`<<: *base`) is YAML's way to override on purpose, and stays allowed.
    from sftlab.config import parse_yaml

    assert parse_yaml("a: &x {k: 1, j: 2}\nb: {<<: *x, k: 3}\n") == {"a": {"k": 1, "j": 2}, "b": {"k": 3, "j": 2}}


@pytest.mark.parametrize("value, sentence", [
    ("0", "`max_steps` must be at least 1, or -1 to train by epochs (got 0)"),
    ("-5", "`max_steps` must be at least 1, or -1 to train by epochs (got -5)"),
])
def test_max_steps_is_positive_or_minus_one(value, sentence):
    base = [f"datasets=[{SHARED_DATA / 'alpaca_en_demo.json'}]"]
    with pytest.raises(SftlabError, match=f"^--set: {re.escape(sentence)}$"):
        load_config(None, [*base, f"max_steps={value}"])
    assert load_config(None, [*base, "max_steps=-1"]).max_steps == -1
    assert load_config(None, [*base, "max_steps=3"]).max_steps == 3


@pytest.mark.parametrize("reply, score", [("-5", None), ("Score: -5", None), ("−5", None), ("85", 85), ("85.", 85),
                                          ("7.5", None), ("100", 100), ("101", None), ("0", 0)])
def test_a_negative_judge_reply_is_no_score(reply, score):
    from sftlab.evaluation.judge import parse_score

    assert parse_score(reply) == score


def test_judge_retries_cannot_be_negative(tmp_path, cli):
    from sftlab.evaluation.judge import Judge

    with pytest.raises(SftlabError, match=r"^--judge-retries must be at least 0 \(got -1\)$"):
        Judge("http://127.0.0.1:9/v1", "m", retries=-1)
    r = cli("eval", "--model", "m", "--data", "d.json", "--out", tmp_path / "o", "--judge-url", "http://x/v1",
            "--judge-model", "j", "--judge-retries", "-1")
    assert r.returncode == 2 and "--judge-retries" in r.stderr and "must be at least 0 (got -1)" in _one_line(r.stderr)


def test_a_template_without_the_generation_prompt_is_refused(tmp_path):
    from conftest import tokenizer
    from sftlab.data.templates import resolve_template

    no_prompt = tmp_path / "t.jinja"
    no_prompt.write_text("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}")
    with pytest.raises(SftlabError, match=re.escape(
            f"chat template '{no_prompt}' writes '<|im_start|>assistant' before an answer but not for "
            "add_generation_prompt")):
        resolve_template(str(no_prompt), tokenizer("qwen2"))
    empty = tmp_path / "e.jinja"
    empty.write_text("")
    with pytest.raises(SftlabError, match=f"^chat template '{re.escape(str(empty))}' renders nothing"):
        resolve_template(str(empty), tokenizer("qwen2"))
    no_answer = tmp_path / "n.jinja"
    no_answer.write_text("{% for m in messages %}{{ m.role }}: ...\n{% endfor %}")
    with pytest.raises(SftlabError, match="does not write the assistant's answer"):
        resolve_template(str(no_answer), tokenizer("qwen2"))


@pytest.mark.parametrize("tools, field", [({"type": "function"}, "tools"), ([{"type": "function"}], "tools[0]"),
                                           (["get_weather"], "tools[0]"), ([{"name": ""}], "tools[0]")])
def test_tools_must_be_a_list_of_named_function_schemas(tmp_path, tools, field):
    row = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "tools": tools}
    f = _lines(tmp_path / "d.jsonl", json.dumps(row))
    with pytest.raises(SftlabError, match=f"d.jsonl, row 1, field '{re.escape(field)}': must be"):
        load_conversations(f)
    good = {**row, "tools": [{"name": "get_weather", "parameters": {"type": "object"}}]}
    f = _lines(tmp_path / "g.jsonl", json.dumps(good))
    assert load_conversations(f).conversations[0].tools == [{"type": "function", "function": good["tools"][0]}]


# --- tracebacks -------------------------------------------------------------------------------------------

def test_the_rejects_file_takes_a_row_with_a_lone_surrogate(tmp_path, cli):
    f = _lines(tmp_path / "d.jsonl", json.dumps(ALPACA), b'{"instruction": "q\\ud800", "input": "", "output": "a"}')
    rejects = tmp_path / "rej.jsonl"
    r = cli("inspect", "--model", QWEN, "--template", "chatml", "--data", f, "--on-error", "skip", "--rejects", rejects)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    (line,) = rejects.read_text(encoding="utf-8").splitlines()
    assert "\\ud800" in line
    assert json.loads(line)["record"]["instruction"] == "q\ud800"  # the row, as it was, reads back


def test_html_into_a_missing_folder_or_onto_a_folder(tmp_path, cli):
    f = _lines(tmp_path / "d.jsonl", json.dumps(ALPACA))
    deep = tmp_path / "new" / "folder" / "view.html"
    r = cli("inspect", "--model", QWEN, "--template", "chatml", "--data", f, "--html", deep)
    assert r.returncode == 0 and deep.read_text(encoding="utf-8").startswith("<!doctype html>"), r.stderr[-2000:]
    for args in (["inspect", "--model", QWEN, "--template", "chatml", "--data", f, "--html", tmp_path],
                 ["data", "check", f, "--model", QWEN, "--template", "chatml", "--no-clusters", "--html", tmp_path]):
        r = cli(*args)
        assert r.returncode == 2 and f"{tmp_path} is a folder; give a file name" in _one_line(r.stderr), r.stderr
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = cli("inspect", "--model", QWEN, "--template", "chatml", "--data", f, "--html", blocker / "v.html")
    assert r.returncode == 2 and f"{blocker} is a file, not a folder" in _one_line(r.stderr), r.stderr


def test_a_template_file_that_is_not_utf8(tmp_path, cli):
    t = tmp_path / "t.jinja"
    t.write_bytes(b"{{ bos_token }}\n\xff\xfe")
    f = _lines(tmp_path / "d.jsonl", json.dumps(ALPACA))
    r = cli("inspect", "--model", QWEN, "--template", t, "--data", f)
    assert r.returncode == 2 and f"{t}: template file is not valid UTF-8 (byte 16, line 2)" in _one_line(r.stderr)


def test_a_config_key_that_is_not_a_string(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text(f"datasets: [{SHARED_DATA / 'alpaca_en_demo.json'}]\n1: 2\n")
    with pytest.raises(SftlabError, match=f"^{f}: invalid YAML on line 2 \\(the key 1 is not a string"):
        load_config(f)


def test_a_folder_with_a_tokenizer_but_no_config_is_not_a_model(tmp_path, cli):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "tokenizer.json").write_text('{"stub": true}')
    r = cli("chat", "--model", folder, "--prompt", "hi")
    assert r.returncode == 2 and f"{folder}: not a model folder (it has no config.json)" in _one_line(r.stderr), r.stderr
    r = cli("inspect", "--model", folder, "--data", _lines(tmp_path / "d.jsonl", json.dumps(ALPACA)))
    assert r.returncode == 2 and f"{folder}: cannot load a tokenizer" in _one_line(r.stderr), r.stderr[-2000:]


def test_a_truncated_weight_file_is_said_before_loading(tiny_chat_model, tmp_path, cli):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_chat_model, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    want = f"{broken}: model.safetensors is truncated"
    r = cli("chat", "--model", broken, "--prompt", "hi")
    assert r.returncode == 2 and want in _one_line(r.stderr), r.stderr[-2000:]
    r = cli("train", "--set", f"model={broken}", "--set", f"datasets=[{SHARED_DATA / 'alpaca_en_demo.json'}]",
            "--set", f"output_dir={tmp_path / 'run'}", "--set", "limit=4")
    assert r.returncode == 2 and want in _one_line(r.stderr), r.stderr[-2000:]
    weights.unlink()
    r = cli("chat", "--model", broken, "--prompt", "hi")
    assert r.returncode == 2 and f"{broken}: the folder has no weights" in _one_line(r.stderr), r.stderr[-2000:]


def test_eval_options_and_out_checked_before_any_work(tmp_path, cli):
    data = _lines(tmp_path / "d.jsonl", json.dumps(ALPACA))
    taken = tmp_path / "taken"
    taken.write_text("x")
    r = cli("eval", "--model", "m", "--data", data, "--out", taken)
    assert r.returncode == 2 and f"--out {taken}: a file of that name exists" in _one_line(r.stderr), r.stderr
    for option, value, want in (("--batch-size", "0", "must be at least 1 (got 0)"),
                                ("--max-new-tokens", "-3", "must be at least 1 (got -3)")):
        r = cli("eval", "--model", "m", "--data", data, "--out", tmp_path / "o", option, value)
        assert r.returncode == 2 and option in r.stderr and want in _one_line(r.stderr), r.stderr
    assert taken.read_text() == "x" and not (tmp_path / "o").exists()


# --- hangs ------------------------------------------------------------------------------------------------

def test_a_fifo_as_data_is_refused_not_read(tmp_path):
    fifo = tmp_path / "d.jsonl"
    os.mkfifo(fifo)
    r = _cli("inspect", "--model", QWEN, "--template", "chatml", "--data", str(fifo), timeout=60)
    assert r.returncode == 2 and f"{fifo}: data file is a FIFO (named pipe), not a regular file" in _one_line(r.stderr)
    with pytest.raises(SftlabError, match="datasets file .* is a FIFO"):
        load_config(None, [f"datasets=[{fifo}]"])


def test_a_yaml_alias_bomb_anywhere_fails_fast(tmp_path):
    lol = "\n".join([f'l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]'] + [
        f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)])
    f = tmp_path / "c.yaml"
    f.write_text(f"x-anchors:\n" + "\n".join("  " + line for line in lol.splitlines()) +
                 f"\ndatasets: [{SHARED_DATA / 'alpaca_en_demo.json'}]\nstages:\n  - name: a\n    clean: *l8\n")
    started = time.perf_counter()
    with pytest.raises(SftlabError, match="aliases expand to more than 100,000 values"):
        load_config(f)
    assert time.perf_counter() - started < 5


@pytest.mark.parametrize("value, want", [("-1", "must be between 0 and 2 (got -1.0)"),
                                         ("nan", "must be a finite number (between 0 and 2) (got nan)")])
def test_chat_temperature_is_checked_before_loading(value, want, cli):
    r = cli("chat", "--model", "nowhere", "--temperature", value, "--prompt", "hi")
    assert r.returncode == 2 and "--temperature" in r.stderr and want in _one_line(r.stderr), r.stderr


# --- misleading -------------------------------------------------------------------------------------------

def test_chat_max_new_tokens_must_be_positive(cli):
    from sftlab.chat import ChatSession

    r = cli("chat", "--model", "nowhere", "--max-new-tokens", "-1", "--prompt", "hi")
    assert r.returncode == 2 and "--max-new-tokens" in r.stderr and "must be at least 1 (got -1)" in _one_line(r.stderr)
    with pytest.raises(SftlabError, match=r"^max_new_tokens must be at least 1 \(got 0\)$"):
        ChatSession(generator=None, max_new_tokens=0)  # type: ignore[arg-type]


def test_no_example_left_names_the_first_lost_row(tmp_path, tiny_model):
    from sftlab.training import train

    row = {"messages": [{"role": "assistant", "content": "hello"}, {"role": "user", "content": "hi"},
                        {"role": "assistant", "content": "a"}]}
    f = _lines(tmp_path / "d.jsonl", "", json.dumps(row))
    config = load_config(None, [f"model={tiny_model}", "template=llama2", f"datasets=[{f}]",
                                f"output_dir={tmp_path / 'run'}", "precision=fp32"])
    with pytest.raises(SftlabError, match=f"no example left to train on out of 1 rows .*; the first is {f}, row 2\\)$"):
        train(config, quiet=True)


def test_an_adapter_whose_base_is_gone_names_the_base(tmp_path, cli):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "base_model_name_or_path": str(tmp_path / "gone")}))
    (adapter / "adapter_model.safetensors").write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
    r = cli("chat", "--model", adapter, "--prompt", "hi")
    assert r.returncode == 2 and f"its base model {tmp_path / 'gone'} (adapter_config.json, base_model_name_or_path) " \
                                 f"cannot be used" in _one_line(r.stderr), r.stderr


def test_a_symlink_loop_is_called_one(tmp_path, cli):
    loop = tmp_path / "loop.jsonl"
    loop.symlink_to(loop)
    r = cli("inspect", "--model", QWEN, "--template", "chatml", "--data", loop)
    assert r.returncode == 2 and f"{loop}: data file is a symlink loop" in _one_line(r.stderr), r.stderr
    dangling = tmp_path / "dangling.jsonl"
    dangling.symlink_to(tmp_path / "moved.jsonl")
    r = cli("inspect", "--model", QWEN, "--template", "chatml", "--data", dangling)
    assert r.returncode == 2 and "data file is a broken symlink" in _one_line(r.stderr), r.stderr


def test_jsonl_rows_are_numbered_by_line(tmp_path):
    f = _lines(tmp_path / "d.jsonl", json.dumps(ALPACA), "", "   ", "", json.dumps({"instruction": "q"}))
    with pytest.raises(SftlabError, match=r"d.jsonl, row 5, field 'output': missing field"):
        load_conversations(f)
    loaded = load_conversations(f, on_error="skip")
    assert loaded.rows == 2 and [c.row for c in loaded.conversations] == [1] and [r.row for r in loaded.rejects] == [5]


def test_cr_only_line_endings_are_lines(tmp_path):
    f = tmp_path / "mac.jsonl"
    f.write_bytes(b"\r".join(json.dumps({**ALPACA, "output": f"a{i}"}).encode() for i in range(3)) + b"\r")
    loaded = load_conversations(f)
    assert [c.messages[-1].content for c in loaded.conversations] == ["a0", "a1", "a2"]
    assert [c.row for c in loaded.conversations] == [1, 2, 3]


def test_a_chat_prompt_longer_than_the_context_is_refused(tiny_chat_model, cli):
    r = cli("chat", "--model", tiny_chat_model, "--prompt", "word " * 1100, "--max-new-tokens", "8", "--precision", "fp32")
    assert r.returncode == 2, r.stderr[-2000:]
    assert re.search(r"this model's maximum context length is 1024 tokens; the messages have \d+ and --max-new-tokens "
                     r"asks for 8 more", _one_line(r.stderr)), r.stderr


def test_copying_the_input_with_the_change_asked_for_is_not_a_copy():
    from sftlab.quality.text import copies_prompt

    assert copies_prompt("Capitalize each word", "i love watching the sunrise", "I Love Watching The Sunrise") is None
    assert copies_prompt("Capitalize each word", "i love watching the sunrise",
                         "i love watching  the sunrise.") == "answer is the input unchanged"
    assert copies_prompt("Translate to French", "", "Translate to French") == "answer is the instruction"


# --- the classes, closed at one place each -----------------------------------------------------------------

def test_every_numeric_option_and_config_value_has_its_bounds_declared():
    import typer

    from sftlab.cli import app, bounded
    from sftlab.config import DatasetSpec, TrainConfig, bound
    from sftlab.config.bounds import field_limit

    def commands(group):
        for cmd in group.commands.values():
            yield from commands(cmd) if hasattr(cmd, "commands") else [cmd]

    def numeric(annotation):
        return any(t in str(annotation) for t in ("int", "float")) and "bool" not in str(annotation)

    def has_bound(name):
        try:
            return bound(name) is not None
        except KeyError:
            return False

    options = [p for cmd in commands(typer.main.get_command(app)) for p in cmd.params
               if numeric(p.type_descriptor.annotation)]
    assert len(options) >= 18
    assert [p.name for p in options if not has_bound(p.name)] == []
    assert [p.name for p in options if p.type_descriptor.parameter_info.callback is not bounded] == []
    fields = [(name, f) for model in (TrainConfig, DatasetSpec) for name, f in model.model_fields.items()
              if numeric(f.annotation) and name != "seed"]
    assert len(fields) >= 25 and [name for name, f in fields if field_limit(f) is None] == []


@pytest.mark.parametrize("args", [
    ["inspect", "--data", "d.jsonl", "--max-length", "0"], ["inspect", "--data", "d.jsonl", "--limit", "0"],
    ["data", "check", "d.jsonl", "--near-duplicate-threshold", "1.5"], ["data", "check", "d.jsonl", "--n-clusters", "0"],
    ["data", "check", "d.jsonl", "--cluster-sample", "-1"], ["serve", "--port", "70000"], ["train", "--nproc", "0"],
    ["eval", "--model", "m", "--data", "d", "--out", "o", "--judge-timeout", "0"],
    ["eval", "--model", "m", "--data", "d", "--out", "o", "--judge-concurrency", "0"],
])
def test_out_of_bounds_options_are_refused_before_any_work(cli, args):
    r = cli(*args)
    assert r.returncode == 2 and "Invalid value for" in r.stderr and "must be" in r.stderr, r.stderr


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
