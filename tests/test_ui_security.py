"""`sftlab ui --data-dir`: each an extra folder the UI may read data from, checked to be a folder and resolved;
the one path rule (files.inside) holds for it as for the others, and its refusal names the option."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from sftlab.errors import SftlabError  # noqa: E402
from sftlab.ui.app import create_app  # noqa: E402

ROWS = [{"instruction": f"Say {i}", "input": "", "output": f"The number {i}."} for i in range(3)]


@pytest.fixture
def folders(tmp_path, monkeypatch):
    """work/ (the UI starts here, runs in work/runs), data/ (given as --data-dir) and secret/ (given as nothing)."""
    for name in ("work/runs", "data", "secret"):
        (tmp_path / name).mkdir(parents=True)
    (tmp_path / "data" / "d.json").write_text(json.dumps(ROWS))
    (tmp_path / "secret" / "s.json").write_text(json.dumps(ROWS))
    monkeypatch.chdir(tmp_path / "work")
    return tmp_path


def _client(folders, *data_dirs):
    app = create_app(folders / "work" / "runs", folders / "work", data_dirs=[str(d) for d in data_dirs])
    return TestClient(app, base_url="http://127.0.0.1")


def _yaml(c, path):
    return c.post("/api/config/yaml", json={"config": {"datasets": [path]}})


def test_data_in_a_data_dir_is_read_and_listed(folders):
    c = _client(folders, folders / "data")
    r = _yaml(c, str(folders / "data" / "d.json"))
    assert r.status_code == 200 and str(folders / "data" / "d.json") in r.json()["yaml"]
    assert str(folders / "data" / "d.json") in c.get("/api/files").json()["files"]


def test_without_the_data_dir_the_refusal_names_the_option(folders):
    c = _client(folders)
    secret = folders / "secret" / "s.json"
    r = _yaml(c, str(secret))
    assert r.status_code == 400 and r.json()["error"] == {
        "message": f"config: datasets file {secret} is outside the folders this UI serves ({folders / 'work'}, "
                   f"{folders / 'work' / 'runs'}); to read data from another folder, start the UI with --data-dir "
                   "FOLDER",
        "field": "datasets"}
    r = c.post("/api/data/check", json={"path": str(secret)})
    assert r.status_code == 400 and r.json()["error"]["message"] == (
        f"data file {secret} is outside the folders this UI serves ({folders / 'work'}, {folders / 'work' / 'runs'}); "
        "to read data from another folder, start the UI with --data-dir FOLDER")


def test_a_data_dir_opens_nothing_beside_it(folders):
    """Outside every root, a link out of the data folder, `..` from it: refused as before."""
    (folders / "data" / "out.json").symlink_to(folders / "secret" / "s.json")
    c = _client(folders, folders / "data")
    for path in (str(folders / "secret" / "s.json"), str(folders / "data" / "out.json"),
                 str(folders / "data" / ".." / "secret" / "s.json"), "../secret/s.json"):
        r = _yaml(c, path)
        assert r.status_code == 400 and r.json()["error"]["field"] == "datasets", path
        assert "--data-dir FOLDER" in r.json()["error"]["message"] or "'..' is not allowed" in r.json()["error"]["message"]
        assert c.post("/api/data/check", json={"path": path}).status_code == 400, path


def test_a_linked_data_dir_is_the_folder_it_points_to_when_the_ui_starts(folders):
    (folders / "link").symlink_to(folders / "data")
    c = _client(folders, folders / "link")
    assert _yaml(c, str(folders / "link" / "d.json")).status_code == 200
    (folders / "link").unlink()
    (folders / "link").symlink_to(folders / "secret")  # re-pointed while the UI runs: leads nowhere new
    assert _yaml(c, str(folders / "link" / "s.json")).status_code == 400


def test_a_data_dir_must_be_an_existing_folder(folders):
    from sftlab.ui.security import data_dirs

    with pytest.raises(SftlabError) as e:
        data_dirs([folders / "data" / "d.json"])
    assert str(e.value) == f"--data-dir {folders / 'data' / 'd.json'}: not a folder; give the folder that holds the data files"
    with pytest.raises(SftlabError) as e:
        data_dirs([folders / "nowhere"])
    assert str(e.value) == f"--data-dir {folders / 'nowhere'}: no such folder"
    assert data_dirs([folders / "data", folders / "secret"]) == [folders / "data", folders / "secret"]


def test_the_command_refuses_a_file_as_data_dir_in_one_sentence(cli, folders):
    result = cli("ui", "--data-dir", str(folders / "data"), "--data-dir", str(folders / "data" / "d.json"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert " ".join(result.stderr.split()) == (f"error: --data-dir {folders / 'data' / 'd.json'}: not a folder; give "
                                               "the folder that holds the data files")
