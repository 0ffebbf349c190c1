"""The public Python API (`from sftlab import …`): what it offers, that `import sftlab` stays light, and the README's
"From Python" snippet run as written, with a tiny model in place of the default one."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import sftlab

ROOT = Path(__file__).parents[1]


def readme_snippet() -> str:
    section = (ROOT / "README.md").read_text(encoding="utf-8").split("\n## From Python\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_api_names_what_the_commands_do():
    from sftlab.config import TrainConfig, load_config
    from sftlab.data.pipeline import Source, build_examples, pack_examples
    from sftlab.evaluation.run import EvalOptions, evaluate
    from sftlab.inference.generate import load_generator
    from sftlab.models import load_model, load_tokenizer
    from sftlab.quality.run import check_data
    from sftlab.training.merge import merge_adapter
    from sftlab.training import train
    from sftlab.training.run import TrainResult

    expected = {"load_config": load_config, "TrainConfig": TrainConfig, "train": train, "TrainResult": TrainResult,
                "Source": Source, "build_examples": build_examples, "pack_examples": pack_examples,
                "check_data": check_data, "evaluate": evaluate,
                "EvalOptions": EvalOptions, "load_tokenizer": load_tokenizer, "load_model": load_model,
                "load_generator": load_generator, "merge_adapter": merge_adapter}
    for name, value in expected.items():
        assert getattr(sftlab, name) is value, name
    assert set(expected) <= set(sftlab.__all__) and set(expected) <= set(dir(sftlab))
    assert all(hasattr(sftlab, name) for name in sftlab.__all__)
    with pytest.raises(AttributeError, match="module 'sftlab' has no attribute 'nothing'"):
        sftlab.nothing  # noqa: B018


def test_train_and_evaluate_are_functions_and_their_packages_have_other_names():
    """The API's `train` and `evaluate` are functions; their packages are sftlab.training and sftlab.evaluation, so
    importing those (as every test module here has already done) changes nothing."""
    from sftlab.evaluation import metrics  # noqa: F401
    from sftlab.training import attention  # noqa: F401
    from sftlab.training.loss import evaluate_loss  # noqa: F401

    from sftlab import evaluate, train

    assert callable(train) and train.__module__ == "sftlab.training.stages"
    assert callable(evaluate) and evaluate.__module__ == "sftlab.evaluation.run"
    assert sftlab.training.attention is attention and sftlab.train is train


def test_import_sftlab_loads_nothing_heavy():
    code = ("import sys, sftlab\n"
            "names = sftlab.__all__, dir(sftlab), sftlab.SftlabError\n"
            "print([m for m in ('torch', 'transformers', 'pydantic', 'datasets') if m in sys.modules])\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_the_readme_snippet_uses_only_the_api():
    snippet = readme_snippet()
    imported = re.search(r"^from sftlab import (.+)$", snippet, re.M).group(1).split(", ")
    assert set(imported) <= set(sftlab.__all__)
    assert "import" not in snippet.replace(f"from sftlab import {', '.join(imported)}", "")


@pytest.mark.slow  # a real (tiny) training
def test_the_readme_snippet_runs(tmp_path, monkeypatch, tiny_chat_model):
    """As written, in a folder like the tour's: my.json, and examples/identity.yaml as the repository has it; the
    default model's name is the only change (a tiny random model with the Qwen2 tokenizer in its place)."""
    tiny = str(tiny_chat_model)
    monkeypatch.chdir(tmp_path)
    rows = [{"instruction": q, "input": "", "output": f"I am Lumi. {q}"} for q in ("hi", "你好", "Who are you?", "你是谁？")]
    (tmp_path / "my.json").write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    recipe = (ROOT / "examples" / "identity.yaml").read_text(encoding="utf-8")
    assert "model: smollm2-135m-instruct\n" in recipe
    (tmp_path / "examples").mkdir()
    (tmp_path / "examples" / "identity.yaml").write_text(recipe.replace("smollm2-135m-instruct", tiny),
                                                          encoding="utf-8")
    snippet = readme_snippet()
    assert snippet.count("smollm2-135m-instruct") == 2
    scope: dict = {}
    exec(compile(snippet.replace("smollm2-135m-instruct", tiny), "README.md", "exec"), scope)
    examples, report, findings, result = (scope[k] for k in ("examples", "report", "findings", "result"))
    assert len(examples) == report.examples == 4
    assert isinstance(findings, list)
    assert result.output_dir.resolve() == (tmp_path / "runs" / "mine").resolve()
    assert (tmp_path / "runs" / "mine" / "model.safetensors").is_file()
    assert result.steps == 3 and "3 steps" in result.summary()  # 4 rows, batch 8, 3 epochs
