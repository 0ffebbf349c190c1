"""The fixtures every test file may use (pytest finds them here); the helpers they are made from, and that test
files import, are in helpers.py."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import HOLDER, make_tiny_model, tokenizer


def pytest_collection_modifyitems(config, items):
    """Tests marked `cuda` run only where torch sees a CUDA GPU (benchmarks/gpu_check.py runs them there)."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def sftlab_home(tmp_path_factory):
    """Every test runs with a fresh SFTLAB_HOME (sftlab's cache: the converted default model, tokenizers,
    encoded examples, the precision measurement), never the user's; subprocesses inherit it."""
    home = tmp_path_factory.mktemp("sftlab_home")
    old = os.environ.get("SFTLAB_HOME")
    os.environ["SFTLAB_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("SFTLAB_HOME", None)
    else:
        os.environ["SFTLAB_HOME"] = old


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(capsys, monkeypatch):
    """`sftlab ARGS` in this process, as the console script runs it (sftlab.cli.main: one-sentence errors and
    exit codes), stdout and stderr captured: the command line's behaviour without a Python start-up per call."""
    from sftlab.cli import main

    def run(*args) -> CliResult:
        monkeypatch.setattr(sys, "argv", ["sftlab", *map(str, args)])
        capsys.readouterr()
        try:
            main()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else int(e.code is not None)
        out = capsys.readouterr()
        return CliResult(code, out.out, out.err)

    return run


@pytest.fixture
def tok():
    return tokenizer


@pytest.fixture
def hold_lock():
    """hold_lock(folder, *args): a process holding `folder`'s run lock as training does (tests/lock_holder.py),
    returned once it holds it; every one still alive is killed at the end of the test."""
    import subprocess

    started: list[subprocess.Popen] = []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}

    def start(folder: Path, *args: str, script: str | None = None) -> subprocess.Popen:
        command = [sys.executable, "-c", script] if script else [sys.executable, str(HOLDER)]
        process = subprocess.Popen([*command, str(folder), *args], stdout=subprocess.PIPE, text=True, env=env)
        started.append(process)
        assert process.stdout.readline().strip() == "held"
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def tiny_chat_model(tmp_path_factory) -> Path:
    """A tiny random model with the Qwen2 tokenizer and its chat template (for chat, serve, eval)."""
    return make_tiny_model(tmp_path_factory.mktemp("tinychat") / "model", tokenizer_name="qwen2")
