import pytest
import yaml

from helpers import SHARED_DATA
from sftlab.config import load_config
from sftlab.errors import SftlabError
import re
import time

DATA = str(SHARED_DATA / "alpaca_en_demo.json")


def test_set_values_are_yaml_and_datasets_mix(tmp_path):
    cfg = load_config(None, [f"datasets=[{{path: {DATA}, weight: 0.3}}, {{path: {DATA}, weight: 0.7}}]",
                             "learning_rate=1e-4", "packing=false", "method=lora",
                             "lora_targets=[q_proj, v_proj]"])
    assert [d.weight for d in cfg.datasets] == [0.3, 0.7]
    assert cfg.learning_rate == 1e-4 and cfg.packing is False
    assert cfg.lora_targets == ["q_proj", "v_proj"]


def test_file_then_set_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text(f"datasets: [{DATA}]\nepochs: 2\nmethod: lora\n")
    cfg = load_config(f, ["epochs=1"])
    assert cfg.epochs == 1 and cfg.method == "lora" and cfg.datasets[0].path == DATA


@pytest.mark.parametrize(
    "sets, message",
    [
        (["learning_rat=1e-4"], "unknown key `learning_rat` (did you mean `learning_rate`?)"),
        (["epochs=three"], "`epochs` input should be a valid number"),
        (["method=qlora4"], "`method` input should be 'full', 'freeze', 'lora', 'dora', 'qlora', 'hybrid', 'prompt_tuning', 'prefix_tuning', 'p_tuning' or 'adaption_prompt'"),
        (["method=qlora", "distributed.strategy=fsdp2"], "method qlora keeps a whole 4-bit base on every process; distributed.strategy fsdp2 shards full-precision weights: use strategy ddp"),
        ([f"datasets=[{{path: {DATA}, wieght: 2}}]"], "unknown key `datasets[0].wieght` (did you mean `weight`?)"),
        (["datasets=[missing.json]"], "datasets file missing.json not found"),
        (["lr_scheduler=cosin"], "unknown scheduler 'cosin'"),
        (["epochs=1"], "no training data"),
        (["epochs=[1"], "--set epochs: the value is not valid YAML"),
        (["distributed.strategy=fsdp"], "`distributed.strategy` input should be 'ddp', 'fsdp2' or 'deepspeed'"),
        (["distributed.stratgy=fsdp2"], "unknown key `distributed.stratgy` (did you mean `strategy`?)"),
        (["distributed.strategy=deepspeed"], "strategy deepspeed needs `deepspeed`: its JSON config file"),
        (["distributed.cpu_offload=true"], "`cpu_offload` is for strategy: fsdp2 only"),
    ],
)
def test_config_errors_are_one_actionable_sentence(sets, message):
    if "datasets" not in sets[0] and "no training data" not in message:
        sets = sets + [f"datasets=[{DATA}]"]
    with pytest.raises(SftlabError) as e:
        load_config(None, sets)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_missing_config_file_and_bad_yaml(tmp_path):
    with pytest.raises(SftlabError, match="nope.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("datasets: [a.json\nepochs: 1\n")
    with pytest.raises(SftlabError, match=r"bad.yaml: invalid YAML on line \d"):
        load_config(bad)


@pytest.mark.parametrize(
    "method, lr, hybrid_lora_lr",
    [("full", 2e-5, None), ("freeze", 2e-5, None), ("lora", 2e-4, None), ("dora", 2e-4, None), ("qlora", 2e-4, None),
     ("hybrid", 2e-5, 2e-4)],
)
def test_learning_rate_defaults_follow_the_method_and_are_written_out(method, lr, hybrid_lora_lr):
    cfg = load_config(None, [f"datasets=[{DATA}]", f"method={method}"])
    assert cfg.learning_rate == pytest.approx(lr)
    assert cfg.hybrid_lora_learning_rate == (pytest.approx(hybrid_lora_lr) if hybrid_lora_lr else None)
    written = yaml.safe_load(cfg.to_yaml())  # what config.yaml holds: the resolved values
    assert written["learning_rate"] == pytest.approx(lr)
    assert written["hybrid_lora_learning_rate"] == (pytest.approx(hybrid_lora_lr) if hybrid_lora_lr else None)


def test_given_learning_rates_are_kept():
    cfg = load_config(None, [f"datasets=[{DATA}]", "method=lora", "learning_rate=5e-5"])
    assert cfg.learning_rate == 5e-5  # YAML reads 5e-5 as a string; it is still a number here
    hybrid = load_config(None, [f"datasets=[{DATA}]", "method=hybrid", "learning_rate=5e-5"])
    assert hybrid.hybrid_lora_learning_rate == pytest.approx(5e-4)  # 10× the full phase's rate
    with pytest.raises(SftlabError, match="hybrid_lora_learning_rate"):
        load_config(None, [f"datasets=[{DATA}]", "method=lora", "hybrid_lora_learning_rate=1e-3"])


def test_layout_defaults_are_trls_names():
    cfg = load_config(None, [f"datasets=[{DATA}]"])
    assert cfg.padding_free is True and cfg.packing is False


def test_default_system_is_a_config_key():
    assert load_config(None, [f"datasets=[{DATA}]"]).default_system is None
    assert load_config(None, [f"datasets=[{DATA}]", "default_system=You are Lumi."]).default_system == "You are Lumi."
    assert load_config(None, [f"datasets=[{DATA}]", "default_system=''"]).default_system == ""


def test_tensorboard_without_its_package_says_what_to_install(monkeypatch):
    import sftlab.config.train

    monkeypatch.setattr(sftlab.config.train, "installed", lambda package: False)
    with pytest.raises(SftlabError) as e:
        load_config(None, [f"datasets=[{DATA}]", "report_to=tensorboard"])
    assert str(e.value) == ("--set: `report_to` needs the tensorboard package: pip install 'sftlab[tensorboard]' "
                            "(got 'tensorboard')")
    monkeypatch.setattr(sftlab.config.train, "installed", lambda package: package == "tensorboardX")
    assert load_config(None, [f"datasets=[{DATA}]", "report_to=[tensorboard]"]).report_to == ["tensorboard"]


def test_mixture_examples_is_bounded():
    with pytest.raises(SftlabError) as e:
        load_config(None, ["datasets=[{path: a.json, weight: 1}]", "mixture_examples=100000001"], check_files=False)
    assert str(e.value) == ("--set: `mixture_examples` must be between 1 and 100000000 (got 100000001)")
    assert load_config(None, ["datasets=[{path: a.json, weight: 1}]", "mixture_examples=100000000"],
                       check_files=False).mixture_examples == 100_000_000


def test_every_key_is_declared_once_with_its_help_group_and_bounds_in_the_schema():
    """The UI's form and the docs read each key's `description` and `json_schema_extra["group"]` from the schema."""
    from sftlab.config import GROUPS, TrainConfig

    props = TrainConfig.model_json_schema()["properties"]
    assert len(props) > 50
    assert [k for k, p in props.items() if not p.get("description") or p.get("group") not in GROUPS] == []
    assert props["max_length"]["minimum"] == 2 and props["lora_dropout"]["exclusiveMaximum"] == 1
    assert "minimum" not in props["max_steps"]  # (-1 lies outside its range and means "by epochs")
    with pytest.raises(SftlabError, match=r"`lora_dropout` must be at least 0 and less than 1 \(got 1.0\)"):
        load_config(None, [f"datasets=[{DATA}]", "lora_dropout=1.0"])


# ---- hostile and odd input (issue 25's rounds) ----

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


def test_a_config_key_that_is_not_a_string(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text(f"datasets: [{SHARED_DATA / 'alpaca_en_demo.json'}]\n1: 2\n")
    with pytest.raises(SftlabError, match=f"^{f}: invalid YAML on line 2 \\(the key 1 is not a string"):
        load_config(f)


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


def test_every_numeric_option_and_config_value_has_its_bounds_declared():
    import typer

    from sftlab.cli import app, bounded
    from sftlab.config import DatasetSpec, TrainConfig, bound
    from sftlab.config.bounds import field_limit

    def commands(group):
        for cmd in group.commands.values():
            yield from commands(cmd) if hasattr(cmd, "commands") else [cmd]

    def numeric(annotation):  # (a number, or an optional one: numbers inside a mapping carry their bounds there)
        return any(t in str(annotation) for t in ("int", "float")) and not any(
            t in str(annotation) for t in ("bool", "dict[", "list["))

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


def test_class_weights_are_finite_and_not_negative():
    base = [f"datasets=[{DATA}]", "task=classification"]
    for value, problem in (("{a: -1}", "must be at least 0"), ("{a: .nan}", "must be a finite number (at least 0)")):
        with pytest.raises(SftlabError) as e:
            load_config(None, [*base, f"class_weights={value}"])
        assert str(e.value).startswith(f"--set: `class_weights` the weight of 'a' {problem} (got ")
    assert load_config(None, [*base, "class_weights={a: 2, b: 0}"]).class_weights == {"a": 2.0, "b": 0.0}


# Which methods act on each method's own key, written out by hand (sftlab/training/methods.py reads them there).
KEY_OWNERS = {
    "num_virtual_tokens": ("prompt_tuning", "prefix_tuning", "p_tuning", "adaption_prompt"),
    "adaption_layers": ("adaption_prompt",),
    "prompt_init_text": ("prompt_tuning",),
    "lora_r": ("lora", "dora", "qlora", "hybrid"),
    "lora_alpha": ("lora", "dora", "qlora", "hybrid"),
    "lora_dropout": ("lora", "dora", "qlora", "hybrid"),
    "lora_targets": ("lora", "dora", "qlora", "hybrid"),
    "freeze_trainable_layers": ("freeze",),
    "freeze_train_embeddings": ("freeze",),
    "hybrid_full_fraction": ("hybrid",),
    "hybrid_lora_learning_rate": ("hybrid",),
}
# A value other than the key's default for each.
KEY_VALUES = {"num_virtual_tokens": "5", "adaption_layers": "3", "prompt_init_text": "Answer kindly.", "lora_r": "4",
              "lora_alpha": "8", "lora_dropout": "0.1", "lora_targets": "[q_proj]", "freeze_trainable_layers": "1",
              "freeze_train_embeddings": "true", "hybrid_full_fraction": "0.5", "hybrid_lora_learning_rate": "1e-3"}
ALL_METHODS = ("full", "freeze", "lora", "dora", "qlora", "hybrid", "prompt_tuning", "prefix_tuning", "p_tuning",
               "adaption_prompt")


def test_the_method_records_own_exactly_the_keys_above():
    from sftlab.config.methods import METHODS

    assert tuple(METHODS) == ALL_METHODS
    assert {k: tuple(m.name for m in METHODS.values() if k in m.own_keys) for k in KEY_OWNERS} == KEY_OWNERS
    assert {k for m in METHODS.values() for k in m.own_keys} == set(KEY_OWNERS)


@pytest.mark.parametrize("key", KEY_OWNERS)
@pytest.mark.parametrize("method", ALL_METHODS)
def test_a_key_of_another_method_is_refused_naming_both(method, key):
    sets = [f"datasets=[{DATA}]", f"method={method}", f"{key}={KEY_VALUES[key]}"]
    owners = KEY_OWNERS[key]
    if method in owners:
        assert load_config(None, sets).method == method
        return
    names = owners[0] if len(owners) == 1 else f"{', '.join(owners[:-1])} or {owners[-1]}"
    with pytest.raises(SftlabError) as e:
        load_config(None, sets)
    assert str(e.value) == f"--set: `{key}` is for method {names}; method {method} does not use it"


def test_qlora_with_a_prompt_methods_key_is_refused():
    with pytest.raises(SftlabError) as e:
        load_config(None, [f"datasets=[{DATA}]", "method=qlora", "num_virtual_tokens=8"])
    assert str(e.value) == ("--set: `num_virtual_tokens` is for method prompt_tuning, prefix_tuning, p_tuning or "
                            "adaption_prompt; method qlora does not use it")


def test_a_staged_configs_key_acts_in_a_stage_that_takes_it(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(f"datasets: [{DATA}]\nlora_r: 4\nstages: [{{name: a, method: lora}}]\n")
    assert load_config(config).lora_r == 4
    config.write_text(f"datasets: [{DATA}]\nlora_r: 4\nstages: [{{name: a}}, {{name: b, method: freeze}}]\n")
    with pytest.raises(SftlabError) as e:
        load_config(config)
    assert str(e.value) == (f"{config}: `lora_r` is for method lora, dora, qlora or hybrid; the stages' methods "
                            "(full, freeze) do not use it")


def test_a_key_a_task_head_does_not_read_is_refused():
    with pytest.raises(SftlabError) as e:
        load_config(None, [f"datasets=[{DATA}]", "task=classification", "method=freeze",
                           "freeze_train_embeddings=true"])
    assert str(e.value) == ("--set: `freeze_train_embeddings` does not apply to task: classification (a head reads "
                            "whole rows; docs/heads.md)")


@pytest.mark.parametrize("key", ["output_dir", "model"])
def test_a_name_too_long_for_a_file_system_is_one_sentence_naming_the_key(key):
    value = "runs/" + "n" * 300 + "/x"
    with pytest.raises(SftlabError) as e:
        load_config(None, [f"datasets=[{DATA}]", f"{key}={value}"])
    assert str(e.value) == (f"--set: `{key}` the name 'nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn…' is too long for a "
                            f"folder name (300 bytes; file systems take at most 255) (got 'runs/" + "n" * 75
                            + "…(307 characters)')")


def test_a_huge_value_is_echoed_shortened():
    with pytest.raises(SftlabError) as e:
        load_config(None, [f"datasets=[{DATA}]", "lr_scheduler=" + "x" * 100_000])
    assert str(e.value) == ("--set: `lr_scheduler` unknown scheduler '" + "x" * 80 + "…(100000 characters)'; choose "
                            "one of linear, cosine, cosine_with_restarts, polynomial, constant, constant_with_warmup, "
                            "inverse_sqrt, reduce_lr_on_plateau, cosine_with_min_lr, cosine_warmup_with_min_lr, "
                            "warmup_stable_decay, greedy (got '" + "x" * 80 + "…(100000 characters)')")


@pytest.mark.parametrize("sets, sentence", [
    (["k" * 100_000], "--set '" + "k" * 80 + "…(100000 characters)': expected key=value"),
    (["k" * 100_000 + "=1"], "--set: unknown key `" + "k" * 80 + "…(100000 characters)`"),
    (["datasets.x" + "y" * 100_000 + "=1"],
     "--set datasets.x" + "y" * 70 + "…(100010 characters): datasets is not a mapping"),
    (["class_weights={? " + "w" * 100_000 + ": -1}", "task=classification"],
     "--set: `class_weights` the weight of '" + "w" * 80 + "…(100000 characters)' must be at least 0 (got {'")])
def test_a_huge_key_or_value_is_echoed_shortened(sets, sentence):
    with pytest.raises(SftlabError) as e:
        load_config(None, [f"datasets=[{DATA}]", *sets])
    assert str(e.value).startswith(sentence) and len(str(e.value)) < 500


@pytest.mark.parametrize("item, sentence", [
    ("<b>ep\nochs</b>=1", "--set: unknown key `<b>ep\\nochs</b>`"),
    ('stages=[{name: a, "x\\u2028y": 1}]', "--set: stages[1]: `x\\u2028y` cannot be set per stage"),
    ("epochs=1\nlearning_rate: 5", "--set epochs: the value is not valid YAML (mapping values are not allowed here)"),
])
def test_a_set_key_with_markup_and_newlines_is_one_line(item, sentence):
    with pytest.raises(SftlabError) as e:
        load_config(None, [f"datasets=[{DATA}]", item])
    assert str(e.value).startswith(sentence) and "\n" not in str(e.value) and "\u2028" not in str(e.value)


@pytest.mark.parametrize("sets, sentence", [
    (["epochs=true"], "--set: `epochs` must be a number, not true or false (got True)"),
    (["task=classification", "class_weights={a: true}"],
     "--set: `class_weights` the weight of 'a' must be a number, not true or false (got {'a': True})"),
    (["lora_dropout=false", "method=lora"], "--set: `lora_dropout` must be a number, not true or false (got False)"),
    (["epochs=" + "9" * 5000], "--set epochs: the value is not valid YAML (a number of more than 4300 digits)"),
    (["output_dir=''"], "--set: `output_dir` is empty: name a folder (got '')"),
    (["model=' '"], "--set: `model` is empty: name a folder (got ' ')"),
    (["=1"], "--set '=1': expected key=value (a key name is empty)"),
    ([".=1"], "--set '.=1': expected key=value (a key name is empty)"),
    (["seed=-1"], "--set: `seed` must be between 0 and 4294967295 (got -1)"),
    (["datasets=[" + "d" * 100_000 + ".json]"],
     "--set: datasets file " + "d" * 4096 + "…(100005 characters) cannot be read"),  # (a path: up to PATH_MAX)
])
def test_a_wrong_type_or_an_empty_name_is_one_sentence(sets, sentence):
    with pytest.raises(SftlabError) as e:
        load_config(None, [f"datasets=[{DATA}]", *sets])
    assert str(e.value).startswith(sentence) and len(str(e.value)) < 4700


def test_a_stage_with_an_unknown_method_is_left_to_the_stages_own_check():
    # (check_stages says "stages[1] (a): `method` input should be …"; the top-level key check does not guess)
    assert load_config(None, [f"datasets=[{DATA}]", "lora_r=4", "stages=[{name: a, method: [1]}]"]).lora_r == 4


def test_a_config_nested_deeper_than_any_config_is_refused(tmp_path):
    deep = "[" * 120 + "]" * 120
    with pytest.raises(SftlabError) as e:
        load_config(None, [f"datasets=[{DATA}]", f"template_kwargs={{a: {deep}}}"])
    assert str(e.value) == "--set template_kwargs: the value is not valid YAML (nested more than 64 deep)"
    f = tmp_path / "c.yaml"
    f.write_text(f"datasets: [{DATA}]\ntemplate_kwargs:\n  a: {deep}\n")
    with pytest.raises(SftlabError) as e:
        load_config(f)
    assert str(e.value) == f"{f}: invalid YAML (nested more than 64 deep)"


def test_a_huge_stage_name_that_is_a_path_is_echoed_shortened():
    with pytest.raises(SftlabError) as e:
        load_config(None, [f"datasets=[{DATA}]", "stages=[{name: a/" + "x" * 100_000 + "}]"])
    assert str(e.value) == ("--set: stages[1].name 'a/" + "x" * 78 + "…(100002 characters)' is not a plain folder "
                            "name (no '/', '\\', '..' or surrounding spaces): it names a folder inside runs/sft")


def test_a_config_path_too_long_for_a_file_system_is_echoed_shortened(tmp_path):
    with pytest.raises(SftlabError) as e:
        load_config("c" * 100_000 + ".yaml")
    # (a path is echoed whole up to PATH_MAX, 4096: a sentence must name the file it is about)
    assert str(e.value) == ("c" * 4096 + "…(100005 characters): config file the name '" + "c" * 40 + "…' is too long "
                            "for a folder name (100005 bytes; file systems take at most 255)")


def test_an_output_dir_that_is_a_file_or_lies_under_one_is_refused_when_the_config_is_read(tmp_path):
    import os

    (tmp_path / "f").write_text("x")
    os.mkfifo(tmp_path / "fifo")
    for out, problem in ((tmp_path / "f", "a file of that name exists; choose a folder"),
                         (tmp_path / "fifo", "is a FIFO (named pipe), not a regular file"),
                         (tmp_path / "f" / "run", "a part of the path is a file, not a folder")):
        with pytest.raises(SftlabError) as e:
            load_config(None, [f"datasets=[{DATA}]", f"output_dir={out}"])
        assert str(e.value) == f"--set: output_dir {out}: {problem}"


def test_a_config_of_too_many_values_without_aliases_says_so():
    with pytest.raises(SftlabError) as e:
        load_config(None, ["clean=[" + ", ".join(["a"] * 100_001) + "]"])
    assert str(e.value) == "--set clean: the value is not valid YAML (it holds more than 100,000 values)"


@pytest.mark.parametrize("targets", ["all", "[q_proj, all]", "linear"])
def test_lora_targets_all_points_at_all_linear(targets):
    # (LLaMA-Factory's `lora_target: all`; peft looked for a module named "all" and failed after the model loaded)
    with pytest.raises(SftlabError, match="is no module name; every linear layer .* is all-linear"):
        load_config(None, [f"datasets=[{DATA}]", "method=lora", f"lora_targets={targets}"])
