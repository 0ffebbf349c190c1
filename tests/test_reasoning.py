"""Reasoning traces and tool calls in data rows (sftlab/data/reasoning.py): what a row becomes, and how each real
chat template (tests/fixtures/templates/, from llama.cpp's models/templates/) is given them back. Expected texts
are literals written from reading each template."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sftlab.data.formats import convert_row
from sftlab.data.reasoning import UNCLOSED_TRACE
from sftlab.data.templates import ChatTemplate
from sftlab.errors import RowError

TEMPLATES = Path(__file__).parent / "fixtures" / "templates"


def real(name: str, **special: str) -> ChatTemplate:
    return ChatTemplate((TEMPLATES / f"{name}.jinja").read_text(encoding="utf-8"), name, special)


def messages_row(*messages, tools=None):
    row = {"messages": list(messages)}
    if tools is not None:
        row["tools"] = tools
    return row


@pytest.mark.parametrize("assistant", [
    {"role": "assistant", "content": "4", "reasoning_content": "\n2+2 is 4.\n"},
    {"role": "assistant", "content": "4", "reasoning": "2+2 is 4."},
    {"role": "assistant", "content": "<think>\n2+2 is 4.\n</think>\n\n4"},
    {"role": "assistant", "content": "  <think>2+2 is 4.</think>4"},
    {"role": "assistant", "content": "2+2 is 4.\n</think>\n\n4"},  # DeepSeek-R1 output: the prompt opened the trace
])
def test_reasoning_as_a_field_or_inline_becomes_one_reasoning_part(assistant):
    conv = convert_row(messages_row({"role": "user", "content": "2+2?"}, assistant), "messages")
    m = conv.messages[1]
    assert (m.reasoning, m.content) == ("2+2 is 4.", "4")
    assert m.to_template_dict() == {"role": "assistant", "content": "4", "reasoning_content": "2+2 is 4."}


def test_rows_with_and_without_reasoning_mix_and_an_empty_trace_is_kept_empty():
    plain = convert_row(messages_row({"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}), "messages")
    empty = convert_row(messages_row({"role": "user", "content": "hi"},
                                     {"role": "assistant", "content": "<think>\n\n</think>\n\nyo"}), "messages")
    later = convert_row(messages_row({"role": "user", "content": "hi"},
                                     {"role": "assistant", "content": "yo <think> is a tag"}), "messages")
    assert (plain.messages[1].reasoning, plain.messages[1].content) == (None, "yo")
    assert (empty.messages[1].reasoning, empty.messages[1].content) == ("", "yo")
    assert (later.messages[1].reasoning, later.messages[1].content) == (None, "yo <think> is a tag")
    assert "reasoning_content" not in plain.messages[1].to_template_dict()


@pytest.mark.parametrize("assistant, field, message", [
    ({"role": "assistant", "content": "<think>never closed"}, "messages[1].content", UNCLOSED_TRACE),
    ({"role": "assistant", "content": "<think>a</think>b", "reasoning_content": "c"}, "messages[1].content",
     "has a <think> trace in its content as well as reasoning_content; keep one"),
    ({"role": "assistant", "content": "b", "reasoning_content": ["c"]}, "messages[1].reasoning_content",
     "must be a string, got a list"),
    ({"role": "assistant", "content": "b", "reasoning_content": "c", "reasoning": "d"}, "messages[1].reasoning",
     "gives both reasoning_content and reasoning; keep one"),
    ({"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{city: Paris}"}}]},
     "messages[1].tool_calls[0].function.arguments",
     "is a string but not JSON (Expecting property name enclosed in double quotes at character 1); give the "
     "arguments as an object or a JSON string"),
    ({"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "[1, 2]"}}]},
     "messages[1].tool_calls[0].function.arguments", "must be a JSON object of argument names to values, got a list"),
    ({"role": "assistant", "tool_calls": [{"function": {"name": "", "arguments": {}}}]},
     "messages[1].tool_calls[0].function.name", "must be the function's name (a non-empty string)"),
    ({"role": "assistant", "tool_calls": {"name": "f"}}, "messages[1].tool_calls",
     "must be a list of tool calls, got an object"),
    ({"role": "assistant", "tool_calls": ["f"]}, "messages[1].tool_calls[0]",
     "must be an object with 'function' (or 'name' and 'arguments'), got a string"),
])
def test_a_bad_trace_or_tool_call_is_a_row_error_naming_the_field(assistant, field, message):
    with pytest.raises(RowError) as e:
        convert_row(messages_row({"role": "user", "content": "q"}, assistant), "messages")
    assert (e.value.field, e.value.reason) == (field, message)


def test_tool_call_arguments_as_a_json_string_or_an_object_normalise_to_the_same_mapping():
    calls = [
        {"type": "function", "id": "call_1", "function": {"name": "weather", "arguments": '{"city": "Paris"}'}},
        {"type": "function", "function": {"name": "weather", "arguments": {"city": "Paris"}}},
        {"name": "time", "arguments": None},
    ]
    conv = convert_row(messages_row({"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": calls},
                                    {"role": "tool", "content": "21", "tool_call_id": "call_1"}), "messages")
    assert conv.messages[1].tool_calls == [
        {"type": "function", "function": {"name": "weather", "arguments": {"city": "Paris"}}, "id": "call_1"},
        {"type": "function", "function": {"name": "weather", "arguments": {"city": "Paris"}}},
        {"type": "function", "function": {"name": "time", "arguments": {}}},
    ]
    assert conv.messages[2].to_template_dict() == {"role": "tool", "content": "21", "tool_call_id": "call_1"}


def test_sharegpt_function_call_and_observation_map_to_the_same_shape():
    row = {"conversations": [
        {"from": "human", "value": "Weather in Paris?"},
        {"from": "function_call", "value": '{"name": "weather", "arguments": "{\\"city\\": \\"Paris\\"}"}'},
        {"from": "observation", "value": '{"temp": 21}'},
        {"from": "gpt", "value": "<think>It is 21.</think>21 °C."},
    ]}
    conv = convert_row(row, "sharegpt")
    assert [(m.role, m.content, m.reasoning) for m in conv.messages] == [
        ("user", "Weather in Paris?", None), ("assistant", "", None), ("tool", '{"temp": 21}', None),
        ("assistant", "21 °C.", "It is 21.")]
    assert conv.messages[1].tool_calls == [{"type": "function", "function": {"name": "weather", "arguments": {"city": "Paris"}}}]
    bad = {"conversations": [{"from": "human", "value": "q"}, {"from": "function_call", "value": '{"name": "f", "arguments": "x"}'}]}
    with pytest.raises(RowError) as e:
        convert_row(bad, "sharegpt")
    assert e.value.field == "conversations[1].value.arguments"


def test_glaive_tool_data_reads_whole():
    from helpers import SHARED_DATA

    rows = json.loads((SHARED_DATA / "glaive_toolcall_en_demo.json").read_text(encoding="utf-8"))
    convs = [convert_row(r, "sharegpt") for r in rows]
    calls = [c for conv in convs for m in conv.messages for c in (m.tool_calls or [])]
    assert len(convs) == 300 and len(calls) > 100
    assert all(isinstance(c["function"]["arguments"], dict) for c in calls)


# --- written back the way each template reads it --------------------------------------------------

QA = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4", "reasoning_content": "2+2 is 4."}]


def test_qwen3_reads_reasoning_content():
    assert real("Qwen-Qwen3-0.6B").render(QA) == (
        "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n<think>\n2+2 is 4.\n</think>\n\n4<|im_end|>\n")


def test_a_template_without_a_reasoning_field_gets_the_trace_inline():
    # DeepSeek-R1's template splits the content on </think> and keeps what follows (the newlines too): the trace is
    # history it drops.
    ds = real("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B", bos_token="<｜begin▁of▁sentence｜>")
    assert ds.render(QA) == "<｜begin▁of▁sentence｜><｜User｜>2+2?<｜Assistant｜>\n\n4<｜end▁of▁sentence｜>"
    llama = real("meta-llama-Llama-3.1-8B-Instruct", bos_token="<|begin_of_text|>")
    assert llama.render(QA).endswith(
        "<|start_header_id|>assistant<|end_header_id|>\n\n<think>\n2+2 is 4.\n</think>\n\n4<|eot_id|>")


def test_gpt_oss_reads_thinking():
    text = real("openai-gpt-oss-120b").render(QA)
    assert text.endswith("<|start|>assistant<|channel|>analysis<|message|>2+2 is 4.<|end|>"
                         "<|start|>assistant<|channel|>final<|message|>4<|return|>")


def test_tool_call_arguments_render_as_json_objects_in_each_family():
    calls = [{"type": "function", "id": "abcdefghi", "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}]
    msgs = [{"role": "user", "content": "Weather?"}, {"role": "assistant", "content": "", "tool_calls": calls}]
    # A request's JSON-string arguments are rendered as the object (Qwen2.5 writes `arguments | tojson`).
    assert real("Qwen-Qwen2.5-7B-Instruct").render(msgs).endswith(
        '<|im_start|>assistant\n<tool_call>\n{"name": "weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>\n')
    assert real("mistralai-Mistral-Nemo-Instruct-2407", eos_token="</s>").render(msgs).endswith(
        '[TOOL_CALLS][{"name": "weather", "arguments": {"city": "Paris"}, "id": "abcdefghi"}]</s>')


def test_a_sharegpt_trace_error_names_the_value_field():
    with pytest.raises(RowError) as e:
        convert_row({"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "<think>a"}]}, "sharegpt")
    assert (e.value.field, e.value.reason) == ("conversations[1].value", UNCLOSED_TRACE)
