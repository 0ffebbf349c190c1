"""sftlab.config.data: DataSettings, the data keys build_examples takes whole, and its cache key."""

import json

import pytest

from helpers import tokenizer
from sftlab.config import DataSettings, load_config

# A value other than the default for every field (a new field must be added here: the first test says so).
OTHER = {"template": "chatml", "default_system": "", "train_on": "all", "max_length": 7,
         "escape_special_tokens": False, "on_error": "skip", "packing": True, "limit": 3, "mixture_examples": 5,
         "mixture_replacement": True, "clean": ["refusal"], "num_proc": 2, "seed": 1,
         "template_kwargs": {"enable_thinking": False}, "train_reasoning": False}


def test_every_field_but_the_layout_ones_changes_the_cache_key():
    assert set(OTHER) == set(DataSettings.model_fields)
    base = DataSettings().cache_key()
    same = [name for name, value in OTHER.items() if DataSettings(**{name: value}).cache_key() == base]
    assert same == ["packing", "num_proc"]  # applied after the cache / only shares the work


def test_a_field_added_to_the_section_is_in_the_key_without_being_listed():
    class Wider(DataSettings):
        strip_whitespace: bool = False  # (a setting no one has added yet)

    assert Wider().cache_key() != Wider(strip_whitespace=True).cache_key()
    assert Wider().cache_key() == {**DataSettings().cache_key(), "strip_whitespace": False}


def test_a_config_gives_its_data_keys_as_the_section():
    config = load_config(None, ["datasets=[a.json]", "max_length=64", "train_on=last_assistant", "packing=true",
                                "clean=[refusal]", "seed=7"], check_files=False)
    assert config.data == DataSettings(max_length=64, train_on="last_assistant", packing=True, clean=["refusal"],
                                       seed=7)
    adjusted = config.data.model_copy(update={"packing": False})
    assert (adjusted.packing, adjusted.max_length, config.packing) == (False, 64, True)


def test_a_changed_setting_is_a_cache_miss_and_the_same_one_a_hit(tmp_path, monkeypatch):
    from sftlab.data import pipeline
    from sftlab.data.pipeline import Source, build_examples

    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"q{i}", "completion": f"a{i}"}) + "\n" for i in range(5)))
    tok, cache = tokenizer("qwen2"), tmp_path / "cache"
    settings = DataSettings(template="chatml")
    build_examples([Source(str(data))], tok, settings, cache=cache)
    monkeypatch.setattr(pipeline, "load_sources", lambda *a, **k: pytest.fail("encoded again"))
    build_examples([Source(str(data))], tok, settings.model_copy(update={"num_proc": 1}), cache=cache)  # a hit
    with pytest.raises(BaseException, match="encoded again"):
        build_examples([Source(str(data))], tok, settings.model_copy(update={"train_on": "all"}), cache=cache)


def test_a_huge_template_variable_name_is_echoed_shortened():
    from sftlab.config.data import check_template_kwargs
    from sftlab.errors import SftlabError

    with pytest.raises(SftlabError) as e:
        check_template_kwargs({"-" * 100_000: 1})
    assert str(e.value) == ("template_kwargs: '" + "-" * 80 + "…(100000 characters)' is not a template variable name "
                            "(letters, digits and _)")


def test_max_length_is_refused_below_what_encoding_needs_with_the_configs_sentence():
    """One bound: the shortest example that trains a token holds 2 (one to predict from, the one predicted); the
    config refuses less in its own sentence, where the Encoder once refused 1 in another."""
    from sftlab.errors import SftlabError

    with pytest.raises(SftlabError) as e:
        load_config(None, ["datasets=[a.json]", "max_length=1"], check_files=False)
    assert str(e.value) == "--set: `max_length` must be at least 2 (got 1)"
    assert load_config(None, ["datasets=[a.json]", "max_length=2"], check_files=False).max_length == 2
