"""sftlab_home: sftlab's cache folder, from $SFTLAB_HOME or ~/.cache/sftlab, checked before every use."""

from __future__ import annotations

import pytest

from helpers import SHARED_DATA
from sftlab.errors import SftlabError
from sftlab.home import sftlab_home


def test_unset_it_is_the_users_cache_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("SFTLAB_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert sftlab_home() == tmp_path / ".cache" / "sftlab"


def test_the_former_import_path_is_the_same_function():
    import sftlab.models

    assert sftlab.models.sftlab_home is sftlab_home


def test_sftlab_home_must_be_a_folder_path(tmp_path, monkeypatch):
    monkeypatch.setenv("SFTLAB_HOME", "")
    with pytest.raises(SftlabError) as e:
        sftlab_home()
    assert str(e.value) == ("SFTLAB_HOME is set but empty: set it to the folder sftlab keeps its cache in, or unset it "
                            "(then ~/.cache/sftlab)")
    (tmp_path / "f").write_text("x")
    for value, problem in ((tmp_path / "f", "a file of that name exists; choose a folder"),
                           (tmp_path / "f" / "cache", "a part of the path is a file, not a folder"),
                           (tmp_path / ("h" * 300), "the name '" + "h" * 40 + "…' is too long for a folder name "
                                                    "(300 bytes; file systems take at most 255)")):
        monkeypatch.setenv("SFTLAB_HOME", str(value))
        with pytest.raises(SftlabError) as e:
            sftlab_home()
        assert str(e.value) == f"SFTLAB_HOME {value}: {problem}"  # (a path is named whole)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SFTLAB_HOME", "cache")
    assert sftlab_home() == tmp_path / "cache"  # a relative path is taken from where sftlab started, once


def test_sftlab_home_a_file_is_one_sentence_for_a_command(tmp_path, monkeypatch, cli):
    (tmp_path / "home").write_text("x")
    monkeypatch.setenv("SFTLAB_HOME", str(tmp_path / "home"))
    result = cli("inspect", "--data", SHARED_DATA / "identity.json", "--limit", "1")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (f"error: SFTLAB_HOME {tmp_path / 'home'}: a file of that name exists; "
                                     "choose a folder")
