"""The command line as a user runs it: `sftlab inspect` end to end, config and data mistakes, start-up, logging,
--nproc, chat (the data pipeline's own tests: test_pipeline.py)."""

from __future__ import annotations

import pytest

import json
import subprocess
import sys
from pathlib import Path

from helpers import FIXTURES, SHARED_DATA, tokenizer
import os
import signal
import time

QWEN = str(FIXTURES / "tokenizers" / "qwen2")


def run(*args):
    return subprocess.run([sys.executable, "-m", "sftlab", *args], capture_output=True, text=True, timeout=300)


def test_inspect_json_one_object_per_example_in_input_order(tmp_path, cli):
    data = tmp_path / "d.jsonl"
    data.write_text(
        '{"instruction": "你好", "input": "", "output": "世界"}\n'
        '{"instruction": "1+1", "input": "", "output": "2"}\n'
    )
    r = cli("inspect", "--model", QWEN, "--data", str(data), "--template", "chatml", "--json")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    # <|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n世界<|im_end|>\n
    assert first["input_ids"] == [151644, 872, 198, 108386, 151645, 198, 151644, 77091, 198, 99489, 151645, 198]
    assert first["labels"] == [-100] * 9 + [99489, 151645, -100]
    assert json.loads(lines[1])["row"] == 2


def test_inspect_html_is_self_contained(tmp_path, cli):
    out = tmp_path / "view.html"
    r = cli("inspect", "--model", QWEN, "--data", str(SHARED_DATA / "alpaca_zh_demo.json"), "--limit", "2", "--html", str(out))
    assert r.returncode == 0, r.stderr
    page = out.read_text()
    assert page.startswith("<!doctype html>") and "<span class='t" in page
    assert "http://" not in page and "https://" not in page and "<script src" not in page


def test_inspect_terminal_view_and_counts(cli):
    r = cli("inspect", "--model", QWEN, "--data", str(SHARED_DATA / "identity.json"), "--limit", "1")
    assert r.returncode == 0, r.stderr
    assert "<|im_start|>assistant" in r.stdout
    assert "examples: 1" in r.stderr


def test_inspect_lists_dropped_rows(tmp_path, cli):
    """A dropped row is listed on stderr (the --escape-special-tokens option once shadowed the markup escaper)."""
    data = tmp_path / "[bold]d.jsonl"  # (markup in the path is printed as it is)
    data.write_text('{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}\n'
                    '{"messages": [{"role": "user", "content": "[b]q"}, {"role": "assistant", "content": ""}]}\n')
    r = cli("inspect", "--model", QWEN, "--data", str(data), "--template", "chatml")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert f"dropped {data}, row 2: no trained tokens (no non-empty assistant answer to train)" in r.stderr


def test_inspect_refuses_template_kwargs_the_template_never_reads(tmp_path, cli):
    """`{"none": 1}` once made every row fail "can't assign to 'const'" without naming the option."""
    data = tmp_path / "d.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}\n')
    r = cli("inspect", "--model", QWEN, "--data", str(data), "--template", "chatml", "--template-kwargs", '{"none": 1}')
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr == ("error: template_kwargs (--template-kwargs): chat template 'chatml' never reads 'none', so it "
                        "would change nothing; it reads no options\n")


def test_inspect_template_kwargs_nested_too_deep_is_one_sentence(tmp_path, cli):
    data = tmp_path / "d.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}\n')
    for levels in (500, 5000):  # (tracebacks before: Python's JSON reader, then the Jinja literal, recurse per level)
        r = cli("inspect", "--model", QWEN, "--data", str(data), "--template", "chatml",
                "--template-kwargs", '{"enable_thinking": ' + "[" * levels + "]" * levels + "}")
        assert r.returncode == 2 and "Traceback" not in r.stderr
        assert r.stderr == ("error: --template-kwargs is nested more than 64 levels deep (sftlab reads JSON up to 64 "
                            "levels)\n")


def test_bad_input_is_one_sentence_and_nonzero_exit(tmp_path, cli):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "q"}, {"role": "bot", "content": "a"}]}\n')
    r = cli("inspect", "--model", QWEN, "--data", str(bad))
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert f"{bad}, row 1, field 'messages[1].role': unknown role 'bot'" in " ".join(r.stderr.split())


def test_a_sentence_with_a_long_path_is_one_line_when_piped(tmp_path, cli):
    """Piped or in a log file, the error sentence is not cut at 80 columns: its path stays whole, to copy."""
    folder = tmp_path / ("a-long-folder-name-" * 6)
    folder.mkdir()
    bad = folder / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "q"}, {"role": "bot", "content": "a"}]}\n')
    r = cli("inspect", "--model", QWEN, "--data", str(bad))
    assert r.returncode == 2
    assert r.stderr == (f"error: {bad}, row 1, field 'messages[1].role': unknown role 'bot'; expected one of system, "
                        "user, assistant, tool\n")


def test_gpt2_without_template_lists_the_choices(tmp_path, cli):
    r = cli("inspect", "--model", str(FIXTURES / "tokenizers" / "gpt2"), "--data", str(SHARED_DATA / "identity.json"))
    assert r.returncode == 2
    assert "no chat template" in r.stderr and "alpaca" in r.stderr and "Traceback" not in r.stderr


def test_train_config_mistakes_are_one_sentence_and_exit_2(tmp_path, cli):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"datasets: [{SHARED_DATA / 'identity.json'}]\nlearning_rat: 1e-4\n")
    r = cli("train", str(cfg))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "unknown key `learning_rat` (did you mean `learning_rate`?)" in " ".join(r.stderr.split())
    r = cli("train", "--set", "datasets=[nowhere.json]")
    assert r.returncode == 2 and "datasets file nowhere.json not found" in " ".join(r.stderr.split())


def test_train_bad_data_row_is_one_sentence(tmp_path, tiny_model, cli):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": 3}]}\n')
    r = cli("train", "--set", f"model={tiny_model}", "--set", f"datasets=[{bad}]", "--set", "template=llama2",
            "--set", f"output_dir={tmp_path / 'out'}")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"{bad}, row 1" in " ".join(r.stderr.split()) and "content" in r.stderr


@pytest.mark.slow
def test_identity_recipe_before_make_demo_says_to_run_it_first(tmp_path):
    import shutil

    shutil.copy(Path(__file__).parents[1] / "examples" / "identity.yaml", tmp_path / "identity.yaml")
    r = subprocess.run([sys.executable, "-m", "sftlab", "train", "identity.yaml"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "datasets file runs/demo/identity_filled.json not found (`make demo` writes it: run that first)" in " ".join(
        r.stderr.split())


@pytest.mark.slow
def test_inspect_limit_says_how_many_rows_it_shows(tmp_path):
    r = subprocess.run([sys.executable, "-m", "sftlab", "inspect", "--data", str(SHARED_DATA / "alpaca_zh_demo.json"),
                        "--model", str(Path(__file__).parent / "fixtures" / "tokenizers" / "qwen2"),
                        "--template", "chatml", "--limit", "3", "--json"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "rows: 3 (--limit) of 1000" in " ".join(r.stderr.split())


# --- the template's default system prompt: said, replaced, removed ------------------------------------------------


def _inspect_one(tmp_path, cli, *options):
    data = tmp_path / "d.json"
    data.write_text('[{"instruction": "hi", "input": "", "output": "hello"}]')
    r = cli("inspect", "--model", QWEN, "--data", str(data), "--json", *options)
    assert r.returncode == 0, r.stderr
    example = json.loads(r.stdout)
    tok = tokenizer("qwen2")
    trained = [t for t in example["labels"] if t != -100]
    return tok.decode(example["input_ids"]), tok.decode(trained), " ".join(r.stderr.split())


def test_inspect_says_the_templates_default_system_prompt(tmp_path, cli):
    text, trained, said = _inspect_one(tmp_path, cli)
    assert text == ("<|im_start|>system\nYou are a helpful assistant<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
                    "<|im_start|>assistant\nhello<|im_end|>\n")
    assert trained == "hello<|im_end|>"
    assert ("1 of 1 conversations have no system message; the tokenizer's own template gives them its default system "
            "prompt \"You are a helpful assistant\" (default_system / --default-system replaces it, \"\" removes it)") in said


def test_default_system_option_replaces_or_removes_it(tmp_path, cli):
    text, trained, said = _inspect_one(tmp_path, cli, "--default-system", "You are Lumi.")
    assert text == ("<|im_start|>system\nYou are Lumi.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
                    "<|im_start|>assistant\nhello<|im_end|>\n")
    assert trained == "hello<|im_end|>"
    assert ("default_system gives them the system prompt \"You are Lumi.\" instead of the template's \"You are a "
            "helpful assistant\"") in said
    text, _, said = _inspect_one(tmp_path, cli, "--default-system", "")
    assert text == "<|im_start|>system\n<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nhello<|im_end|>\n"
    assert "default_system \"\" gives them an empty system message instead of the template's" in said


# --- start-up, logging, --nproc, chat -----------------------------------------------------------------------------


def test_the_command_line_reads_its_arguments_before_importing_heavy_libraries():
    """`sftlab --help` (and every command's) must not wait for torch or transformers (seconds on a busy machine)."""
    code = (
        "import sys\n"
        "import sftlab.cli\n"
        "heavy = ('torch', 'transformers', 'datasets', 'pydantic')\n"
        "print([m for m in heavy if m in sys.modules])\n"
        "for args in (['--help'], ['train', '--help'], ['data', 'check', '--help'], ['eval', '--help']):\n"
        "    sys.argv = ['sftlab', *args]\n"
        "    try:\n"
        "        sftlab.cli.main()\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print([m for m in heavy[:2] if m in sys.modules])\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == "[]"  # importing the command line
    assert r.stdout.splitlines()[-1] == "[]"  # and showing the help of four commands


def test_piped_help_names_every_option_whole():
    """Piped (a file, `| less`), rich lays help out for 80 columns and cut `--judge-concurrency` to
    `--judge-concurren…`; sftlab widens it to 120 unless TERMINAL_WIDTH says otherwise."""
    env = {k: v for k, v in os.environ.items() if k not in ("TERMINAL_WIDTH", "COLUMNS")}
    r = subprocess.run([sys.executable, "-m", "sftlab", "eval", "--help"], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    for option in ("--judge-concurrency", "--escape-special-tokens", "--no-escape-special-tokens", "--template-kwargs"):
        assert option in r.stdout


def test_only_the_first_process_logs_under_torchrun(monkeypatch):
    import logging

    from sftlab.cli import setup_logging

    monkeypatch.setenv("RANK", "1")
    setup_logging()
    assert logging.getLogger("sftlab").level == logging.ERROR
    monkeypatch.setenv("RANK", "0")
    setup_logging()
    assert logging.getLogger("sftlab").level == logging.INFO


def test_torchrun_gets_omp_num_threads_so_it_prints_no_banner(monkeypatch):
    import os

    from sftlab.training.distributed import torchrun_env

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert torchrun_env(2, {"PATH": "/bin"}) == {"PATH": "/bin", "OMP_NUM_THREADS": "4"}
    assert torchrun_env(16, {})["OMP_NUM_THREADS"] == "1"
    assert torchrun_env(2, {"OMP_NUM_THREADS": "3"}) == {"OMP_NUM_THREADS": "3"}  # the user's own stays


def test_chat_reset_says_so(cli, monkeypatch):
    import io

    import sftlab.inference.chat

    class Session:
        history = ["an earlier turn"]

        def reply(self, text):
            from sftlab.inference.replies import Piece

            yield Piece("content", f"echo {text}")

    session = Session()
    monkeypatch.setattr(sftlab.inference.chat, "open_session", lambda *a, **k: session)
    monkeypatch.setattr(sys, "stdin", io.StringIO("/reset\nhi\n/exit\n"))
    r = cli("chat")
    assert r.returncode == 0, r.stderr
    assert "(conversation cleared: the next message starts a new one)" in r.stdout
    assert "echo hi" in r.stdout and session.history == []
    assert "loading smollm2-135m-instruct …" in r.stderr  # said before a load that may take minutes


# ---- hostile and odd input (issue 25's rounds) ----

@pytest.mark.slow
def test_ctrl_c_exits_130_with_a_message(tiny_chat_model):
    proc = subprocess.Popen([sys.executable, "-m", "sftlab", "chat", "--model", str(tiny_chat_model)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Ctrl-C at the prompt: wait until it is shown (a fixed sleep lost the race on a loaded machine).
    import select

    seen, deadline = "", time.time() + 180
    while "you>" not in seen and time.time() < deadline and proc.poll() is None:
        if select.select([proc.stdout], [], [], 1)[0]:
            seen += os.read(proc.stdout.fileno(), 4096).decode(errors="replace")
    assert "you>" in seen, seen
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "aborted" in err and "Traceback" not in err


def test_version_flag(cli):
    r = cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == "sftlab 0.1.0"


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


@pytest.mark.parametrize("role", ["[/]", "[bold]bot", "[red]x[/red]"])
def test_an_error_sentence_holding_markup_is_printed_as_it_is(tmp_path, cli, role):
    """The sentence quotes the data (a role, a file name): rich would read `[/]` as markup and fail, or drop
    `[bold]` from what it quotes."""
    f = tmp_path / "d.jsonl"
    f.write_text(json.dumps({"messages": [{"role": role, "content": "q"}, {"role": "assistant", "content": "a"}]}) + "\n")
    r = cli("inspect", "--model", QWEN, "--template", "chatml", "--data", f)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert (f"error: {f}, row 1, field 'messages[0].role': unknown role '{role}'; expected one of system, user, "
            "assistant, tool") == " ".join(r.stderr.split())


def test_max_length_is_one_option_of_the_data_commands_each_with_its_default():
    """inspect, data check, data clean and eval share one --max-length (the config key's help and bound); eval's
    default is the inference family's 2048. data check and clean share --near-duplicate-threshold (0.8)."""
    import typer.main

    from sftlab.cli import app

    root = typer.main.get_command(app)
    commands = {"inspect": root.commands["inspect"], "eval": root.commands["eval"],
                "data check": root.commands["data"].commands["check"],
                "data clean": root.commands["data"].commands["clean"]}
    options = {name: {p.name: p for p in c.params} for name, c in commands.items()}
    assert {name: o["max_length"].default for name, o in options.items()} == {
        "inspect": 1024, "eval": 2048, "data check": 1024, "data clean": 1024}
    assert {o["max_length"].help for o in options.values()} == {
        "Examples are truncated to this many tokens (keeping the start); one that loses its whole answer is dropped "
        "and reported. (`data check` and `data clean`: a row longer than this is too_long.)"}
    assert [options[n]["threshold"].default for n in ("data check", "data clean")] == [0.8, 0.8]


@pytest.mark.parametrize("args", [
    ["inspect", "--data", "d.jsonl"], ["eval", "--model", "m", "--data", "d", "--out", "o"],
    ["data", "check", "d.jsonl"], ["data", "clean", "d.jsonl", "--out", "a", "--rejects", "b"],
])
def test_max_length_one_is_refused_by_every_data_command_with_the_configs_bound(cli, args):
    r = cli(*args, "--max-length", "1")
    assert r.returncode == 2 and "Invalid value for '--max-length': must be at least 2 (got 1)" in r.stderr, r.stderr


def test_a_data_option_the_settings_refuse_is_one_sentence(cli, tmp_path):
    """The options become one DataSettings, checked as a config's keys are: a wrong --train-on is a sentence
    naming the option (it was a pydantic traceback), before any tokenizer loads."""
    f = tmp_path / "d.jsonl"
    f.write_text(json.dumps({"prompt": "q", "completion": "a"}) + "\n")
    r = cli("inspect", "--data", f, "--model", tmp_path / "no-model", "--train-on", "bogus")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert " ".join(r.stderr.split()) == ("error: --train-on: `train_on` input should be 'all_assistant', "
                                          "'last_assistant' or 'all' (got 'bogus')")


@pytest.mark.parametrize("args, said", [
    (["inspect", "--data", "d.jsonl", "--max-length", "64", "--max-length=128"], "--max-length is given twice"),
    (["inspect", "--data", "d.jsonl", "--escape-special-tokens", "--no-escape-special-tokens"],
     "--escape-special-tokens and --no-escape-special-tokens are both given; give one of them"),
    (["chat", "--model", "a", "--model", "b"], "--model is given twice"),
    (["train", "c.yaml", "--nproc", "1", "--nproc", "2"], "--nproc is given twice"),
    (["merge", "--model", "m", "--out", "a", "--out", "b"], "--out is given twice"),
    (["export", "--out", "a", "--quant", "q8_0", "--quant", "f16"], "--quant is given twice"),
    (["serve", "--port", "8000", "--port", "8001"], "--port is given twice"),
    (["eval", "--model", "m", "--data", "d", "--data", "e", "--out", "o"], "--data is given twice"),
    (["data", "check", "d.jsonl", "--model", "a", "--model", "b"], "--model is given twice"),
    (["data", "clean", "d.jsonl", "--out", "a", "--out", "b"], "--out is given twice"),
    (["runs", "--json", "--json"], "--json is given twice"),
])
def test_an_option_that_takes_one_value_refuses_a_second(cli, args, said):
    """click keeps the last of a repeated option without a word; here it is one sentence before any work."""
    r = cli(*args)
    assert r.returncode == 2 and f"error: {said}" in r.stderr, r.stderr[-1500:]


def test_repeatable_options_take_every_value(tmp_path, cli):
    """`inspect --data` takes several files, as `data check` does: their examples one after the other, in order;
    a value that looks like an option's name is a value (`--prompt --model`)."""
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text('{"instruction": "你好", "input": "", "output": "世界"}\n')
    b.write_text('{"instruction": "1+1", "input": "", "output": "2"}\n')
    r = cli("inspect", "--model", QWEN, "--template", "chatml", "--json", "--data", a, "--data", b)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    # <|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n世界<|im_end|>\n, then 1+1 → 2
    assert rows[0]["input_ids"] == [151644, 872, 198, 108386, 151645, 198, 151644, 77091, 198, 99489, 151645, 198]
    assert [(row["source"], row["row"]) for row in rows] == [(str(a), 1), (str(b), 1)]
    r = cli("chat", "--model", tmp_path / "nowhere", "--prompt", "--model")
    assert "given twice" not in r.stderr


def test_an_exceptions_first_line_is_kept_to_a_sentences_length():
    from sftlab.errors import first_line

    assert first_line(ValueError("bad value " + "v" * 100_000 + "\nmore")) == (
        "bad value " + "v" * 490 + "…(100010 characters)")
    assert first_line(KeyError("k"), with_type=True) == "KeyError: 'k'"


def test_train_refuses_a_key_of_another_method_in_one_sentence(cli, tmp_path):
    r = cli("train", "--set", f"datasets=[{SHARED_DATA / 'identity.json'}]", "--set", "method=qlora",
            "--set", "hybrid_full_fraction=0.5", "--set", f"output_dir={tmp_path / 'run'}")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == "error: --set: `hybrid_full_fraction` is for method hybrid; method qlora does not use it"
    assert not (tmp_path / "run").exists()
