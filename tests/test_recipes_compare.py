"""sftlab.recipes.source_templates (the ids and labels LLaMA-Factory, axolotl and TRL train) and
sftlab.recipes.compare (how they differ from sftlab's), on the real Qwen2, Llama 3, Llama 2 and GPT-2 tokenizers.

Expected ids are written out by hand from the tools' code (hiyouga/LLaMA-Factory ff6d4d12, axolotl-ai-cloud/axolotl
067b021c, huggingface/trl f2cd5771; the lines are cited in sftlab/recipes/source_templates.py) and checked against
the text they must decode to."""

from __future__ import annotations

import json

import pytest
from helpers import tokenizer

from sftlab.config.data import DataSettings
from sftlab.data.conversation import Conversation, Message
from sftlab.errors import SftlabError
from sftlab.recipes.compare import compare
from sftlab.recipes.source_templates import SourceSkips, encode_as_source


def two_turns(system: str | None = None) -> Conversation:
    msgs = [Message("user", "Hi"), Message("assistant", "Hello!"), Message("user", "2+2?"), Message("assistant", "4")]
    return Conversation(([Message("system", system)] if system else []) + msgs)


def trained(labels: list[int]) -> list[int]:
    return [i for i, x in enumerate(labels) if x != -100]


def kinds(result) -> list[tuple[str, int]]:
    return [(d.kind, d.count) for d in result.differences]


# Qwen2's ids: <|im_start|> 151644, <|im_end|> 151645, "\n" 198, "system" 8948, "user" 872, "assistant" 77091,
# "Hi" 13048, "Hello" 9707, "!" 0, "2" 17, "+" 10, "?" 30, "4" 19.
QWEN_DEFAULT_SYSTEM = [2610, 525, 1207, 16948, 11, 3465, 553, 54364, 14817, 13, 1446, 525, 264, 10950, 17847, 13]


def test_llamafactory_qwen_two_turns_by_hand():
    # template.py lines 2041-2054: format_system "<|im_start|>system\n{{content}}<|im_end|>\n" with default_system
    # "You are Qwen, created by Alibaba Cloud. You are a helpful assistant." (no system message given), format_user
    # "<|im_start|>user\n{{content}}<|im_end|>\n<|im_start|>assistant\n", format_assistant "{{content}}<|im_end|>\n".
    # supervised.py _encode_data_example: each prompt masked, each answer (its slot whole) trained.
    tok = tokenizer("qwen2")
    ids, labels = encode_as_source("llamafactory", "qwen", two_turns(), tok)
    assert ids == ([151644, 8948, 198] + QWEN_DEFAULT_SYSTEM + [151645, 198,
                   151644, 872, 198, 13048, 151645, 198, 151644, 77091, 198,
                   9707, 0, 151645, 198,
                   151644, 872, 198, 17, 10, 17, 30, 151645, 198, 151644, 77091, 198,
                   19, 151645, 198])
    assert tok.decode(ids) == (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"
        "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n")
    # <|im_end|> AND the "\n" after it are trained: both are in format_assistant's slot.
    assert trained(labels) == [30, 31, 32, 33, 46, 47, 48]
    assert [labels[i] for i in trained(labels)] == [9707, 0, 151645, 198, 19, 151645, 198]


def test_llamafactory_qwen_options_mask_history_and_train_on_prompt():
    tok = tokenizer("qwen2")
    _, labels = encode_as_source("llamafactory", "qwen", two_turns(), tok, mask_history=True)
    assert trained(labels) == [46, 47, 48]  # the last answer only
    ids, labels = encode_as_source("llamafactory", "qwen", two_turns(), tok, train_on_prompt=True)
    assert labels == ids
    with pytest.raises(SftlabError, match="mask_history together with train_on_prompt"):
        encode_as_source("llamafactory", "qwen", two_turns(), tok, mask_history=True, train_on_prompt=True)


def test_llamafactory_qwen_against_qwen2s_own_template():
    # Qwen2's template (tests/fixtures/tokenizers/qwen2) writes "You are a helpful assistant" where LLaMA-Factory's
    # qwen writes its own default; sftlab trains "<|im_end|>" but not the "\n" after it.
    result = compare("llamafactory", "qwen", [two_turns()], tokenizer("qwen2"), DataSettings())
    assert kinds(result) == [("system_prompt", 1), ("newline_after_end_trained", 2)]
    system, newline = result.differences
    assert (system.source_text, system.sftlab_text) == (
        "You are Qwen, created by Alibaba Cloud. You are a helpful as…", "You are a helpful assistant")
    assert (newline.source_text, newline.source_trained, newline.sftlab_trained) == ("\\n", 2, 0)
    row = result.conversations[0]
    assert (row.source_tokens, row.source_trained, row.sftlab_tokens, row.sftlab_trained) == (49, 7, 38, 5)
    assert result.lines() == [
        "LLaMA-Factory template 'qwen' against sftlab (the model's own template): different on 1/1 conversations",
        "conversation 1: system_prompt: LLaMA-Factory writes 'You are Qwen, created by Alibaba Cloud. You are a "
        "helpful as…' where sftlab writes 'You are a helpful assistant'",
        "conversation 1: newline_after_end_trained (2×): '\\n' is trained by LLaMA-Factory, not by sftlab",
        "conversation 1: trained tokens: LLaMA-Factory 7 of 49, sftlab 5 of 38",
        "sftlab keeps the model's own template and its masks (docs/data.md, \"The masking contract\")",
    ]
    assert json.loads(json.dumps(result.to_dict()))["differences"][1]["kind"] == "newline_after_end_trained"


def test_llamafactory_qwen_against_sftlabs_qwen_differs_only_in_the_newline():
    # sftlab's built-in qwen (Qwen2.5's template) has LLaMA-Factory's default system prompt and tool format.
    tools = [{"type": "function", "function": {"name": "add", "description": "Add", "parameters": {
        "type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}}}]
    call = [{"type": "function", "function": {"name": "add", "arguments": {"a": 1}}}]
    conv = Conversation([Message("user", "Add 1"), Message("assistant", "", tool_calls=call), Message("tool", "2"),
                         Message("assistant", "It is 2.")], tools=tools)
    tok = tokenizer("qwen2")
    ids, labels = encode_as_source("llamafactory", "qwen", conv, tok)
    text = tok.decode(ids)
    # QwenToolUtils.function_formatter in format_function "{{content}}<|im_end|>\n"; format_observation's
    # <tool_response> block inside a user turn.
    assert ('<|im_start|>assistant\n<tool_call>\n{"name": "add", "arguments": {"a": 1}}\n</tool_call><|im_end|>\n'
            "<|im_start|>user\n<tool_response>\n2\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
            "It is 2.<|im_end|>\n") in text
    assert tok.decode([x for x in labels if x != -100]) == (
        '<tool_call>\n{"name": "add", "arguments": {"a": 1}}\n</tool_call><|im_end|>\nIt is 2.<|im_end|>\n')
    result = compare("llamafactory", "qwen", [conv, two_turns()], tok, DataSettings(template="qwen"))
    assert kinds(result) == [("newline_after_end_trained", 2), ("newline_after_end_trained", 2)]


def test_llamafactory_chatml_writes_tools_in_its_default_format():
    # chatml (template.py lines 778-787) sets no format_tools / format_function: DefaultToolUtils (tool_utils.py
    # lines 149-192) writes the definitions into the system turn and the call as "Action: …\nAction Input: …".
    tools = [{"name": "add", "description": "Add", "parameters": {
        "type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}}]
    call = [{"type": "function", "function": {"name": "add", "arguments": {"a": 1}}}]
    conv = Conversation([Message("user", "Add 1"), Message("assistant", "", tool_calls=call), Message("tool", "2"),
                         Message("assistant", "It is 2.")], tools=tools)
    ids, _ = encode_as_source("llamafactory", "chatml", conv, tokenizer("qwen2"))
    assert tokenizer("qwen2").decode(ids) == (
        "<|im_start|>system\nYou have access to the following tools:\n> Tool Name: add\nTool Description: Add\n"
        "Tool Args:\n  - a (integer, required): \n\nUse the following format if using a tool:\n```\n"
        "Action: tool name (one of [add])\nAction Input: the input to the tool, in a JSON format representing the "
        'kwargs (e.g. ```{"input": "hello world", "num_beams": 5}```)\n```\n<|im_end|>\n'
        "<|im_start|>user\nAdd 1<|im_end|>\n<|im_start|>assistant\n"
        'Action: add\nAction Input: {"a": 1}<|im_end|>\n<|im_start|>tool\n2<|im_end|>\n'
        "<|im_start|>assistant\nIt is 2.<|im_end|>\n")


def test_llamafactory_llama3_equals_sftlabs_llama3():
    # template.py lines 1481-1506: BOS prefix, header slots, "{{content}}<|eot_id|>" answers (no newline after).
    # Llama 3.0's vocabulary has no <|eom_id|>: LLaMA-Factory adds it, which changes no conversation without it.
    tok = tokenizer("llama3")
    ids, labels = encode_as_source("llamafactory", "llama3", two_turns(), tok)
    assert ids == [128000, 128006, 882, 128007, 271, 13347, 128009, 128006, 78191, 128007, 271,
                   9906, 0, 128009,
                   128006, 882, 128007, 271, 17, 10, 17, 30, 128009, 128006, 78191, 128007, 271,
                   19, 128009]
    assert tok.decode(ids) == (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
        "4<|eot_id|>")
    assert trained(labels) == [11, 12, 13, 27, 28]
    result = compare("llamafactory", "llama3", [two_turns(), two_turns("Be brief.")], tok,
                     DataSettings(template="llama3"))
    assert result.differences == []
    assert result.lines()[0] == ("LLaMA-Factory template 'llama3' against sftlab (template 'llama3'): identical on "
                                 "2/2 conversations")


def test_llamafactory_alpaca_trains_the_blank_line_after_eos():
    # template.py lines 716-724: format_assistant ["{{content}}", {"eos_token"}, "\n\n"]; each slot is tokenized on
    # its own, so the default system prompt's closing "\n\n" is one token (628) where GPT-2 cuts sftlab's one text
    # "…request.\n\n### Instruction" as "\n" "\n###"… (a seam).
    tok = tokenizer("gpt2")
    conv = Conversation([Message("user", "Hi"), Message("assistant", "Hello")])
    ids, labels = encode_as_source("llamafactory", "alpaca", conv, tok)
    assert tok.decode(ids) == ("Below is an instruction that describes a task. Write a response that appropriately "
                               "completes the request.\n\n### Instruction:\nHi\n\n### Response:\nHello<|endoftext|>\n\n")
    assert [labels[i] for i in trained(labels)] == [15496, 50256, 628]
    result = compare("llamafactory", "alpaca", [conv], tok, DataSettings(template="alpaca"))
    assert kinds(result) == [("newline_after_end_trained", 1), ("seam_tokens", 1)]
    assert (result.differences[1].source_text, result.differences[1].sftlab_text) == ("'\\n\\n'", "'\\n' '\\n'")


def test_llamafactory_llama2_tokenizes_each_slot_apart():
    # template.py lines 1463-1468 (Llama2Template): BOS and "[INST] {{content}} [/INST]" per user turn, the answer
    # "{{content}}" then EOS; Llama 2's tokenizer starts every separately tokenized slot with a word start ("▁").
    tok = tokenizer("llama2")
    conv = Conversation([Message("user", "Hi"), Message("assistant", "Hello")])
    ids, labels = encode_as_source("llamafactory", "llama2", conv, tok)
    assert tok.convert_ids_to_tokens(ids) == ["<s>", "▁[", "INST", "]", "▁Hi", "▁[", "/", "INST", "]",
                                              "▁Hello", "</s>"]
    assert trained(labels) == [9, 10]


def test_llamafactory_qwen3_trains_an_empty_thought():
    # ReasoningTemplate.encode_multiturn (enable_thinking on, the default): an answer without <think> gets
    # "<think>\n\n</think>\n\n" in front, trained; with enable_thinking false it goes to the prompt.
    tok = tokenizer("qwen2")
    conv = Conversation([Message("user", "Hi"), Message("assistant", "Hello!")])
    ids, labels = encode_as_source("llamafactory", "qwen3", conv, tok)
    assert tok.decode([x for x in labels if x != -100]) == "<think>\n\n</think>\n\nHello!<|im_end|>\n"
    _, labels = encode_as_source("llamafactory", "qwen3", conv, tok, enable_thinking=False)
    assert tok.decode([x for x in labels if x != -100]) == "Hello!<|im_end|>\n"
    result = compare("llamafactory", "qwen3", [conv], tok, DataSettings())
    assert kinds(result) == [("system_prompt", 1), ("newline_after_end_trained", 1), ("reasoning", 1)]


def test_llamafactory_skips_what_its_converter_skips():
    tok = tokenizer("qwen2")
    with pytest.raises(SourceSkips, match="does not end with an assistant answer"):
        encode_as_source("llamafactory", "qwen", Conversation([Message("user", "Hi")]), tok)
    two_users = Conversation([Message("user", "a"), Message("user", "b"), Message("assistant", "c")])
    result = compare("llamafactory", "qwen", [two_users], tok, DataSettings())
    assert [d.note for d in result.differences] == [
        "LLaMA-Factory skips it: message 2 (user) breaks its alternation of user and assistant turns"]


def test_axolotl_train_on_eos_turn_and_last():
    # chat_template.py _tokenize_single_prompt: each assistant turn's content trained (find_turn), and the end-of-turn
    # token within 3 tokens after it: every trainable turn's ("turn", the default) or only the last one ("last").
    tok = tokenizer("qwen2")
    conv = two_turns("Be brief.")
    ids, labels = encode_as_source("axolotl", "chatml", conv, tok, eot_tokens=["<|im_end|>"])
    assert ids == [151644, 8948, 198, 3430, 9814, 13, 151645, 198,
                   151644, 872, 198, 13048, 151645, 198, 151644, 77091, 198, 9707, 0, 151645, 198,
                   151644, 872, 198, 17, 10, 17, 30, 151645, 198, 151644, 77091, 198, 19, 151645, 198]
    assert trained(labels) == [17, 18, 19, 33, 34]  # "Hello" "!" <|im_end|>, "4" <|im_end|>: never the "\n"
    _, labels = encode_as_source("axolotl", "chatml", conv, tok, eot_tokens=["<|im_end|>"], train_on_eos="last")
    assert trained(labels) == [17, 18, 33, 34]
    turn = compare("axolotl", "chatml", [conv], tok, DataSettings(), source_options={"eot_tokens": ["<|im_end|>"]})
    assert turn.differences == [] and turn.conversations[0].identical
    last = compare("axolotl", "chatml", [conv], tok, DataSettings(),
                   source_options={"eot_tokens": ["<|im_end|>"], "train_on_eos": "last"})
    assert [(d.kind, d.source_text, d.source_trained, d.sftlab_trained) for d in last.differences] == [
        ("end_of_turn_trained", "<|im_end|>", 0, 1)]
    assert last.lines()[1] == ("conversation 1: end_of_turn_trained: '<|im_end|>' is trained by sftlab, not by "
                               "axolotl")


def test_axolotl_looks_for_the_tokenizers_eos_by_default():
    # eot_tokens unset: axolotl looks for the tokenizer's EOS after each turn; this Qwen2 tokenizer's EOS is
    # <|endoftext|>, which ChatML never writes, so no end of turn is trained.
    tok = tokenizer("qwen2")
    _, labels = encode_as_source("axolotl", "chatml", two_turns("Be brief."), tok)
    assert trained(labels) == [17, 18, 33]
    result = compare("axolotl", "chatml", [two_turns("Be brief.")], tok, DataSettings())
    assert kinds(result) == [("end_of_turn_trained", 2)]


def test_axolotl_qwen_25_leaves_reasoning_out():
    # axolotl gives reasoning as reasoning_content, which qwen_25.jinja never reads; sftlab writes it into the answer.
    tok = tokenizer("qwen2")
    conv = Conversation([Message("user", "Hi"), Message("assistant", "Hello!", reasoning="Greet back.")])
    result = compare("axolotl", "qwen_25", [conv], tok, DataSettings(template="qwen"),
                     source_options={"eot_tokens": ["<|im_end|>"]})
    assert [(d.kind, d.source_text, d.sftlab_text) for d in result.differences] == [
        ("reasoning", "", "<think>\\nGreet back.\\n</think>\\n\\n")]


def test_trl_trains_every_token_by_default():
    tok = tokenizer("qwen2")
    ids, labels = encode_as_source("trl", "model", two_turns(), tok)
    assert labels == ids and len(ids) == 38
    with pytest.raises(SftlabError, match=r"has no \{% generation %\} markers"):
        encode_as_source("trl", "model", two_turns(), tok, assistant_only_loss=True)
    result = compare("trl", "model", [two_turns()], tok, DataSettings())
    assert kinds(result) == [("newline_after_end_trained", 2), ("other", 1)]
    assert result.differences[1].note.startswith("31 tokens of the prompt (system and user turns, tool results, turn "
                                                 "markers) are trained by TRL, not by sftlab")


def test_what_is_not_reproduced_is_said():
    tok = tokenizer("qwen2")
    result = compare("llamafactory", "mistral", [two_turns()], tok, DataSettings())
    assert result.lines() == [
        "LLaMA-Factory template 'mistral' against sftlab (the model's own template): not compared: LLaMA-Factory's "
        "template 'mistral' is not reproduced here (reproduced: alpaca, chatml, default, empty, llama2, llama3, phi, "
        "qwen, qwen3, qwen3_nothink)"]
    assert compare("axolotl", "chatml", [two_turns()], tok, None,
                   source_options={"cutoff_len": 10}).not_compared == "cutoff_len: not an option this comparison knows"
    with pytest.raises(SftlabError, match="^mask_history is not an option of axolotl$"):
        encode_as_source("axolotl", "chatml", two_turns(), tok, mask_history=True)
    text_and_call = Conversation([Message("user", "a"), Message("assistant", "Let me add.", tool_calls=[
        {"type": "function", "function": {"name": "add", "arguments": {}}}]), Message("tool", "1"),
        Message("assistant", "1")])
    result = compare("llamafactory", "qwen", [text_and_call], tok, DataSettings())
    assert result.conversations[0].not_compared.startswith("LLaMA-Factory's function-call turn holds tool calls only")
    assert result.lines()[0].endswith("none of the 1 conversations could be compared")
