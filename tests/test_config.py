import pytest

from conftest import SHARED_DATA
from sftlab.config import load_config
from sftlab.errors import SftlabError

DATA = str(SHARED_DATA / "alpaca_en_demo.json")


def test_set_values_are_yaml_and_datasets_mix(tmp_path):
    cfg = load_config(None, [f"datasets=[{{path: {DATA}, weight: 0.3}}, {{path: {DATA}, weight: 0.7}}]",
                             "learning_rate=1e-4", "packing=false", "lora_targets=[q_proj, v_proj]"])
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
        (["learning_rat=1e-4"], "unknown key `learning_rat`; did you mean `learning_rate`?"),
        (["epochs=three"], "`epochs` input should be a valid number"),
        (["method=qlora"], "`method` input should be 'full', 'freeze', 'lora', 'dora' or 'hybrid'"),
        ([f"datasets=[{{path: {DATA}, wieght: 2}}]"], "unknown key `datasets[0].wieght`; did you mean `weight`?"),
        (["datasets=[missing.json]"], "datasets file missing.json not found"),
        (["lr_scheduler=cosin"], "unknown scheduler 'cosin'"),
        (["epochs=1"], "no training data"),
        (["epochs=[1"], "--set epochs: the value is not valid YAML"),
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
