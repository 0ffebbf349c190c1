"""config.yaml as a run saves it: runnable again from any folder (TrainConfig.for_rerun)."""

from pathlib import Path

from sftlab.config import load_config


def test_for_rerun_names_the_model_and_files_absolutely(tmp_path, monkeypatch):
    (tmp_path / "d.json").write_text("[]")
    (tmp_path / "e.json").write_text("[]")
    (tmp_path / "t.jinja").write_text("{{ messages }}")
    monkeypatch.chdir(tmp_path)
    config = load_config(None, ["datasets=[{path: d.json, weight: 2}]", "eval_datasets=[e.json]", "template=t.jinja",
                                "output_dir=runs/a", "resume=true",
                                "stages=[{name: one, datasets: d.json}, {name: two, datasets: [nowhere.json]}]"],
                         check_files=False)
    rerun = config.for_rerun()
    assert rerun.model == "smollm2-135m-instruct" and rerun.resume is False
    assert [d.path for d in rerun.datasets] == [str(tmp_path / "d.json")] and rerun.datasets[0].weight == 2
    assert [d.path for d in rerun.eval_datasets] == [str(tmp_path / "e.json")]
    assert rerun.template == str(tmp_path / "t.jinja") and rerun.output_dir == str(tmp_path / "runs" / "a")
    # a stage's files too; a path that does not exist stays as written (its error says it as the user wrote it)
    assert [s.model_dump() for s in rerun.stages] == [{"name": "one", "datasets": [str(tmp_path / "d.json")]},
                                                      {"name": "two", "datasets": ["nowhere.json"]}]
    assert load_config(None, ["datasets=[d.json]", "template=chatml", f"model={tmp_path}"]).for_rerun().template == "chatml"
    assert Path(config.output_dir) == Path("runs/a")  # the config itself is left as it was
