"""sftlab.files: every path a user names, checked in one place (hostile paths and files)."""

from __future__ import annotations
import os
import pytest
from conftest import QWEN, _cli, _one_line, _train_sets
from sftlab.config import load_config
from sftlab.errors import SftlabError


# ---- hostile and odd input (issue 25's rounds) ----

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


def test_a_fifo_as_data_is_refused_not_read(tmp_path):
    fifo = tmp_path / "d.jsonl"
    os.mkfifo(fifo)
    r = _cli("inspect", "--model", QWEN, "--template", "chatml", "--data", str(fifo), timeout=60)
    assert r.returncode == 2 and f"{fifo}: data file is a FIFO (named pipe), not a regular file" in _one_line(r.stderr)
    with pytest.raises(SftlabError, match="datasets file .* is a FIFO"):
        load_config(None, [f"datasets=[{fifo}]"])


def test_a_symlink_loop_is_called_one(tmp_path, cli):
    loop = tmp_path / "loop.jsonl"
    loop.symlink_to(loop)
    r = cli("inspect", "--model", QWEN, "--template", "chatml", "--data", loop)
    assert r.returncode == 2 and f"{loop}: data file is a symlink loop" in _one_line(r.stderr), r.stderr
    dangling = tmp_path / "dangling.jsonl"
    dangling.symlink_to(tmp_path / "moved.jsonl")
    r = cli("inspect", "--model", QWEN, "--template", "chatml", "--data", dangling)
    assert r.returncode == 2 and "data file is a broken symlink" in _one_line(r.stderr), r.stderr
