"""Staged runs: continued pre-training on text, then SFT from its model, in one config; killed in stage 2
and resumed, the same per-step losses as the uninterrupted run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM

from helpers import SHARED_DATA
from sftlab.config import load_config
from sftlab.errors import SftlabError
from helpers import _one_line

HERE = Path(__file__).parent


def _sets(tiny_model, out, second_method="full"):
    stages = (f"[{{name: text, datasets: [{{path: {SHARED_DATA / 'c4_demo.jsonl'}}}], max_steps: 3, "
              f"learning_rate: 1e-3}}, {{name: sft, datasets: [{SHARED_DATA / 'identity.json'}], max_steps: 6, "
              f"method: {second_method}, save_steps: 2}}]")
    return [f"model={tiny_model}", "template=llama2", "limit=24", "max_length=128", "batch_size=2",
            "logging_steps=1", "precision=fp32", "seed=5", f"output_dir={out}", f"stages={stages}"]


def _run(mode, step, sets):
    return subprocess.run([sys.executable, str(HERE / "killable_run.py"), mode, str(step), *sets],
                          capture_output=True, text=True, cwd=HERE.parent, timeout=600)


def _records(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow  # real trainings and subprocesses
def test_a_two_stage_run_killed_in_stage_two_resumes_to_the_same_losses(tiny_model, tmp_path):
    whole = tmp_path / "whole"
    done = _run("none", 0, _sets(tiny_model, whole))
    assert done.returncode == 0, done.stderr[-2000:]
    records = _records(whole)
    assert [(r["stage"], r["stage_step"]) for r in records] == [("text", s) for s in (1, 2, 3)] + [
        ("sft", s) for s in range(1, 7)]
    assert [r["step"] for r in records] == list(range(1, 10))  # counted across the stages
    # Stage 2 started from stage 1's model: its config names that folder.
    assert load_config(whole / "sft" / "config.yaml").model == str(whole / "text")
    assert (whole / "loss.png").read_bytes()[:4] == b"\x89PNG"
    AutoModelForCausalLM.from_pretrained(str(whole / "sft"))

    killed = tmp_path / "killed"
    sets = _sets(tiny_model, killed)
    died = _run("stage:sft", 3, sets)
    assert died.returncode == 17, died.stderr[-2000:]
    assert (killed / "text" / "stage_done.json").is_file() and not (killed / "sft" / "stage_done.json").exists()
    again = _run("none", 0, sets)
    assert again.returncode != 0 and "set `resume: true`" in again.stderr  # never overwritten by accident
    resumed = _run("none", 0, sets + ["resume=true"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    got = _records(killed)
    for key in ("loss", "learning_rate", "grad_norm", "stage", "step"):
        assert [r[key] for r in got] == [r[key] for r in records], key


@pytest.mark.slow  # real trainings and subprocesses
def test_a_lora_stage_is_merged_before_the_next_and_stage_keys_are_checked(tiny_model, tmp_path):
    from sftlab.training import train

    out = tmp_path / "lora-then-full"
    stages = (f"[{{name: a, datasets: [{SHARED_DATA / 'identity.json'}], method: lora, max_steps: 2}}, "
              f"{{name: b, datasets: [{SHARED_DATA / 'identity.json'}], max_steps: 2}}]")
    config = load_config(None, [f"model={tiny_model}", "template=llama2", "limit=8", "max_length=128",
                                "batch_size=4", "precision=fp32", f"output_dir={out}", f"stages={stages}"])
    train(config, quiet=True)
    assert json.loads((out / "a" / "stage_done.json").read_text())["model"] == str(out / "a" / "merged")
    assert (out / "a" / "merged" / "model.safetensors").is_file()
    second = load_config(out / "b" / "config.yaml")
    assert second.model == str(out / "a" / "merged") and second.method == "full"
    assert second.learning_rate == 2e-5  # stage b's method default, not stage a's LoRA rate
    with pytest.raises(SftlabError, match=r"stages\[1\]: `output_dir` cannot be set per stage"):
        load_config(None, [f"model={tiny_model}", f"stages=[{{datasets: [x.json], output_dir: y}}]"],
                        check_files=False)


@pytest.mark.slow  # real trainings and subprocesses
def test_lora_stages_can_train_one_adapter_on_instead_of_merging(tiny_model, tmp_path):
    import torch
    from safetensors.torch import load_file

    from sftlab.training import train

    out = tmp_path / "lora-lora"
    stages = (f"[{{name: a, datasets: [{SHARED_DATA / 'identity.json'}], max_steps: 2}}, "
              f"{{name: b, datasets: [{SHARED_DATA / 'alpaca_en_demo.json'}], max_steps: 2}}]")
    config = load_config(None, [f"model={tiny_model}", "template=llama2", "limit=8", "max_length=128", "method=lora",
                                "lora_r=4", "learning_rate=5e-2", "batch_size=4", "precision=fp32",
                                "merge_lora_stages=false", f"output_dir={out}", f"stages={stages}"])
    train(config, quiet=True)
    assert not (out / "a" / "merged").exists()
    assert load_config(out / "b" / "config.yaml").model == str(out / "a")
    # Stage b's adapter is stage a's trained on: it belongs to the same base and differs from a's.
    assert json.loads((out / "b" / "adapter_config.json").read_text())["base_model_name_or_path"] == str(tiny_model)
    a, b = load_file(str(out / "a" / "adapter_model.safetensors")), load_file(str(out / "b" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and any(not torch.equal(a[k], b[k]) for k in a)
    # A fresh LoRA starts with B = 0; stage b's B matrices moved on from stage a's, which were not 0.
    assert all(a[k].abs().sum() > 0 for k in a if "lora_B" in k)


# --- the whole staged config is checked before any stage trains ---------------------------------------------------


@pytest.fixture
def nothing_trains(monkeypatch):
    """train_one replaced by a failure: a check that lets stage 1 start fails the test."""
    from sftlab.training import stages

    def trained(config, **_):
        raise AssertionError(f"a stage started training ({config.output_dir}) before the config was refused")

    monkeypatch.setattr(stages, "train_one", trained)


def _staged(tmp_path, second, first="{name: one, datasets: [%s], max_steps: 1}"):
    data = SHARED_DATA / "identity.json"
    first = first % data if "%s" in first else first
    return [f"output_dir={tmp_path / 'run'}", f"stages=[{first}, {second}]", f"datasets={data}"]


@pytest.mark.parametrize("second, sentence", [
    ("{name: two, datasets: [MISSING/d.jsonl]}", "stages[2] (two): datasets file MISSING/d.jsonl not found"),
    ("{name: two, eval_datasets: [MISSING/e.jsonl]}", "stages[2] (two): eval_datasets file MISSING/e.jsonl not found"),
    ("{name: two, template: MISSING/t.jinja}", "stages[2] (two): template file MISSING/t.jinja not found"),
])
def test_a_later_stage_naming_a_missing_file_is_refused_before_stage_one_trains(tmp_path, nothing_trains, second,
                                                                                 sentence):
    from sftlab.training import train

    config = load_config(None, _staged(tmp_path, second.replace("MISSING", str(tmp_path / "no"))))
    with pytest.raises(SftlabError) as e:
        train(config, quiet=True)
    assert str(e.value) == sentence.replace("MISSING", str(tmp_path / "no"))
    assert not (tmp_path / "run" / "one").exists()


def test_a_missing_template_gets_the_same_sentence_in_a_config_of_one_stage(tmp_path):
    missing = tmp_path / "t.jinja"
    with pytest.raises(SftlabError) as e:
        load_config(None, [f"datasets={SHARED_DATA / 'identity.json'}", f"template={missing}"])
    assert str(e.value) == f"--set: template file {missing} not found"


def test_a_stage_name_too_long_for_the_file_system_is_refused_when_the_config_is_read(tmp_path):
    name = "n" * 300
    with pytest.raises(SftlabError) as e:
        load_config(None, _staged(tmp_path, f"{{name: {name}}}"))
    assert str(e.value) == ("--set: stages[2].name 'nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn…' is too long for a folder "
                            "name (300 bytes; file systems take at most 255)")
    # 255 bytes is a name the file systems take: 85 three-byte characters.
    assert load_config(None, _staged(tmp_path, "{name: " + "名" * 85 + "}")).stages[1].name == "名" * 85
    with pytest.raises(SftlabError, match=r"\(258 bytes; file systems take at most 255\)"):
        load_config(None, _staged(tmp_path, "{name: " + "名" * 86 + "}"))


def test_an_output_dir_too_long_for_the_file_system_is_refused_before_anything_is_written(tmp_path, nothing_trains):
    from sftlab.training import train

    out = tmp_path / ("o" * 256)
    with pytest.raises(SftlabError) as e:  # (said when the config is read: TrainConfig checks output_dir's names)
        load_config(None, _staged(tmp_path, "{name: two}") + [f"output_dir={out}"])
    assert str(e.value).startswith("--set: `output_dir` the name 'oooooooooooooooooooooooooooooooooooooooo…' is too "
                                   "long for a folder name (256 bytes; file systems take at most 255) (got '")


@pytest.mark.parametrize("method", ["prompt_tuning", "prefix_tuning", "p_tuning"])
def test_a_prompt_stage_followed_by_another_is_refused_before_stage_one_trains(tmp_path, nothing_trains, method):
    from sftlab.training import train

    first = ("{name: one, datasets: [%s], method: " + method + ", padding_free: false}")
    config = load_config(None, _staged(tmp_path, "{name: two, method: lora}", first=first))
    with pytest.raises(SftlabError) as e:
        train(config, quiet=True)
    assert str(e.value) == (f"stages[1] ({'one'}): a {method} stage cannot be followed by another (its adapter cannot "
                            "be merged into the model); make it the last stage")
    assert not (tmp_path / "run").exists()


def test_a_later_stage_with_mixture_examples_and_no_weighted_file_is_refused_before_stage_one_trains(tmp_path,
                                                                                                   nothing_trains):
    from sftlab.training import train

    config = load_config(None, _staged(tmp_path, "{name: two, mixture_examples: 50}"))
    with pytest.raises(SftlabError) as e:
        train(config, quiet=True)
    assert str(e.value) == ("stages[2] (two): `mixture_examples` has nothing to act on: no file in `datasets` has a "
                            "`weight` (the mixture keys say how weighted files are drawn; give a file a weight, or use "
                            "`limit` for the first N rows)")


# ---- hostile and odd input (issue 25's rounds) ----

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


@pytest.fixture
def instant_stages(monkeypatch):
    """train_one replaced by a stage trained at once: two records, the second a diverged (NaN) loss with a
    U+2028 in a string, written to the stage's metrics.jsonl as a writer with ensure_ascii=False leaves them."""
    from sftlab.training import stages
    from sftlab.training.run import TrainResult

    def trained(config, **_):
        out = Path(config.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        records = [{"step": 1, "loss": 2.5}, {"step": 2, "loss": float("nan"), "note": "a\u2028b"}]
        (out / "metrics.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        return TrainResult(out, records)

    monkeypatch.setattr(stages, "train_one", trained)


STAGED_METRICS = (
    '{"step": 1, "loss": 2.5, "stage": "one", "stage_step": 1}\n'
    '{"step": 2, "loss": null, "note": "a\\u2028b", "stage": "one", "stage_step": 2}\n'
    '{"step": 3, "loss": 2.5, "stage": "two", "stage_step": 1}\n'
    '{"step": 4, "loss": null, "note": "a\\u2028b", "stage": "two", "stage_step": 2}\n')


def test_staged_metrics_are_line_safe_json_and_read_back_on_resume(tmp_path, instant_stages):
    """The staged run's metrics.jsonl has null for a NaN loss and U+2028 escaped; resuming reads the finished
    stages' metrics.jsonl split on "\\n" only (a raw U+2028 inside a string is no line break)."""
    from sftlab.training import train

    sets = _staged(tmp_path, "{name: two, max_steps: 1}")
    train(load_config(None, sets), quiet=True)
    assert (tmp_path / "run" / "metrics.jsonl").read_text(encoding="utf-8") == STAGED_METRICS
    (tmp_path / "run" / "metrics.jsonl").unlink()
    train(load_config(None, [*sets, "resume=true"]), quiet=True)  # both stages finished: read back
    assert (tmp_path / "run" / "metrics.jsonl").read_text(encoding="utf-8") == STAGED_METRICS


@pytest.mark.parametrize("forged, problem", [
    ("[]", 'is not {"model": FOLDER}'),
    ('{"model": 5}', 'is not {"model": FOLDER}'),
    ("{", "is not JSON"),
    ("fifo", "is a FIFO, not a file sftlab writes"),
])
def test_a_forged_stage_done_is_one_sentence(tmp_path, instant_stages, forged, problem):
    import os

    from sftlab.training import train

    sets = _staged(tmp_path, "{name: two, max_steps: 1}")
    train(load_config(None, sets), quiet=True)
    done = tmp_path / "run" / "one" / "stage_done.json"
    done.unlink()
    os.mkfifo(done) if forged == "fifo" else done.write_text(forged)
    with pytest.raises(SftlabError) as e:
        train(load_config(None, [*sets, "resume=true"]), quiet=True)
    assert str(e.value) == (f"{done} {problem}; it is sftlab's record of a finished stage: remove the stage's "
                            "folder to train that stage again")


def test_a_stage_of_another_method_does_not_inherit_hybrids_derived_rate(tmp_path):
    """hybrid_lora_learning_rate is derived (10× the learning rate given); a lora stage after a hybrid one must not
    receive it as if the user had set it (method keys of another method are refused)."""
    from sftlab.training.stages import stage_configs

    config = load_config(None, [f"datasets=[{SHARED_DATA / 'identity.json'}]", "method=hybrid", "learning_rate=1e-5",
                                "stages=[{name: a}, {name: b, method: lora}]", f"output_dir={tmp_path / 'run'}"])
    stages = stage_configs(config)
    assert [(name, s.method, s.hybrid_lora_learning_rate) for name, s in stages] == [("a", "hybrid", 1e-4),
                                                                                     ("b", "lora", None)]
