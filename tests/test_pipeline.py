"""sftlab.data.pipeline: files → examples, the data report (every row accounted for), mixing by weight."""

from __future__ import annotations

import json

import pytest

from helpers import tokenizer
from sftlab.config import DataSettings
from sftlab.data.pipeline import Source, build_examples, pack_examples
from helpers import ALPACA, _lines
from sftlab.config import load_config
from sftlab.errors import SftlabError


def test_pipeline_report_accounts_for_every_row(tmp_path):
    data = tmp_path / "mixed.jsonl"
    data.write_text(
        '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}\n'
        '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "  "}]}\n'
        '{"messages": [{"role": "user", "content": "q"}]}\n'
        "not json\n"
    )
    rejects = tmp_path / "rejects.jsonl"
    examples, report = build_examples(
        [Source(str(data))], tokenizer("qwen2"),
        DataSettings(template="chatml", on_error="skip", max_length=64), rejects_path=rejects,
    )
    rows = pack_examples(examples, 64, report)  # (the caller packs: a run does, after its eval split)
    d = report.to_dict()
    assert (d["rows_read"], d["converted"], d["rejected"], d["dropped"], d["examples"]) == (4, 2, 2, 1, 1)
    # Every row that is not an example is in the rejects file with its reason, dropped ones included.
    written = [json.loads(x) for x in rejects.read_text().splitlines()]
    # One layout with `data clean`'s rejects: {file, row, reasons: [{check, reason}], record}.
    assert [(r["row"], [x["check"] for x in r["reasons"]], r["reasons"][0]["reason"].split(": ")[-1]) for r in written] == [
        (2, ["dropped"], "no trained tokens (no non-empty assistant answer to train)"),
        (3, ["invalid_row"], "conversation has no assistant turn to train on"),
        (4, ["invalid_row"], "Expecting value"),
    ]
    assert {tuple(r) for r in written} == {("file", "row", "reasons", "record")}
    assert written[2]["record"] == "not json"
    assert d["dropped_rows"] == [{"source": str(data), "row": 2, "reason": "no trained tokens (no non-empty assistant answer to train)"}]
    assert d["packed_rows"] == 1 and d["packing_efficiency"] == len(rows[0].input_ids) / 64


def test_mixing_by_weight(tmp_path):
    a = tmp_path / "general.jsonl"
    b = tmp_path / "domain.jsonl"
    a.write_text("".join(f'{{"prompt": "g{i}", "completion": "x"}}\n' for i in range(30)))
    b.write_text("".join(f'{{"prompt": "d{i}", "completion": "y"}}\n' for i in range(10)))
    _, report = build_examples(
        [Source(str(a), weight=0.3), Source(str(b), weight=0.7)], tokenizer("qwen2"), DataSettings(template="chatml", seed=0)
    )
    # 40 rows in all, sampled 30 % / 70 %: the small domain set is repeated.
    assert report.mixture == {str(a): 12, str(b): 28}
    assert report.examples == 40
    from sftlab.data.pipeline import mixture_summary

    line = mixture_summary(report, [Source(str(a), weight=0.3), Source(str(b))])
    assert f"{a}: 12 of 30 rows (sampled, weight 0.3, 30%)" in line
    assert f"{b}: 28 of 10 rows (repeated, weight 1 (no weight given), 70%)" in line


@pytest.mark.parametrize("replacement", [False, True])
def test_the_achieved_mixture_matches_the_weights_within_one_example(tmp_path, replacement):
    import random

    from sftlab.data.pipeline import load_sources

    sources = []
    for name, rows in (("a", 30), ("b", 7), ("c", 13)):
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(f'{{"prompt": "{name}{i}", "completion": "x"}}\n' for i in range(rows)))
        sources.append(Source(str(path), weight=random.Random(rows).uniform(0.1, 1)))
    weights = [s.weight for s in sources]
    for total in (50, 97, 11):
        convs, report = load_sources(sources, seed=1, replacement=replacement, total=total)
        assert len(convs) == total
        for src, w in zip(sources, weights):
            taken = sum(c.source == src.path for c in convs)
            assert abs(taken - w / sum(weights) * total) <= 1, (src.path, taken, total)
            assert report.mixture[src.path] == taken
        again, _ = load_sources(sources, seed=1, replacement=replacement, total=total)
        assert [(c.source, c.row) for c in again] == [(c.source, c.row) for c in convs]  # same seed, same draw
    convs, _ = load_sources(sources, seed=1, replacement=False, total=50)
    from_b = [c.row for c in convs if c.source == sources[1].path]
    # Without replacement a file's rows are all used before any repeats.
    assert len(set(from_b)) == min(len(from_b), 7)


def test_data_report_records_the_system_prompt(tmp_path):
    data = tmp_path / "d.json"
    data.write_text('[{"instruction": "hi", "input": "", "output": "hello"}, '
                    '{"instruction": "yo", "input": "", "output": "hey", "system": "Be brief."}]')
    _, report = build_examples([Source(str(data))], tokenizer("qwen2"), DataSettings(default_system="You are Lumi."))
    assert report.to_dict()["system_prompt"] == {
        "conversations": 1, "of": 2, "system": "You are Lumi.", "from": "default_system",
        "template": "tokenizer's own", "replaces": "You are a helpful assistant"}


# ---- hostile and odd input (issue 25's rounds) ----

def test_report_counts_reasons_whole(tmp_path):
    from sftlab.config import DataSettings
    from sftlab.data.pipeline import Source, build_examples
    from helpers import tokenizer

    f = _lines(tmp_path / "d.jsonl", json.dumps(ALPACA), "{bad", "{worse", json.dumps({"instruction": "q"}))
    _, report = build_examples([Source(str(f))], tokenizer("qwen2"), DataSettings(template="chatml", on_error="skip"))
    assert report.to_dict()["rejected_reasons"] == {
        "invalid JSON: Expecting property name enclosed in double quotes": 2,
        "missing field (the format 'alpaca' was detected from the first row; set format to override)": 1,
    }


def test_no_example_left_names_the_first_lost_row(tmp_path, tiny_model):
    from sftlab.training import train

    row = {"messages": [{"role": "assistant", "content": "hello"}, {"role": "user", "content": "hi"},
                        {"role": "assistant", "content": "a"}]}
    f = _lines(tmp_path / "d.jsonl", "", json.dumps(row))
    config = load_config(None, [f"model={tiny_model}", "template=llama2", f"datasets=[{f}]",
                                f"output_dir={tmp_path / 'run'}", "precision=fp32"])
    with pytest.raises(SftlabError, match=f"no example left to train on out of 1 rows .*; the first is {f}, row 2\\)$"):
        train(config, quiet=True)


def test_a_template_given_resolved_is_used_as_it_is(tmp_path):
    """A run hands build_examples its template with default_system and template_kwargs applied, and its data keys
    whole: the given template is the one encoded with, never the keys applied on top of it again."""
    from sftlab.data.templates import resolve_template, with_default_system

    tok = tokenizer("qwen2")
    data = _lines(tmp_path / "d.jsonl", json.dumps({"prompt": "q", "completion": "a"}))
    chat = with_default_system(resolve_template("chatml", tok), "You are Lumi.")
    settings = DataSettings(template="llama2", default_system="Not this one.")
    examples, report = build_examples([Source(str(data))], tok, settings, template=chat)
    assert tok.decode(examples[0].input_ids) == ("<|im_start|>system\nYou are Lumi.<|im_end|>\n<|im_start|>user\nq"
                                                 "<|im_end|>\n<|im_start|>assistant\na<|im_end|>\n")
    assert (report.system_prompt["system"], report.system_prompt["template"]) == ("You are Lumi.", "chatml")


def test_build_examples_returns_examples_and_the_caller_packs(tmp_path):
    """Packing is pack_examples, the step a run takes after its eval split: build_examples gives examples even
    for a config with packing on, and packing them fills the report's packed rows."""
    tok = tokenizer("qwen2")
    data = _lines(tmp_path / "d.jsonl", *(json.dumps({"prompt": f"q{i}", "completion": "a"}) for i in range(3)))
    examples, report = build_examples([Source(str(data))], tok, DataSettings(template="chatml", packing=True))
    assert [type(e).__name__ for e in examples] == ["Example"] * 3 and report.packed_rows is None
    rows = pack_examples(examples, 64, report)
    assert (len(rows), report.packed_rows) == (1, 1)
