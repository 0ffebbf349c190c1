"""Loading every format from every file type; bad input named by file, row and field."""

from __future__ import annotations

import json

import pytest

from conftest import SHARED_DATA
from sftlab.data.load import load_conversations
from sftlab.errors import SftlabError


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
