"""Every field of every format type-checked before it is used: a wrong type is one sentence naming the file, the
row and the field (sftlab/data/formats.py reading through sftlab/data/fields.py), never a traceback."""

from __future__ import annotations

import json

import pytest

from helpers import FIXTURES
from sftlab.data.load import load_conversations
from sftlab.errors import SftlabError

QWEN = str(FIXTURES / "tokenizers" / "qwen2")
Q, A = {"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}
U, ASSISTANT = {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}
SHAREGPT_ROLES = "human, user, gpt, assistant, system, function_call, observation, tool"
WEIGHT_BOUND = "must be a non-negative finite number (at most 3.4e+38, the largest float32), got"


def call(**over):
    """An assistant message making one tool call, with `over` replacing parts of the call."""
    c = {"type": "function", "id": "c1", "function": {"name": "f", "arguments": {"x": 1}}}
    fn = {**c["function"], **over.pop("function", {})}
    return {"messages": [U, {"role": "assistant", "content": "", "tool_calls": [{**c, **over, "function": fn}]}]}


def gpt(**over):
    return {"conversations": [Q, {**A, **over}]}


def msg(**over):
    return {"messages": [U, {**ASSISTANT, **over}]}


ALPACA = {"instruction": "i", "output": "o"}

# (row, the field named, its reason): each a wrong type or value in one field, the rest of the row good.
WRONG = [
    # ShareGPT
    ({"conversations": [{"from": ["human"], "value": "q"}, A]}, "conversations[0].from",
     f"must be a string naming one of {SHAREGPT_ROLES}, got a list"),
    ({"conversations": [{"from": {"role": "human"}, "value": "q"}, A]}, "conversations[0].from",
     f"must be a string naming one of {SHAREGPT_ROLES}, got an object"),
    ({"conversations": [{"from": 1, "value": "q"}, A]}, "conversations[0].from",
     f"must be a string naming one of {SHAREGPT_ROLES}, got a number"),
    (gpt(value=["a"]), "conversations[1].value", "content must be a string, got a list"),
    (gpt(weight="2"), "conversations[1].weight", "must be a non-negative number, got a string"),
    (gpt(weight=True), "conversations[1].weight", "must be a non-negative number, got a boolean"),
    (gpt(weight=[1]), "conversations[1].weight", "must be a non-negative number, got a list"),
    (gpt(weight=float("nan")), "conversations[1].weight", f"{WEIGHT_BOUND} NaN"),
    (gpt(weight=float("inf")), "conversations[1].weight", f"{WEIGHT_BOUND} Infinity"),
    (gpt(weight=-0.5), "conversations[1].weight", f"{WEIGHT_BOUND} -0.5"),
    (gpt(weight=1e39), "conversations[1].weight", f"{WEIGHT_BOUND} 1e+39"),
    (gpt(weight=10 ** 60), "conversations[1].weight", f"{WEIGHT_BOUND} a number of 61 digits"),
    (gpt(train="yes"), "conversations[1].train", "must be true or false, got a string"),
    (gpt(train=1), "conversations[1].train", "must be true or false, got a number"),
    (gpt(reasoning_content=["t"]), "conversations[1].reasoning_content", "must be a string, got a list"),
    ({"conversations": [{**Q, "reasoning_content": "t"}, A]}, "conversations[0].reasoning_content",
     "only an assistant turn carries 'reasoning_content'; this message is a 'human' message"),
    ({"conversations": [Q, {"from": "function_call", "value": "call f"}]}, "conversations[1].value",
     "function call is not valid JSON (Expecting value at character 0)"),
    ({"conversations": [Q, {"from": "function_call", "value": '{"name": 5}'}]}, "conversations[1].value.name",
     "must be the function's name (a non-empty string)"),
    ({"conversations": [Q, A], "system": ["s"]}, "system", "content must be a string, got a list"),
    ({"conversations": {"from": "human"}}, "conversations", "must be a list of {from, value} turns, got an object"),
    ({"conversations": ["q", A]}, "conversations[0]", "must be an object with 'from' and 'value', got a string"),
    ({"conversations": "[{\"from\": \"human\""}, "conversations",
     "is text but not valid JSON (Expecting ',' delimiter at character 17)"),
    # messages
    (msg(tool_calls="get_weather()"), "messages[1].tool_calls", "must be a list of tool calls, got a string"),
    (msg(tool_calls={"name": "f"}), "messages[1].tool_calls", "must be a list of tool calls, got an object"),
    (msg(tool_calls=["f"]), "messages[1].tool_calls[0]",
     "must be an object with 'function' (or 'name' and 'arguments'), got a string"),
    ({"messages": [U, {"role": "assistant", "content": "", "tool_calls": [{"function": ["f"]}]}]},
     "messages[1].tool_calls[0].function", "must be an object with 'name' and 'arguments', got a list"),
    (call(function={"name": 5}), "messages[1].tool_calls[0].function.name",
     "must be the function's name (a non-empty string)"),
    (call(function={"name": ["f"]}), "messages[1].tool_calls[0].function.name",
     "must be the function's name (a non-empty string)"),
    (call(function={"arguments": [1]}), "messages[1].tool_calls[0].function.arguments",
     "must be a JSON object of argument names to values, got a list"),
    (call(function={"arguments": 3}), "messages[1].tool_calls[0].function.arguments",
     "must be a JSON object of argument names to values, got a number"),
    (call(function={"arguments": '{"x": ' + "9" * 5000 + "}"}), "messages[1].tool_calls[0].function.arguments",
     "is a string but not JSON (Exceeds the limit (4300 digits) for integer string conversion: value has 5000 "
     "digits); give the arguments as an object or a JSON string"),
    (call(type="code_interpreter"), "messages[1].tool_calls[0].type",
     "must be 'function' (the one kind of tool call templates render), got 'code_interpreter'"),
    (call(type=["function"]), "messages[1].tool_calls[0].type",
     "must be 'function' (the one kind of tool call templates render), got a list"),
    (call(id=7), "messages[1].tool_calls[0].id", "must be a string, got a number"),
    ({"messages": [{**U, "name": ["bob"]}, ASSISTANT]}, "messages[0].name", "must be a string, got a list"),
    ({"messages": [U, ASSISTANT, {"role": "tool", "content": "r", "tool_call_id": 1}, ASSISTANT]},
     "messages[2].tool_call_id", "must be a string, got a number"),
    ({"messages": [{**U, "tool_call_id": "c1"}, ASSISTANT]}, "messages[0].tool_call_id",
     "only a tool message carries 'tool_call_id'; this message is a 'user' message"),
    ({"messages": [{**U, "tool_calls": [{"function": {"name": "f"}}]}, ASSISTANT]}, "messages[0].tool_calls",
     "only an assistant message carries 'tool_calls'; this message is a 'user' message"),
    ({"messages": [{**U, "reasoning": "t"}, ASSISTANT]}, "messages[0].reasoning",
     "only an assistant message carries 'reasoning'; this message is a 'user' message"),
    (msg(reasoning=5), "messages[1].reasoning", "must be a string, got a number"),
    (msg(reasoning_content={"text": "t"}), "messages[1].reasoning_content", "must be a string, got an object"),
    (msg(weight="heavy"), "messages[1].weight", "must be a non-negative number, got a string"),
    (msg(weight=float("-inf")), "messages[1].weight", f"{WEIGHT_BOUND} -Infinity"),
    (msg(train="false"), "messages[1].train", "must be true or false, got a string"),
    ({"messages": [{"role": ["user"], "content": "q"}, ASSISTANT]}, "messages[0].role",
     "must be a string naming one of system, user, assistant, tool, got a list"),
    ({"messages": [{"role": "user", "content": [1]}, ASSISTANT]}, "messages[0].content[0]",
     "unsupported content part a number; only text parts are supported"),
    ({"messages": [{"role": "user", "content": [{"type": ["text"], "text": "q"}]}, ASSISTANT]},
     "messages[0].content[0]", "unsupported content part a list; only text parts are supported"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}, ASSISTANT]}, "messages[0].content[0]",
     "unsupported content part 'image_url'; only text parts are supported"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}, ASSISTANT]},
     "messages[0].content[0].text", "text part must have a string 'text', got a number"),
    ({"messages": [{"role": "user", "content": {"text": "q"}}, ASSISTANT]}, "messages[0].content",
     "content must be a string or a list of text parts, got an object"),
    ({"messages": ["q", ASSISTANT]}, "messages[0]", "must be an object with 'role' and 'content', got a string"),
    ({"messages": 3}, "messages", "must be a list of {role, content} messages, got a number"),
    # tools, in any format
    ({**msg(), "tools": [{"type": "retrieval", "function": {"name": "f"}}]}, "tools[0].type",
     "must be 'function' (the one kind of tool templates render), got 'retrieval'"),
    ({**msg(), "tools": [{"type": "function", "function": {"name": "f", "parameters": "{}"}}]},
     "tools[0].function.parameters", "must be a JSON schema object, got a string"),
    ({**msg(), "tools": [{"name": "f", "description": 3}]}, "tools[0].description", "must be a string, got a number"),
    ({**gpt(), "tools": "not json"}, "tools", "is text but not valid JSON (Expecting value at character 0)"),
    ({**ALPACA, "tools": {"name": "f"}}, "tools", "must be a list of function schemas, got an object"),
    # alpaca
    ({**ALPACA, "instruction": ["i"]}, "instruction", "content must be a string, got a list"),
    ({**ALPACA, "input": 5}, "input", "content must be a string, got a number"),
    ({**ALPACA, "output": {"text": "o"}}, "output", "content must be a string, got an object"),
    ({**ALPACA, "system": True}, "system", "content must be a string, got a boolean"),
    ({**ALPACA, "history": {"q": "a"}}, "history", "must be a list of [user, assistant] pairs, got an object"),
    ({**ALPACA, "history": 3}, "history", "must be a list of [user, assistant] pairs, got a number"),
    ({**ALPACA, "history": [["q", 5]]}, "history[0][1]", "content must be a string, got a number"),
    ({**ALPACA, "history": ["q"]}, "history[0]", "must be a [user, assistant] pair"),
    ({**ALPACA, "history": "[" * 100_000}, "history", "is text but not valid JSON (nested too deeply to read)"),
    # prompt-completion and text
    ({"prompt": {"role": "user"}, "completion": "c"}, "prompt", "content must be a string, got an object"),
    ({"prompt": "p", "completion": 5}, "completion", "content must be a string, got a number"),
    ({"prompt": "p", "completion": "c", "system": ["s"]}, "system", "content must be a string, got a list"),
    ({"text": ["t"]}, "text", "content must be a string, got a list"),
]


def _jsonl(path, *rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize("row, field, reason", WRONG, ids=[f"{i}-{f}" for i, (_, f, _) in enumerate(WRONG)])
def test_a_field_of_the_wrong_type_is_one_sentence_naming_file_row_and_field(tmp_path, row, field, reason):
    f = _jsonl(tmp_path / "d.jsonl", row)
    with pytest.raises(SftlabError) as e:
        load_conversations(f)
    assert str(e.value) == f"{f}, row 1, field '{field}': {reason}"
    # Skipped, it is a reject with the same reason, and nothing else is lost.
    loaded = load_conversations(f, on_error="skip")
    assert loaded.conversations == [] and [r.reason for r in loaded.rejects] == [f"field '{field}': {reason}"]


def test_the_values_that_are_right_are_read_as_given(tmp_path):
    """The good side of the same fields (the checks refuse only what is wrong): null is absent, weights of 0 and
    of whole numbers, names, ids and a bare function schema with its description and parameters."""
    rows = [
        {"conversations": [{**Q, "weight": None, "train": None}, {**A, "weight": 0, "train": True}]},
        {"messages": [{**U, "name": "bob"}, {**ASSISTANT, "weight": 2, "reasoning": None},
                      {"role": "tool", "content": "r", "tool_call_id": "c1", "name": "f"}, ASSISTANT],
         "tools": [{"name": "f", "description": "d", "parameters": {"type": "object"}}]},
    ]
    share, messages = load_conversations(_jsonl(tmp_path / "d.jsonl", rows[0])).conversations + \
        load_conversations(_jsonl(tmp_path / "e.jsonl", rows[1])).conversations
    assert [(m.train, m.weight) for m in share.messages] == [(None, None), (True, 0.0)]
    assert [(m.name, m.weight, m.tool_call_id) for m in messages.messages] == [
        ("bob", None, None), (None, 2.0, None), ("f", None, "c1"), (None, None, None)]
    assert isinstance(messages.messages[1].weight, float)
    assert messages.tools == [{"type": "function", "function": rows[1]["tools"][0]}]


@pytest.mark.parametrize("row, sentence", [
    ({"conversations": [{"from": ["human"], "value": "q"}, A]},
     f"row 1, field 'conversations[0].from': must be a string naming one of {SHAREGPT_ROLES}, got a list"),
    (msg(tool_calls="get_weather()"), "row 1, field 'messages[1].tool_calls': must be a list of tool calls, got a string"),
    (msg(weight=float("nan")), f"row 1, field 'messages[1].weight': {WEIGHT_BOUND} NaN"),
])
def test_the_cli_says_the_sentence_without_a_traceback(tmp_path, cli, row, sentence):
    f = _jsonl(tmp_path / "d.jsonl", row)
    r = cli("inspect", "--model", QWEN, "--template", "chatml", "--data", f)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert f"error: {f}, {sentence}" in " ".join(r.stderr.split())
    # data check reports the row as invalid (a report, not a refusal) and checks the rest.
    r = cli("data", "check", f, "--model", QWEN, "--template", "chatml", "--no-clusters", "--json")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    (invalid,) = [x for x in json.loads(r.stdout)["findings"] if x["check"] == "invalid_row"]
    assert (invalid["rows"], invalid["files"], invalid["details"]) == ([1], [str(f)], [{"reason": f"{f}, {sentence}"}])


@pytest.mark.parametrize("cell", ['[' + '{"a": ' * 600 + '1' + '}' * 600 + ']', "[" * 65 + "]" * 65])
def test_json_text_in_a_csv_cell_nested_too_deeply_is_one_sentence(tmp_path, cell):
    import csv

    f = tmp_path / "d.csv"
    with open(f, "w", newline="", encoding="utf-8") as out:
        w = csv.writer(out)
        w.writerow(["instruction", "output", "tools"])
        w.writerow(["q", "a", cell])
    with pytest.raises(SftlabError) as e:
        load_conversations(f)
    assert str(e.value) == (f"{f}, row 1, field 'tools': is JSON nested more than 64 levels deep (sftlab reads JSON "
                            "up to 64 levels)")


def test_echoed_values_are_short_and_on_one_line(tmp_path):
    role = "evil\n\x1b[2J" + "r" * 10_000
    f = _jsonl(tmp_path / "d.jsonl", {"messages": [{"role": role, "content": "q"}, ASSISTANT]})
    with pytest.raises(SftlabError) as e:
        load_conversations(f)
    assert str(e.value) == (f"{f}, row 1, field 'messages[0].role': unknown role 'evil\\n\\x1b[2J" + "r" * 51
                            + "…'; expected one of system, user, assistant, tool")
