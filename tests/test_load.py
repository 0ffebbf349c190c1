"""Loading every format from every file type; bad input named by file, row and field."""

from __future__ import annotations

import json
import os

import pytest

from helpers import SHARED_DATA
from sftlab.data.load import load_conversations
from sftlab.errors import SftlabError
import re
from helpers import ALPACA, QWEN, _accounted, _lines


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def roles(conv):
    return [(m.role, m.content) for m in conv.messages]


def test_alpaca_with_system_and_history(tmp_path):
    f = write_jsonl(tmp_path / "a.jsonl", [{
        "instruction": "翻译", "input": "hello", "output": "你好", "system": "sys",
        "history": [["q1", "a1"]],
    }])
    (conv,) = load_conversations(f).conversations
    assert roles(conv) == [("system", "sys"), ("user", "q1"), ("assistant", "a1"), ("user", "翻译\nhello"), ("assistant", "你好")]
    assert (conv.source, conv.row) == (str(f), 1)


def test_sharegpt_with_tools_function_call_and_observation(tmp_path):
    f = tmp_path / "s.json"
    f.write_text(json.dumps([{
        "conversations": [
            {"from": "system", "value": "S"},
            {"from": "human", "value": "q"},
            {"from": "function_call", "value": '{"name": "f", "arguments": {"x": 1}}'},
            {"from": "observation", "value": "42"},
            {"from": "gpt", "value": "a"},
        ],
        "tools": '[{"name": "f", "parameters": {"type": "object"}}]',
    }]))
    (conv,) = load_conversations(f).conversations
    assert [m.role for m in conv.messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert conv.messages[2].tool_calls == [{"type": "function", "function": {"name": "f", "arguments": {"x": 1}}}]
    assert conv.tools == [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]


def test_messages_with_content_parts_and_flags(tmp_path):
    f = write_jsonl(tmp_path / "m.jsonl", [{"messages": [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": "c", "train": False},
        {"role": "user", "content": "d"},
        {"role": "assistant", "content": "e", "weight": 2},
    ]}])
    (conv,) = load_conversations(f).conversations
    assert roles(conv) == [("user", "a\nb"), ("assistant", "c"), ("user", "d"), ("assistant", "e")]
    assert conv.messages[1].train is False and conv.messages[3].weight == 2.0


def test_prompt_completion_and_text(tmp_path):
    f = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "p", "completion": "c"}])
    assert roles(load_conversations(f).conversations[0]) == [("user", "p"), ("assistant", "c")]
    t = write_jsonl(tmp_path / "t.jsonl", [{"text": "raw"}])
    (conv,) = load_conversations(t).conversations
    assert conv.is_text and conv.messages[0].content == "raw"


def test_csv_parquet_and_saved_dataset(tmp_path):
    import datasets

    rows = [{"instruction": "i1", "input": "", "output": "o1"}, {"instruction": "i2", "input": "x", "output": "o2"}]
    ds = datasets.Dataset.from_list(rows)
    ds.to_csv(str(tmp_path / "d.csv"), index=False)
    ds.to_parquet(str(tmp_path / "d.parquet"))
    ds.save_to_disk(str(tmp_path / "saved"))
    for path in (tmp_path / "d.csv", tmp_path / "d.parquet", tmp_path / "saved"):
        loaded = load_conversations(path)
        assert loaded.format == "alpaca"
        assert [roles(c)[0] for c in loaded.conversations] == [("user", "i1"), ("user", "i2\nx")], path


def test_csv_with_messages_as_json_text(tmp_path):
    f = tmp_path / "m.csv"
    f.write_text('messages\n"[{""role"": ""user"", ""content"": ""q""}, {""role"": ""assistant"", ""content"": ""a""}]"\n')
    assert roles(load_conversations(f).conversations[0]) == [("user", "q"), ("assistant", "a")]


def test_real_shared_files_load_whole():
    for name, fmt, n in [("alpaca_zh_demo.json", "alpaca", 1000), ("glaive_toolcall_en_demo.json", "sharegpt", 300),
                         ("c4_demo.jsonl", "text", 300)]:
        loaded = load_conversations(SHARED_DATA / name)
        assert (loaded.format, len(loaded.conversations), loaded.rejects) == (fmt, n, [])


# --- bad input: one sentence with file, row and field --------------------------------------------

BAD_ROWS = [
    ({"messages": [{"role": "wizard", "content": "x"}, {"role": "assistant", "content": "y"}]},
     "row 2, field 'messages[0].role': unknown role 'wizard'"),
    ({"messages": [{"role": "user"}, {"role": "assistant", "content": "y"}]},
     "row 2, field 'messages[0].content': missing field"),
    ({"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "y"}]},
     "row 2, field 'messages[0].content': content must be a string or a list of text parts, got a number"),
    ({"messages": []}, "row 2, field 'messages': empty conversation"),
    ({"messages": [{"role": "user", "content": "only a question"}]},
     "row 2: conversation has no assistant turn to train on"),
]
GOOD = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}


@pytest.mark.parametrize("bad,message", BAD_ROWS)
def test_bad_row_is_one_sentence_with_file_row_field(tmp_path, bad, message):
    f = write_jsonl(tmp_path / "bad.jsonl", [GOOD, bad, GOOD])
    with pytest.raises(SftlabError) as e:
        load_conversations(f)
    assert str(e.value).startswith(f"{f}, {message}")
    assert "\n" not in str(e.value)


def test_missing_alpaca_field_and_non_string_output(tmp_path):
    f = tmp_path / "a.json"
    f.write_text(json.dumps([{"instruction": "i", "output": "o"}, {"instruction": "i"}]))
    with pytest.raises(SftlabError, match=r"a\.json, row 2, field 'output': missing field"):
        load_conversations(f)
    f.write_text(json.dumps([{"instruction": "i", "output": "o"}, {"instruction": "i", "output": ["x"]}]))
    with pytest.raises(SftlabError, match=r"row 2, field 'output': content must be a string, got a list"):
        load_conversations(f)


def test_invalid_json_names_the_line(tmp_path):
    f = tmp_path / "x.jsonl"
    f.write_text(json.dumps(GOOD) + "\n" + json.dumps(GOOD) + "\n{oops\n")
    with pytest.raises(SftlabError, match=r"x\.jsonl: invalid JSON on line 3"):
        load_conversations(f)
    g = tmp_path / "x.json"
    g.write_text('[\n  {"text": "a"},\n  {"text": }\n]')
    with pytest.raises(SftlabError, match=r"x\.json: invalid JSON on line 3"):
        load_conversations(g)


def test_json_lines_in_a_json_file_get_a_hint(tmp_path):
    f = tmp_path / "x.json"
    f.write_text(json.dumps(GOOD) + "\n" + json.dumps(GOOD) + "\n")
    with pytest.raises(SftlabError) as e:
        load_conversations(f)
    assert str(e.value) == (f"{f}: invalid JSON on line 2, column 1: Extra data; this looks like JSON Lines "
                            "(one object per line): name the file .jsonl")
    f.write_text('[{"text": "a"}]\n[{"text": "b"}]\n')  # extra data, but not one object per line: no hint
    with pytest.raises(SftlabError) as e:
        load_conversations(f)
    assert str(e.value) == f"{f}: invalid JSON on line 2, column 1: Extra data"


def test_on_error_skip_rejects_exactly_the_bad_rows(tmp_path):
    rows = [GOOD] + [b for b, _ in BAD_ROWS] + [GOOD]
    f = write_jsonl(tmp_path / "mixed.jsonl", rows)
    with open(f, "a") as fh:
        fh.write("{not json\n")
    loaded = load_conversations(f, on_error="skip")
    assert [c.row for c in loaded.conversations] == [1, 7]
    assert [r.row for r in loaded.rejects] == [2, 3, 4, 5, 6, 8]
    assert loaded.rows == 8 == len(loaded.conversations) + len(loaded.rejects)
    assert "unknown role 'wizard'" in loaded.rejects[0].reason
    assert "invalid JSON on line 8" in loaded.rejects[-1].reason


def test_unknown_format_and_undetectable_columns(tmp_path):
    f = write_jsonl(tmp_path / "q.jsonl", [{"question": "q", "answer": "a"}])
    with pytest.raises(SftlabError, match=r"cannot tell the format from the columns \['answer', 'question'\]"):
        load_conversations(f)
    with pytest.raises(SftlabError, match="unknown format 'chatgpt'"):
        load_conversations(f, "chatgpt")
    with pytest.raises(SftlabError, match="missing.json: data file not found"):
        load_conversations(tmp_path / "missing.json")
    with pytest.raises(SftlabError, match="unsupported file type '.txt'"):
        (tmp_path / "a.txt").write_text("x")
        load_conversations(tmp_path / "a.txt")


# ---- hostile and odd input (issue 25's rounds) ----

@pytest.mark.parametrize("extra", ["", '{"instruction": "x", "input": "", "output": "y", "z": 1}'])
def test_a_null_line_is_rejected_not_lost(tmp_path, extra):
    # The second variant has a type change between rows, which once sent the file to a fallback reader.
    f = _lines(tmp_path / "d.jsonl", json.dumps(ALPACA), "null", json.dumps(ALPACA), *( [extra] if extra else []))
    with pytest.raises(SftlabError, match=r"d.jsonl, row 2: must be an object, got null"):
        load_conversations(f)
    loaded = load_conversations(f, on_error="skip")
    assert loaded.rows == (4 if extra else 3) and len(loaded.conversations) == loaded.rows - 1
    assert [(r.row, r.reason) for r in loaded.rejects] == [(2, "must be an object, got null")]
    assert _accounted(loaded) == list(range(1, loaded.rows + 1))


def test_a_stray_key_in_one_row_blames_that_row_only(tmp_path):
    f = _lines(tmp_path / "d.jsonl", *[json.dumps(ALPACA)] * 5, json.dumps({**ALPACA, "messages": "oops"}))
    loaded = load_conversations(f, on_error="skip")
    assert loaded.format == "alpaca" and len(loaded.conversations) == 6 and not loaded.rejects
    mixed = _lines(tmp_path / "m.jsonl", *[json.dumps(ALPACA)] * 5, json.dumps({"messages": "oops"}))
    loaded = load_conversations(mixed, on_error="skip")
    assert loaded.format == "alpaca" and len(loaded.conversations) == 5
    assert [r.row for r in loaded.rejects] == [6]


def test_csv_cells_none_na_nan_null_stay_text(tmp_path):
    f = tmp_path / "d.csv"
    f.write_text('instruction,input,output\nq1,,None\nq2,,NA\nq3,,NaN\nq4,,null\nq5,,"",\n'.replace(',\n', '\n'))
    loaded = load_conversations(f, on_error="skip")
    answers = [c.messages[-1].content for c in loaded.conversations]
    assert answers == ["None", "NA", "NaN", "null"]
    assert [(r.row, r.reason) for r in loaded.rejects] == [
        (5, "field 'output': is null (or an empty cell) (the format 'alpaca' was detected from the first row; "
            "set format to override)")]


@pytest.mark.parametrize(
    "content, reason",
    [
        (b'{"instruction": "q\\ud800", "input": "", "output": "a"}',
         ", row 2, field 'instruction': text holds a lone surrogate (U+D800), which is not Unicode"),
        (b'{"instruction": "q", "input": "", "output": "\xff\xfe"}', ": not valid UTF-8 (byte 45 of line 2)"),
        (b'{"instruction": "q", "input": "", "output": "a", "output": "b"}',
         ", row 2: key 'output' is given more than once"),
        (b"[" * 100_000 + b"]" * 100_000, ": line 2 is nested too deeply to read"),
        (b"[1, 2]", ", row 2: must be an object, got a list"),
    ],
)
def test_bad_rows_are_one_sentence_and_skippable(tmp_path, content, reason):
    f = _lines(tmp_path / "d.jsonl", json.dumps(ALPACA), content, json.dumps(ALPACA))
    with pytest.raises(SftlabError) as e:
        load_conversations(f)
    assert str(e.value) == f"{f}{reason}"
    loaded = load_conversations(f, on_error="skip")
    assert len(loaded.conversations) == 2 and [r.row for r in loaded.rejects] == [2]
    assert _accounted(loaded) == [1, 2, 3]


def test_bad_rows_through_the_cli_are_one_sentence(tmp_path, cli):
    f = _lines(tmp_path / "d.jsonl", json.dumps(ALPACA), b'{"instruction": "q", "input": "", "output": "\xff"}')
    for args in (["inspect", "--model", QWEN, "--template", "chatml", "--data", str(f)],
                 ["data", "check", str(f), "--model", QWEN, "--template", "chatml", "--no-clusters"]):
        r = cli(*args)
        assert "Traceback" not in r.stderr, r.stderr[-2000:]
        if args[0] == "inspect":
            assert r.returncode == 2 and "d.jsonl: not valid UTF-8 (byte 45 of line 2)" in " ".join(r.stderr.split())


def test_invalid_utf8_in_a_json_file_names_the_line(tmp_path):
    f = tmp_path / "d.json"
    f.write_bytes(b'[{"instruction": "q", "input": "", "output": "a"},\n {"instruction": "\xc3(", "output": "b"}]')
    with pytest.raises(SftlabError, match=r"d.json: not valid UTF-8 \(byte 69, line 2\)"):
        load_conversations(f)


def test_a_jsonl_holding_one_list_says_so(tmp_path):
    f = _lines(tmp_path / "d.jsonl", json.dumps([ALPACA, ALPACA]))
    with pytest.raises(SftlabError, match="no row is a JSON object \\(row 1 is a list\\)"):
        load_conversations(f)


def test_null_and_absent_fields_are_told_apart(tmp_path):
    f = _lines(tmp_path / "d.jsonl", json.dumps(ALPACA), json.dumps({"instruction": "q", "output": None}),
               json.dumps({"instruction": "q"}))
    loaded = load_conversations(f, fmt="alpaca", on_error="skip")
    assert [(r.row, r.reason) for r in loaded.rejects] == [
        (2, "field 'output': is null (or an empty cell)"), (3, "field 'output': missing field")]


def test_an_unreadable_csv_is_one_sentence_without_the_libraries_log(tmp_path, cli):
    f = tmp_path / "d.csv"
    f.write_text("instruction,input,output\nq,,a\nq,,a,extra,cells\n")
    r = cli("inspect", "--model", QWEN, "--template", "chatml", "--data", str(f))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "ERROR" not in r.stderr and f"{f}: cannot be read as csv" in " ".join(r.stderr.split())


@pytest.mark.parametrize("tools, field", [({"type": "function"}, "tools"), ([{"type": "function"}], "tools[0]"),
                                           (["get_weather"], "tools[0]"), ([{"name": ""}], "tools[0]")])
def test_tools_must_be_a_list_of_named_function_schemas(tmp_path, tools, field):
    row = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "tools": tools}
    f = _lines(tmp_path / "d.jsonl", json.dumps(row))
    with pytest.raises(SftlabError, match=f"d.jsonl, row 1, field '{re.escape(field)}': must be"):
        load_conversations(f)
    good = {**row, "tools": [{"name": "get_weather", "parameters": {"type": "object"}}]}
    f = _lines(tmp_path / "g.jsonl", json.dumps(good))
    assert load_conversations(f).conversations[0].tools == [{"type": "function", "function": good["tools"][0]}]


def test_the_rejects_file_takes_a_row_with_a_lone_surrogate(tmp_path, cli):
    f = _lines(tmp_path / "d.jsonl", json.dumps(ALPACA), b'{"instruction": "q\\ud800", "input": "", "output": "a"}')
    rejects = tmp_path / "rej.jsonl"
    r = cli("inspect", "--model", QWEN, "--template", "chatml", "--data", f, "--on-error", "skip", "--rejects", rejects)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    (line,) = rejects.read_text(encoding="utf-8").splitlines()
    assert "\\ud800" in line
    assert json.loads(line)["record"]["instruction"] == "q\ud800"  # the row, as it was, reads back


def test_jsonl_rows_are_numbered_by_line(tmp_path):
    f = _lines(tmp_path / "d.jsonl", json.dumps(ALPACA), "", "   ", "", json.dumps({"instruction": "q"}))
    with pytest.raises(SftlabError, match=r"d.jsonl, row 5, field 'output': missing field"):
        load_conversations(f)
    loaded = load_conversations(f, on_error="skip")
    assert loaded.rows == 2 and [c.row for c in loaded.conversations] == [1] and [r.row for r in loaded.rejects] == [5]


def test_cr_only_line_endings_are_lines(tmp_path):
    f = tmp_path / "mac.jsonl"
    f.write_bytes(b"\r".join(json.dumps({**ALPACA, "output": f"a{i}"}).encode() for i in range(3)) + b"\r")
    loaded = load_conversations(f)
    assert [c.messages[-1].content for c in loaded.conversations] == ["a0", "a1", "a2"]
    assert [c.row for c in loaded.conversations] == [1, 2, 3]


def test_a_number_of_more_digits_than_python_reads_is_one_sentence(tmp_path):
    """json.loads refuses an integer of more than 4,300 digits with a ValueError that is no JSONDecodeError."""
    big = '{"text": "ok", "n": 1' + "0" * 5000 + "}"
    f = tmp_path / "x.jsonl"
    f.write_text(json.dumps({"text": "a"}) + "\n" + big + "\n")
    reason = "line 2 cannot be read as JSON (Exceeds the limit (4300 digits) for integer string conversion: value has 5001 digits)"
    with pytest.raises(SftlabError) as e:
        load_conversations(f)
    assert str(e.value) == f"{f}: {reason}"
    loaded = load_conversations(f, on_error="skip")
    assert [c.row for c in loaded.conversations] == [1] and [(r.row, r.reason) for r in loaded.rejects] == [(2, reason)]
    g = tmp_path / "x.json"
    g.write_text("[" + big + "]")
    with pytest.raises(SftlabError) as e:
        load_conversations(g)
    assert str(e.value) == (f"{g}: cannot be read as JSON (Exceeds the limit (4300 digits) for integer string "
                            "conversion: value has 5001 digits)")


def test_reading_csv_parquet_and_saved_datasets_writes_nothing_under_home(tmp_path):
    """The datasets library's cache goes to $SFTLAB_HOME/datasets, never ~/.cache/huggingface (a fresh process:
    datasets fixes its default cache folder from HOME when it is imported)."""
    import subprocess
    import sys

    import datasets

    data = tmp_path / "data"
    ds = datasets.Dataset.from_list([{"instruction": "i", "input": "", "output": "o"}])
    ds.to_csv(str(data / "d.csv"), index=False)
    ds.to_parquet(str(data / "d.parquet"))
    ds.save_to_disk(str(data / "saved"))
    home, sftlab_home = tmp_path / "home", tmp_path / "sftlab"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "XDG_"))}
    env.update(HOME=str(home), SFTLAB_HOME=str(sftlab_home))
    code = ("import sys; from sftlab.data.load import load_conversations\n"
            "print([len(load_conversations(p).conversations) for p in sys.argv[1:]])")
    r = subprocess.run([sys.executable, "-c", code, str(data / "d.csv"), str(data / "d.parquet"), str(data / "saved")],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "[1, 1, 1]", r.stderr[-2000:]
    assert list(home.rglob("*")) == []
    assert {p.name for p in (sftlab_home / "datasets").iterdir() if p.is_dir()} == {"csv", "parquet"}


DEEP_TOOLS = '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "tools": [' \
    + '{"a": ' * 600 + "1" + "}" * 600 + "]}"
TOO_DEEP = "field 'tools': is nested more than 64 levels deep (sftlab reads JSON up to 64 levels)"


def test_a_field_nested_600_deep_is_one_sentence_in_jsonl_and_json(tmp_path):
    # (600 levels parse, but the recursive code behind them did not: a RecursionError in train, chat and export)
    good = json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})
    f = _lines(tmp_path / "d.jsonl", good, DEEP_TOOLS)
    with pytest.raises(SftlabError) as e:
        load_conversations(f)
    assert str(e.value) == f"{f}, row 2, {TOO_DEEP}"
    loaded = load_conversations(f, on_error="skip")
    assert [(r.row, r.reason) for r in loaded.rejects] == [(2, TOO_DEEP)] and len(loaded.conversations) == 1
    j = tmp_path / "d.json"
    j.write_text(f"[{good}, {DEEP_TOOLS}]", encoding="utf-8")
    with pytest.raises(SftlabError) as e:
        load_conversations(j)
    assert str(e.value) == f"{j}, row 2, {TOO_DEEP}"


def test_nesting_up_to_the_bound_is_read(tmp_path):
    # tools: a list (1) of a schema (2) whose parameters nest 62 objects (64 levels in all): read; 63 (65): refused
    row = ('{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], '
           '"tools": [{"name": "f", "parameters": %s}]}')
    f = _lines(tmp_path / "d.jsonl", row % ('{"a": ' * 62 + "1" + "}" * 62), row % ('{"a": ' * 63 + "1" + "}" * 63))
    loaded = load_conversations(f, on_error="skip")
    assert [(r.row, r.reason) for r in loaded.rejects] == [(2, TOO_DEEP)]


def test_a_parquet_value_nested_too_deeply_is_one_sentence(tmp_path):
    # Arrow's own limit keeps nested lists shallower than the bound (its sentence says so); JSON text in a string
    # column is parsed as a CSV cell is, and bounded the same way.
    import pyarrow as pa
    import pyarrow.parquet as pq

    value: object = "x"
    for _ in range(70):
        value = [value]
    pq.write_table(pa.table({"instruction": ["q"], "output": ["a"], "history": [value]}), tmp_path / "d.parquet")
    with pytest.raises(SftlabError, match=r"d.parquet: cannot be read as parquet \(Parquet schema too deeply nested"):
        load_conversations(tmp_path / "d.parquet")
    pq.write_table(pa.table({"instruction": ["q"], "output": ["a"], "tools": ["[" * 70 + "]" * 70]}),
                   tmp_path / "t.parquet")
    with pytest.raises(SftlabError) as e:
        load_conversations(tmp_path / "t.parquet")
    assert str(e.value) == (f"{tmp_path / 't.parquet'}, row 1, field 'tools': is JSON nested more than 64 levels "
                            "deep (sftlab reads JSON up to 64 levels)")


def test_long_keys_and_control_characters_in_a_sentence_are_shown_short(tmp_path):
    key = json.dumps("k\x1b[31m" + "x" * 10_000)
    f = _lines(tmp_path / "d.jsonl", '{"instruction": "q", "output": "a", %s: 1, %s: 2}' % (key, key))
    with pytest.raises(SftlabError) as e:
        load_conversations(f)
    assert str(e.value) == f"{f}, row 1: key 'k\\x1b[31m" + "x" * 54 + "…' is given more than once"


def test_an_unknown_row_shape_lists_few_columns_shortly(tmp_path):
    row = {f"{'c' * 100}{i:03d}": 1 for i in range(300)}
    f = _lines(tmp_path / "d.jsonl", json.dumps(row))
    with pytest.raises(SftlabError) as e:
        load_conversations(f)
    listed = str(["c" * 40 + "…"] * 10)
    assert str(e.value) == (f"{f}: cannot tell the format from the columns {listed} and 290 more; set format to one "
                            "of alpaca, sharegpt, messages, prompt-completion, text")


def test_a_row_too_deep_goes_to_the_rejects_file_as_its_json_text(tmp_path):
    # (the writers of rejects files recurse per level: a 900-deep record was a RecursionError there)
    from sftlab.data.load import write_rejects

    row = '{"instruction": "q", "output": "a", "history": ' + "[" * 900 + "]" * 900 + "}"
    f = tmp_path / "d.json"
    f.write_text(f"[{row}]", encoding="utf-8")
    loaded = load_conversations(f, on_error="skip")
    write_rejects(loaded.rejects, tmp_path / "rejects.jsonl")
    (line,) = (tmp_path / "rejects.jsonl").read_text(encoding="utf-8").splitlines()
    assert json.loads(line) == {"file": str(f), "row": 1, "record": row, "reasons": [
        {"check": "invalid_row", "reason": "field 'history': is nested more than 64 levels deep (sftlab reads JSON "
                                           "up to 64 levels)"}]}


def test_jsonl_in_a_json_file_is_named_so_even_with_a_line_separator_in_a_string(tmp_path):
    """A raw U+2028 inside a JSON string is no line break (str.splitlines would split there)."""
    from sftlab.data.load import read_rows

    f = tmp_path / "rows.json"
    f.write_text('{"instruction": "a\u2028b", "input": "", "output": "c"}\n{"instruction": "d", "input": "", "output": "e"}\n',
                 encoding="utf-8")
    with pytest.raises(SftlabError, match=r"name the file \.jsonl$"):
        read_rows(f)
