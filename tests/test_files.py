"""sftlab.files: every path a user names, checked in one place (hostile paths and files)."""

from __future__ import annotations
import os
import pytest
from helpers import QWEN, _cli, _one_line, _train_sets
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


# ---- inputs are never outputs (issue 46): --out / output_dir apart from every path the command reads ----

def _adapter(folder, base, **settings):
    """An adapter folder as a lora run leaves it (its weights a stand-in: every check runs before they load)."""
    import json

    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": str(base), **settings}))
    save_file({"x": torch.zeros(1)}, str(folder / "adapter_model.safetensors"))
    return folder


def _never(*args, **kwargs):
    raise AssertionError("a model was loaded before the refusal")


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


APART = "which this command reads; write to a folder apart from every model and data file it reads"


@pytest.mark.parametrize("case", ["base", "inside_adapter", "link_to_base", "relative_base", "link_into_base"])
def test_merge_never_writes_into_what_it_reads(cli, tmp_path, monkeypatch, case):
    from helpers import make_tiny_model

    import sftlab.training.merge as merge

    base = make_tiny_model(tmp_path / "base")
    adapter = _adapter(tmp_path / "adapter", base)
    (tmp_path / "link").symlink_to(base)
    before = _snapshot(base), _snapshot(adapter)
    monkeypatch.setattr(merge, "load_model", _never)
    monkeypatch.chdir(tmp_path)
    out, sentence = {
        "base": (base, f"--out {base} is the base model {base}, {APART}"),
        "inside_adapter": (adapter / "out", f"--out {adapter / 'out'} is inside the adapter {adapter}, {APART}"),
        "link_to_base": (tmp_path / "link", f"--out {tmp_path / 'link'} (-> {base}) is the base model {base}, {APART}"),
        "relative_base": ("base", f"--out base is the base model {base}, {APART}"),
        "link_into_base": (tmp_path / "link" / "out",
                           f"--out {tmp_path / 'link' / 'out'} (-> {base / 'out'}) is inside the base model {base}, "
                           f"{APART}"),
    }[case]
    result = cli("merge", "--model", adapter, "--out", out)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert sentence in _one_line(result.stderr)
    assert (_snapshot(base), _snapshot(adapter)) == before  # the base model's bytes, and nothing added
    assert not (base / "out").exists() and not (adapter / "out").exists()


@pytest.mark.parametrize("case", ["parent_of_data", "data_itself", "model"])
def test_eval_never_writes_into_what_it_reads(cli, tiny_chat_model, tmp_path, monkeypatch, case):
    import sftlab.inference.generate as generate

    data = tmp_path / "held" / "test.jsonl"
    data.parent.mkdir()
    data.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n')
    monkeypatch.setattr(generate, "load_generator", _never)
    out, sentence = {
        "parent_of_data": (data.parent, f"--out {data.parent} holds the data file {data}, {APART}"),
        "data_itself": (data, f"--out {data} is the data file {data}, {APART}"),
        "model": (tiny_chat_model / "scores", f"--out {tiny_chat_model / 'scores'} is inside the model {tiny_chat_model}, "
                                            f"{APART}"),
    }[case]
    result = cli("eval", "--model", tiny_chat_model, "--data", data, "--out", out)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert sentence in _one_line(result.stderr)
    assert data.read_text().count("\n") == 1 and sorted(p.name for p in data.parent.iterdir()) == ["test.jsonl"]
    assert not (tiny_chat_model / "scores").exists()


@pytest.mark.parametrize("case", ["model", "parent_of_data"])
def test_export_and_train_never_write_into_what_they_read(cli, tmp_path, monkeypatch, case):
    from helpers import make_tiny_model

    import sftlab.export.run as export_run
    import sftlab.training.run as train_run
    from sftlab.training import train

    model = make_tiny_model(tmp_path / "model")
    before = _snapshot(model)
    monkeypatch.setattr(export_run, "load_source", _never)
    monkeypatch.setattr(train_run, "load_model", _never)
    if case == "model":
        result = cli("export", "--model", model, "--out", model, "--format", "safetensors")
        assert result.returncode == 2 and f"--out {model} is the model {model}, {APART}" in _one_line(result.stderr)
        with pytest.raises(SftlabError, match=f"output_dir {model} is the model {model}, which this command reads"):
            train(load_config(None, _train_sets(model, model)), quiet=True)
    else:
        data = tmp_path / "data" / "d.json"
        data.parent.mkdir()
        data.write_text('[{"instruction": "q", "input": "", "output": "a"}]')
        with pytest.raises(SftlabError, match=f"output_dir {tmp_path / 'data'} holds the data file {data}, which"):
            train(load_config(None, _train_sets(model, tmp_path / "data", f"datasets=[{data}]")), quiet=True)
        assert sorted(p.name for p in data.parent.iterdir()) == ["d.json"]  # (no lock file either)
    assert _snapshot(model) == before


def test_apart_takes_paths_as_given_and_as_linked(tmp_path):
    from sftlab.files import require_apart

    (tmp_path / "m").mkdir()
    require_apart(tmp_path / "m2", "--out", [("model", tmp_path / "m"), ("base model", None)])  # a sibling: fine
    require_apart(tmp_path / "out", "--out", [("model", tmp_path / "m")])
    with pytest.raises(SftlabError, match="is the model"):
        require_apart(tmp_path / "m" / ".." / "m", "--out", [("model", tmp_path / "m")])
    # sftlab's own layout inside a run (the UI's RUN/eval and RUN/export/…, a staged run's STAGE/merged): no model file
    for own in ("eval", "export/gguf-q8_0", "merged"):
        require_apart(tmp_path / "m" / own, "--out", [("model", tmp_path / "m")])
    with pytest.raises(SftlabError, match="is inside the model"):
        require_apart(tmp_path / "m" / "evals", "--out", [("model", tmp_path / "m")])


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="Linux's /proc")
@pytest.mark.parametrize("command", ["export", "merge", "eval"])
def test_an_out_that_cannot_be_made_is_named_before_the_model_loads(cli, tiny_chat_model, tmp_path, monkeypatch,
                                                                     command):
    import sftlab.evaluation.run as eval_run
    import sftlab.export.run as export_run
    import sftlab.training.merge as merge

    for module, name in ((export_run, "load_source"), (export_run, "model_config"), (merge, "load_model"),
                         (eval_run, "evaluate_model"), (eval_run, "evaluate_labels")):
        monkeypatch.setattr(module, name, _never)
    model = _adapter(tmp_path / "adapter", tiny_chat_model) if command == "merge" else tiny_chat_model
    data = tmp_path / "d.jsonl"
    data.write_text('{"text": "x", "label": "a"}\n')
    extra = ("--data", data) if command == "eval" else ()
    result = cli(command, "--model", model, "--out", "/proc/sftlab-out/x", *extra)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--out /proc/sftlab-out/x: cannot write there (" in _one_line(result.stderr)


@pytest.mark.parametrize("kind", ["fifo", "file", "dangling_link"])
def test_an_out_that_is_no_folder_is_said_as_what_it_is(cli, tiny_chat_model, tmp_path, monkeypatch, kind):
    import sftlab.export.run as export_run

    monkeypatch.setattr(export_run, "load_source", _never)
    out = tmp_path / "out"
    {"fifo": lambda: os.mkfifo(out), "file": lambda: out.write_text("mine"),
     "dangling_link": lambda: out.symlink_to(tmp_path / "gone")}[kind]()
    want = {"fifo": f"--out {out}: is a FIFO (named pipe), not a regular file; choose a folder",
            "file": f"--out {out}: a file of that name exists; give a folder for the export",
            "dangling_link": f"--out {out}: is a broken symlink (to {tmp_path / 'gone'}, which does not exist); "
                             "choose a folder"}[kind]
    result = cli("export", "--model", tiny_chat_model, "--out", out, "--format", "safetensors")
    assert result.returncode == 2 and want in _one_line(result.stderr), result.stderr


def test_an_output_probe_leaves_no_folder(tmp_path):
    from sftlab.files import require_output_dir

    assert require_output_dir(tmp_path / "a" / "b", "--out", keep=False) == tmp_path / "a" / "b"
    assert list(tmp_path.iterdir()) == []
    require_output_dir(tmp_path / "a" / "b", "--out")
    assert (tmp_path / "a" / "b").is_dir() and list((tmp_path / "a" / "b").iterdir()) == []
