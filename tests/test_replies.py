"""sftlab.inference.replies: a reply's reasoning, answer and tool calls, read per template family, whole or as
it streams."""

import json

import pytest

from sftlab.inference.replies import ReplyReader, opens_reasoning, read_reply, tool_family

TOOLS = ["get_weather", "get_time"]


def _calls(reply):
    return [(c.name, json.loads(c.arguments)) for c in reply.tool_calls]


def _streamed(text, *args, **kw):
    """The pieces of `text` fed one character at a time, merged by kind in order."""
    reader = ReplyReader(*args, **kw)
    pieces = [p for ch in text for p in reader.feed(ch)] + reader.finish()
    merged = []
    for p in pieces:
        if merged and p.kind == merged[-1][0] != "tool_call":
            merged[-1] = (p.kind, merged[-1][1] + p.text)
        else:
            merged.append((p.kind, p.call.name if p.call else p.text))
    return merged


def test_a_leading_think_block_is_the_reasoning():
    r = read_reply("<think>\nThe user greets me.\n</think>\n\nHello! How can I help?")
    assert (r.reasoning, r.content, r.tool_calls) == ("The user greets me.", "Hello! How can I help?", [])
    assert _streamed("<think>\nThe user greets me.\n</think>\n\nHello! How can I help?") == [
        ("reasoning", "The user greets me."), ("content", "Hello! How can I help?")]


def test_a_trace_the_prompt_opened_ends_at_the_closing_tag():
    text = "Two plus two is four.\n</think>\n\n2 + 2 = 4"
    r = read_reply(text, reasoning_open=True)
    assert (r.reasoning, r.content) == ("Two plus two is four.", "2 + 2 = 4")
    # Without the prompt's <think> the same text is all answer; an unclosed trace is all reasoning.
    assert read_reply(text).content == text
    assert read_reply("Thinking on and on", reasoning_open=True).reasoning == "Thinking on and on"
    assert read_reply("<think></think>\n\nPlain answer.").content == "Plain answer."


def test_hermes_calls_between_text():
    text = ('Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "巴黎"}}\n</tool_call>\n'
            '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>')
    r = read_reply(text, "hermes", TOOLS)
    assert r.content == "Let me check."
    assert _calls(r) == [("get_weather", {"city": "巴黎"}), ("get_time", {})]
    assert json.loads(r.tool_calls[0].arguments) == {"city": "巴黎"} and "巴黎" in r.tool_calls[0].arguments
    assert r.tool_calls[0].id.startswith("call_") and r.tool_calls[0].id != r.tool_calls[1].id
    assert _streamed(text, "hermes", TOOLS) == [("content", "Let me check."), ("tool_call", "get_weather"),
                                                 ("tool_call", "get_time")]


def test_reasoning_then_a_call():
    text = '<think>\nI need the weather.\n</think>\n\n<tool_call>\n{"name": "get_weather", "arguments": "{\\"city\\": \\"Oslo\\"}"}\n</tool_call>'
    r = read_reply(text, "hermes", TOOLS)
    assert (r.reasoning, r.content, _calls(r)) == ("I need the weather.", "", [("get_weather", {"city": "Oslo"})])


@pytest.mark.parametrize("text", [
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": \n</tool_call>',  # broken JSON
    '<tool_call>\n{"arguments": {"city": "Oslo"}}\n</tool_call>',  # no name
    '<tool_call>\n{"name": "rm_rf", "arguments": {}}\n</tool_call>',  # not a tool the request offered
    '<tool_call>\n{"name": "get_weather", "arguments": "not json"}\n</tool_call>',
    '<tool_call>\n{"name": "get_weather", "arguments": [1, 2]}\n</tool_call>',
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}',  # cut off before it closed
])
def test_a_call_that_does_not_parse_stays_text(text):
    r = read_reply(text, "hermes", TOOLS)
    assert (r.content, r.tool_calls) == (text, [])
    assert _streamed(text, "hermes", TOOLS) == [("content", text)]


def test_no_tools_offered_reads_no_calls():
    text = '<tool_call>\n{"name": "get_weather", "arguments": {}}\n</tool_call>'
    assert read_reply(text, "hermes", []).content == text
    assert read_reply(text, None, TOOLS).content == text


def test_llama3_a_bare_json_answer_is_a_call():
    r = read_reply('{"name": "get_weather", "parameters": {"city": "Paris"}}', "llama3", TOOLS)
    assert (r.content, _calls(r)) == ("", [("get_weather", {"city": "Paris"})])
    # JSON that is not a call, and text that merely starts like a call, stay the answer.
    assert read_reply('{"city": "Paris"}', "llama3", TOOLS).content == '{"city": "Paris"}'
    assert read_reply("It is sunny.", "llama3", TOOLS).content == "It is sunny."
    assert _streamed("It is sunny.", "llama3", TOOLS) == [("content", "It is sunny.")]


def test_mistral_both_forms():
    v3 = '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Rome"}}, {"name": "get_time", "arguments": {}}]'
    r = read_reply(v3, "mistral", TOOLS)
    assert (r.content, _calls(r)) == ("", [("get_weather", {"city": "Rome"}), ("get_time", {})])
    assert len(r.tool_calls[0].id) == 9 and r.tool_calls[0].id.isalnum()  # the only id Mistral's template takes back
    v11 = '[TOOL_CALLS]get_weather[ARGS]{"city": "Rome"}[TOOL_CALLS]get_time[ARGS]{}'
    assert _calls(read_reply(v11, "mistral", TOOLS)) == [("get_weather", {"city": "Rome"}), ("get_time", {})]
    assert read_reply("[TOOL_CALLS]get_weather{", "mistral", TOOLS).content == "[TOOL_CALLS]get_weather{"


def test_markers_split_across_pieces_are_found():
    reader = ReplyReader("hermes", TOOLS)
    pieces = reader.feed("Sure <tool") + reader.feed('_call>{"name": "get_time", "arguments": {}}</tool_') + \
        reader.feed("call> done") + reader.finish()
    assert [(p.kind, p.text or p.call.name) for p in pieces] == [("content", "Sure"), ("tool_call", "get_time"),
                                                                   ("content", " done")]


def test_families_and_opened_traces_from_real_templates():
    from pathlib import Path

    folder = Path(__file__).parent / "fixtures" / "templates"
    family = {f.name: tool_family(f.read_text()) for f in folder.glob("*.jinja")}
    assert family["Qwen-Qwen2.5-7B-Instruct.jinja"] == "hermes"
    assert family["Qwen-Qwen3-0.6B.jinja"] == "hermes"
    assert family["NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use.jinja"] == "hermes"
    assert family["meta-llama-Llama-3.1-8B-Instruct.jinja"] == "llama3"
    assert family["mistralai-Mistral-Nemo-Instruct-2407.jinja"] == "mistral"
    assert family["deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja"] is None
    assert opens_reasoning("<｜User｜>hi<｜Assistant｜><think>\n")
    assert not opens_reasoning("<|im_start|>assistant\n<think>\n\n</think>\n\n")
