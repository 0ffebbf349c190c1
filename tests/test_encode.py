"""The masking contract (docs/data.md, "The masking contract") token for token, on real tokenizers and their
templates.

Expected token lists are literals, checked by hand against the rendered text: every trained run
decodes to exactly the answer (and its end-of-turn token) and nothing else.
"""

from __future__ import annotations

import json

import pytest

from helpers import tokenizer
from sftlab.data.conversation import Conversation, Message
from sftlab.data.encode import IGNORE_INDEX, Encoder
from sftlab.data.templates import ChatTemplate, resolve_template
from sftlab.errors import SftlabError


def conversation() -> Conversation:
    # Multi-turn, a system prompt, Chinese, emoji, leading and trailing spaces.
    return Conversation(
        [
            Message("system", "You are 小助手. "),
            Message("user", " 你好，介绍一下自己 😀"),
            Message("assistant", " 我是小助手 🤖 "),
            Message("user", "Say hi in English."),
            Message("assistant", "Hi there! 👋"),
        ]
    )


def encode(name, template, conv=None, **kw):
    tok = tokenizer(name)
    return Encoder(tok, resolve_template(template, tok), **kw).encode_one(conv or conversation())


def trained_runs(example, tok):
    """Decoded text of each maximal run of trained tokens."""
    runs, cur = [], []
    for tid, label in zip(example.input_ids, example.labels):
        if label != IGNORE_INDEX:
            assert label == tid
            cur.append(tid)
        elif cur:
            runs.append(cur)
            cur = []
    if cur:
        runs.append(cur)
    return [tok.decode(r, skip_special_tokens=False) for r in runs]


def trained_positions(example):
    return [i for i, label in enumerate(example.labels) if label != IGNORE_INDEX]


# --- Qwen2 + chatml -------------------------------------------------------------------------------

QWEN_IDS = [
    151644, 8948, 198, 2610, 525, 58230, 237, 110498, 13, 220, 151645, 198,  # system
    151644, 872, 198, 220, 108386, 3837, 109432, 99283, 90316, 151645, 198,  # user
    151644, 77091, 198, 49434, 239, 20412, 30709, 110498, 11162, 97, 244, 220, 151645, 198,  # assistant
    151644, 872, 198, 45764, 15588, 304, 6364, 13, 151645, 198,  # user
    151644, 77091, 198, 13048, 1052, 0, 61804, 233, 151645, 198,  # assistant
]


def test_qwen2_chatml_token_for_token():
    ex = encode("qwen2", "chatml")
    assert ex.input_ids == QWEN_IDS
    # " 我是小助手 🤖 <|im_end|>" (positions 26-35) and "Hi there! 👋<|im_end|>" (50-55); the "\n"
    # after <|im_end|> and the "<|im_start|>assistant\n" header are not trained.
    assert trained_positions(ex) == list(range(26, 36)) + list(range(50, 56))
    assert trained_runs(ex, tokenizer("qwen2")) == [" 我是小助手 🤖 <|im_end|>", "Hi there! 👋<|im_end|>"]
    assert ex.input_ids[0] == 151644  # no BOS added: the template writes none


def test_qwen2_own_template_matches_builtin_chatml_here():
    # The Qwen2 tokenizer's own template is ChatML too (with a default system prompt we do not hit here).
    assert encode("qwen2", None).input_ids == QWEN_IDS


def test_qwen_template_adds_default_system():
    conv = Conversation([Message("user", "hi"), Message("assistant", "hello")])
    tok = tokenizer("qwen2")
    ex = Encoder(tok, resolve_template("qwen", tok)).encode_one(conv)
    assert tok.decode(ex.input_ids).startswith(  # Qwen2.5's
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n")
    assert trained_runs(ex, tok) == ["hello<|im_end|>"]


# --- Llama 3 + llama3 -----------------------------------------------------------------------------

LLAMA3_IDS = [
    128000, 128006, 9125, 128007, 271, 2675, 527, 103036, 103129, 46034, 13, 128009,
    128006, 882, 128007, 271, 57668, 53901, 3922, 117814, 111230, 102099, 91416, 128009,
    128006, 78191, 128007, 271, 37046, 21043, 31809, 103129, 46034, 11410, 97, 244, 128009,
    128006, 882, 128007, 271, 46864, 15960, 304, 6498, 13, 128009,
    128006, 78191, 128007, 271, 13347, 1070, 0, 62904, 233, 128009,
]


def test_llama3_token_for_token():
    ex = encode("llama3", "llama3")
    assert ex.input_ids == LLAMA3_IDS
    assert ex.input_ids.count(128000) == 1  # exactly one <|begin_of_text|>: the template's
    assert trained_positions(ex) == list(range(28, 37)) + list(range(51, 57))
    # Llama 3's template trims message content, so the spaces around the first answer are gone.
    assert trained_runs(ex, tokenizer("llama3")) == ["我是小助手 🤖<|eot_id|>", "Hi there! 👋<|eot_id|>"]


# --- Llama 2 + llama2 -----------------------------------------------------------------------------

LLAMA2_IDS = [
    1, 29961, 25580, 29962, 3532, 14816, 29903, 6778, 13, 3492, 526, 29871, 30446, 31931, 30880, 29889,
    29871, 13, 29966, 829, 14816, 29903, 6778, 13, 13, 29871, 30919, 31076, 30214, 31633, 234, 190, 144,
    30287, 30557, 30688, 232, 186, 180, 29871, 243, 162, 155, 131, 518, 29914, 25580, 29962,
    29871, 30672, 30392, 30446, 31931, 30880, 29871, 243, 162, 167, 153, 29871, 2,
    1, 29961, 25580, 29962, 14891, 7251, 297, 4223, 29889, 518, 29914, 25580, 29962,
    6324, 727, 29991, 29871, 243, 162, 148, 142, 29871, 2,
]


def test_llama2_token_for_token():
    ex = encode("llama2", "llama2")
    assert ex.input_ids == LLAMA2_IDS
    # Each answer starts right after "[/INST]" with its space ("▁") and ends with " </s>", which the
    # template writes, so no EOS is inserted. The second turn's <s> is the template's, not trained.
    assert trained_positions(ex) == list(range(48, 61)) + list(range(74, 84))
    assert ex.input_ids[61] == 1 and ex.labels[61] == IGNORE_INDEX
    runs = trained_runs(ex, tokenizer("llama2"))
    assert [r.strip() for r in runs] == ["我是小助手 🤖 </s>", "Hi there! 👋 </s>"]


# --- GPT-2 + alpaca ------------------------------------------------------------------------------

GPT2_IDS = [
    1639, 389, 10263, 108, 237, 27950, 102, 33699, 233, 13, 220, 198, 198,  # system (replaces the preamble)
    21017, 46486, 25, 198, 220, 19526, 254, 25001, 121, 171, 120, 234, 20015, 233, 163, 119, 235, 31660,
    10310, 233, 164, 229, 103, 32432, 109, 30325, 222, 198, 198,  # ### Instruction: …
    21017, 18261, 25, 198,  # ### Response:
    10545, 230, 239, 42468, 22887, 237, 27950, 102, 33699, 233, 12520, 97, 244, 50256,  # answer + EOS
    220, 198, 198, 21017, 46486, 25, 198, 25515, 23105, 287, 3594, 13, 198, 198,
    21017, 18261, 25, 198, 17250, 612, 0, 50169, 233, 50256,
]


def test_gpt2_alpaca_token_for_token():
    ex = encode("gpt2", "alpaca")
    assert ex.input_ids == GPT2_IDS
    # Alpaca writes no end-of-turn token: EOS (<|endoftext|>, 50256) is inserted right after each
    # answer (before the trailing space that the span excludes) and trained.
    assert trained_positions(ex) == list(range(46, 60)) + list(range(78, 84))
    assert trained_runs(ex, tokenizer("gpt2")) == [" 我是小助手 🤖<|endoftext|>", "Hi there! 👋<|endoftext|>"]


def test_alpaca_stanford_preamble_with_input():
    from sftlab.data.formats import from_alpaca

    tok = tokenizer("gpt2")
    conv = from_alpaca({"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"})
    ex = Encoder(tok, resolve_template("alpaca", tok)).encode_one(conv)
    assert tok.decode(ex.input_ids) == (
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request.\n\n"
        "### Instruction:\nAdd the numbers.\n\n### Input:\n2 and 3\n\n### Response:\n5<|endoftext|>"
    )
    assert trained_runs(ex, tok) == ["5<|endoftext|>"]


# --- modes and per-message flags -------------------------------------------------------------------


def test_last_assistant_trains_only_the_final_turn():
    ex = encode("qwen2", "chatml", train_on="last_assistant")
    assert trained_positions(ex) == list(range(50, 56))


def test_all_trains_every_token():
    ex = encode("qwen2", "chatml", train_on="all")
    assert ex.labels == ex.input_ids == QWEN_IDS


def test_per_message_train_false_and_weight():
    conv = conversation()
    conv.messages[2].train = False
    conv.messages[4].weight = 0.5
    ex = encode("qwen2", "chatml", conv)
    assert trained_positions(ex) == list(range(50, 56))
    assert ex.weights is not None
    assert [ex.weights[i] for i in range(50, 56)] == [0.5] * 6
    assert sum(ex.weights) == pytest.approx(3.0)


def test_per_message_train_true_overrides_last_assistant():
    conv = conversation()
    conv.messages[2].train = True
    ex = encode("qwen2", "chatml", conv, train_on="last_assistant")
    assert trained_positions(ex) == list(range(26, 36)) + list(range(50, 56))


def test_prompt_tokens_are_never_trained_even_when_bpe_could_merge_across_the_boundary():
    # "ASSISTANT:" + " 5" : the answer's first token carries the leading space and is trained whole.
    tok = tokenizer("gpt2")
    conv = Conversation([Message("user", "2+3?"), Message("assistant", "5")])
    ex = Encoder(tok, resolve_template("plain", tok)).encode_one(conv)
    assert tok.decode(ex.input_ids) == "USER: 2+3?\nASSISTANT: 5<|endoftext|>\n"
    assert trained_runs(ex, tok) == [" 5<|endoftext|>"]


# --- truncation, drops, text ---------------------------------------------------------------------


def test_truncation_keeps_the_start_and_drops_an_answer_lost_entirely():
    tok = tokenizer("qwen2")
    enc = Encoder(tok, resolve_template("chatml", tok), max_length=30)
    result = enc.encode([conversation()])
    (ex,) = result.examples
    assert ex.input_ids == QWEN_IDS[:30]
    assert trained_positions(ex) == list(range(26, 30))
    assert result.truncated == 1
    short = Encoder(tok, resolve_template("chatml", tok), max_length=20).encode([conversation()])
    assert short.examples == []
    assert [d.reason for d in short.dropped] == ["answer lost to truncation at max_length=20"]


def test_empty_answer_is_dropped_and_counted():
    tok = tokenizer("qwen2")
    conv = Conversation([Message("user", "hi"), Message("assistant", "   ")], source="f.json", row=7)
    result = Encoder(tok, resolve_template("chatml", tok)).encode([conv])
    assert result.examples == []
    assert (result.dropped[0].source, result.dropped[0].row) == ("f.json", 7)
    assert "no trained tokens" in result.dropped[0].reason


def test_text_for_continued_pretraining_trains_everything_and_appends_eos():
    tok = tokenizer("llama2")
    conv = Conversation([Message("assistant", "Hello world")], is_text=True)
    ex = Encoder(tok, None).encode_one(conv)
    # Llama 2's tokenizer puts BOS before plain text; EOS (</s> = 2) is appended.
    assert ex.input_ids == [1, 15043, 3186, 2]
    assert ex.labels == ex.input_ids


# --- one tokenization rule: cut at the end of the generation prompt, escaped or not ------------------------------

# A template whose generation prompt runs into the answer: "<|im_start|>assistant" + "e!" is "assistante!", which
# Qwen2 tokenizes whole as "assist" "ante" "!" (50966, 4942, 0).
RUN_ON = ("{% for m in messages %}<|im_start|>{{ m.role }}{{ m.content }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant{% endif %}")

# Expected ids: each piece tokenized on its own by the tokenizer (helpers.text_ids), markers as their ids:
# 151644 <|im_start|>, 151645 <|im_end|>; "\n" 198; "assistant\n" 77091 198; "\n42" 198 19 17; "assistant" 77091;
# "e!" 68 0; "user\nhi <|endoftext|>" 872 198 6023 82639 8691 723 427 91 29 (the data's <|endoftext|> as text);
# "user<|endoftext|> hi" 872 27 91 8691 723 427 91 29 15588.
CUT_CASES = {
    # chatml's prompt ends "\n" and an answer starting "\n" would make one "\n\n" token (271) across the end.
    "chatml, answer starting with a newline": (
        None, "hi <|endoftext|>", "hi", "\n42",
        [151644, 872, 198, 6023, 82639, 8691, 723, 427, 91, 29, 151645, 198, 151644, 77091, 198, 198, 19, 17, 151645, 198],
        [151644, 872, 198, 6023, 151645, 198, 151644, 77091, 198, 198, 19, 17, 151645, 198],
        "\n42<|im_end|>"),
    "a prompt that runs into the answer": (
        RUN_ON, "<|endoftext|> hi", "hi", "e!",
        [151644, 872, 27, 91, 8691, 723, 427, 91, 29, 15588, 151645, 198, 151644, 77091, 68, 0, 151645, 198],
        [151644, 872, 6023, 151645, 198, 151644, 77091, 68, 0, 151645, 198],
        "e!<|im_end|>"),
}


@pytest.mark.parametrize("case", list(CUT_CASES))
def test_the_prompt_is_tokenized_apart_from_the_answer_with_or_without_special_token_text(case):
    """docs/data.md, the masking contract: where a token would cross the end of a generation prompt, the text is
    tokenized in parts there. A row whose data spells a special token (tokenized piece by piece between the
    template's markers) follows the same rule as a plain row: its prompt tokens are the ones inference sends."""
    source, escaped_user, plain_user, answer, escaped_ids, plain_ids, trained = CUT_CASES[case]
    tok = tokenizer("qwen2")
    chat = resolve_template("chatml", tok) if source is None else ChatTemplate(source, "run-on", {})
    escaped = Encoder(tok, chat).encode_one(Conversation([Message("user", escaped_user), Message("assistant", answer)]))
    plain = Encoder(tok, chat).encode_one(Conversation([Message("user", plain_user), Message("assistant", answer)]))
    assert escaped.input_ids == escaped_ids
    assert plain.input_ids == plain_ids
    # From the generation prompt's <|im_start|> on, both rows are the same text: the same ids and labels.
    tail = len(plain_ids) - plain_ids[::-1].index(151644) - 1
    shift = len(escaped_ids) - len(plain_ids)
    assert escaped.input_ids[tail + shift:] == plain.input_ids[tail:]
    assert escaped.labels[tail + shift:] == plain.labels[tail:]
    assert trained_runs(escaped, tok) == trained_runs(plain, tok) == [trained]


# --- prefix-unstable templates ---------------------------------------------------------------------

# Like templates that strip reasoning from earlier turns: only the last assistant turn keeps its <think>.
UNSTABLE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n"
    "{% if m.role == 'assistant' and not loop.last %}{{ m.content.split('</think>')[-1] }}"
    "{% else %}{{ m.content }}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_prefix_unstable_template_is_split_into_one_example_per_turn():
    tok = tokenizer("qwen2")
    chat = ChatTemplate(UNSTABLE, "unstable", {"eos_token": "<|endoftext|>"})
    conv = Conversation(
        [
            Message("user", "a"),
            Message("assistant", "<think>r1</think>x"),
            Message("user", "b"),
            Message("assistant", "<think>r2</think>y"),
        ]
    )
    result = Encoder(tok, chat).encode([conv])
    assert result.split_conversations == 1
    assert [trained_runs(e, tok) for e in result.examples] == [
        ["<think>r1</think>x<|im_end|>"],
        ["<think>r2</think>y<|im_end|>"],
    ]
    # The second example holds the first answer as the template rewrites it, untrained.
    assert tok.decode(result.examples[1].input_ids).startswith("<|im_start|>user\na<|im_end|>\n<|im_start|>assistant\nx<|im_end|>")


# --- templates -------------------------------------------------------------------------------------


def test_tokenizer_without_template_is_a_clear_error():
    with pytest.raises(SftlabError, match="no chat template.*chatml, qwen, llama2, llama3, phi3, alpaca, plain"):
        resolve_template(None, tokenizer("gpt2"))


def test_mismatched_template_warns(caplog):
    with caplog.at_level("WARNING", logger="sftlab"):
        resolve_template("chatml", tokenizer("gpt2"))
    assert "'<|im_start|>'" in caplog.text and "does not match" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="sftlab"):
        resolve_template("chatml", tokenizer("qwen2"))
    assert caplog.text == ""


def test_jinja_file_template(tmp_path):
    path = tmp_path / "t.jinja"
    path.write_text("{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}")
    tok = tokenizer("gpt2")
    conv = Conversation([Message("user", "hi"), Message("assistant", "yo")])
    ex = Encoder(tok, resolve_template(str(path), tok)).encode_one(conv)
    assert trained_runs(ex, tok) == ["yo<|endoftext|>"]


def test_phi3_template_renders_end_tokens():
    tok = tokenizer("qwen2")
    chat = resolve_template("phi3", tok)
    text = chat.render([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}])
    assert text == "<|user|>\nhi<|end|>\n<|assistant|>\nyo<|end|>\n<|endoftext|>"  # Phi-3's: EOS after the last message


def test_tools_are_passed_to_the_template_and_tool_calls_rendered():
    from sftlab.data.formats import from_sharegpt

    tok = tokenizer("qwen2")
    row = {
        "conversations": [
            {"from": "human", "value": "Weather in Paris?"},
            {"from": "function_call", "value": '{"name": "weather", "arguments": {"city": "Paris"}}'},
            {"from": "observation", "value": '{"temp": 21}'},
            {"from": "gpt", "value": "21 °C."},
        ],
        "tools": '[{"name": "weather", "description": "Get weather", "parameters": {"type": "object"}}]',
    }
    ex = Encoder(tok, resolve_template("chatml", tok)).encode_one(from_sharegpt(row))
    text = tok.decode(ex.input_ids)
    assert '<tools>\n{"type": "function", "function": {"name": "weather"' in text
    assert "<|im_start|>tool\n{\"temp\": 21}<|im_end|>" in text
    assert trained_runs(ex, tok) == [
        '<tool_call>\n{"name": "weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>',
        "21 °C.<|im_end|>",
    ]


@pytest.mark.parametrize("name, template", [("qwen2", "chatml"), ("gpt2", "alpaca")])
def test_a_long_conversation_renders_only_what_survives_truncation(monkeypatch, name, template):
    """Rendering stops past the truncation point; the examples (and the drops) are exactly those of
    rendering every prefix."""
    import sftlab.data.encode as enc

    tok = tokenizer(name)
    chat = resolve_template(template, tok)
    long = Conversation([Message("user" if k % 2 == 0 else "assistant", f"turn {k} 第{k}轮") for k in range(400)])
    short_answer_late = Conversation([Message("user", "q " * 600), *long.messages[1:80]])
    renders = []
    original = chat.render

    def counting(*args, **kw):
        renders.append(1)
        return original(*args, **kw)

    monkeypatch.setattr(chat, "render", counting)
    quick = Encoder(tok, chat, max_length=256).encode([long, short_answer_late])
    quick_renders = len(renders)
    monkeypatch.setattr(enc, "LONG_CONVERSATION_TURNS", 10**9)
    renders.clear()
    whole = Encoder(tok, chat, max_length=256).encode([long, short_answer_late])
    assert [(e.input_ids, e.labels) for e in quick.examples] == [(e.input_ids, e.labels) for e in whole.examples]
    assert [d.to_dict() for d in quick.dropped] == [d.to_dict() for d in whole.dropped]
    assert quick.truncated == whole.truncated
    assert len(quick.examples) == 1 and len(quick.dropped) == 1  # the late answers are lost to truncation
    assert quick_renders < len(renders) / 4  # 2 + 2 per rendered turn; the whole has 2 per turn, 240 turns


def test_a_template_that_ignores_tools_says_so_once_with_counts(caplog):
    from helpers import FIXTURES
    from sftlab.data.load import load_conversations

    tok = tokenizer("qwen2")
    convs = load_conversations(FIXTURES / "data" / "glaive_toolcall_en_demo.json").conversations[:50]
    with_tools = sum(bool(c.tools) for c in convs)
    with caplog.at_level("WARNING", logger="sftlab"):
        result = Encoder(tok, resolve_template("alpaca", tok)).encode(convs)
    assert result.tools_ignored == with_tools > 0
    warnings = [r.getMessage() for r in caplog.records if "tool definitions" in r.getMessage()]
    assert warnings == [f"{with_tools} conversations carry tool definitions that template 'alpaca' does not render: "
                        "the model will not see them; use a template that renders tools (template: chatml or qwen)"]
    caplog.clear()
    with caplog.at_level("WARNING", logger="sftlab"):
        assert Encoder(tok, resolve_template("chatml", tok)).encode(convs).tools_ignored == 0
    assert "tool definitions" not in caplog.text


def test_encoding_in_worker_processes_gives_the_same_result(monkeypatch):
    from helpers import FIXTURES
    from sftlab.data import encode as encode_mod
    from sftlab.data.load import load_conversations

    monkeypatch.setattr(encode_mod, "PARALLEL_MIN", 10)
    tok = tokenizer("qwen2")
    convs = load_conversations(FIXTURES / "data" / "glaive_toolcall_en_demo.json").conversations[:120]
    convs += load_conversations(FIXTURES / "data" / "alpaca_zh_demo.json").conversations[:120]
    encoder = Encoder(tok, resolve_template("chatml", tok), max_length=256)
    one, two = encoder.encode(convs, num_proc=1), encoder.encode(convs, num_proc=2)
    assert [e.to_dict() for e in one.examples] == [e.to_dict() for e in two.examples]
    assert [d.to_dict() for d in one.dropped] == [d.to_dict() for d in two.dropped] and one.dropped
    assert (one.truncated, one.split_conversations) == (two.truncated, two.split_conversations)


def test_workers_set_their_tokenizer_single_threaded_and_leave_this_process_alone(monkeypatch):
    import os

    from sftlab.data import encode as encode_mod
    from sftlab.forked import forked

    monkeypatch.setattr(encode_mod, "PARALLEL_MIN", 2)
    monkeypatch.delenv("TOKENIZERS_PARALLELISM", raising=False)
    with forked(2, os.environ.get, initializer=encode_mod._single_threaded_tokenizer) as submit:
        assert submit("TOKENIZERS_PARALLELISM").result() == "false"
    tok = tokenizer("qwen2")
    convs = [Conversation([Message("user", f"q{i}"), Message("assistant", f"a{i}")]) for i in range(8)]
    assert len(Encoder(tok, resolve_template("chatml", tok)).encode(convs, num_proc=2).examples) == 8
    assert "TOKENIZERS_PARALLELISM" not in os.environ


def test_encoded_examples_are_cached_by_content(tmp_path, monkeypatch):
    import json

    from sftlab.config import DataSettings
    from sftlab.data import pipeline
    from sftlab.data.pipeline import Source, build_examples

    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"q{i}", "completion": f"a{i}"}) + "\n" for i in range(20)))
    tok = tokenizer("qwen2")
    first, report = build_examples([Source(str(data))], tok, DataSettings(template="chatml"), cache=tmp_path / "cache")
    monkeypatch.setattr(pipeline, "load_sources", lambda *a, **k: pytest.fail("encoded again"))
    again, report_again = build_examples([Source(str(data))], tok, DataSettings(template="chatml"), cache=tmp_path / "cache")
    assert [e.to_dict() for e in again] == [e.to_dict() for e in first]
    assert report_again.to_dict() == report.to_dict()
    with pytest.raises(BaseException, match="encoded again"):  # another template, or changed content: a miss
        build_examples([Source(str(data))], tok, DataSettings(template="alpaca"), cache=tmp_path / "cache")
    data.write_text(data.read_text().replace("a19", "changed"))
    with pytest.raises(BaseException, match="encoded again"):
        build_examples([Source(str(data))], tok, DataSettings(template="chatml"), cache=tmp_path / "cache")


# --- real templates: reasoning traces and tool calls ------------------------------------------------
# The templates are the models' own (tests/fixtures/templates/, from llama.cpp's models/templates/), on real
# vocabularies given the families' markers as tokens (helpers.family_tokenizer). Expected trained runs are
# literals, written from reading each template: what the model writes after the generation prompt.

from helpers import family_tokenizer, real_template  # noqa: E402
from sftlab.data.formats import convert_row  # noqa: E402
from sftlab.data.templates import with_template_kwargs  # noqa: E402

WEATHER = [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
THINK_ROW = {"messages": [
    {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4", "reasoning_content": "Add them."},
    {"role": "user", "content": "3+3?"}, {"role": "assistant", "content": "6"}]}
TOOL_ROW = {"tools": WEATHER, "messages": [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "id": "call00001", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
    {"role": "tool", "content": '{"temp": 21}', "tool_call_id": "call00001"},
    {"role": "assistant", "content": "It is 21 °C."}]}


class family:
    """A real template on its family's tokenizer: the EOS its model has, the options given."""

    def __init__(self, name, base="qwen2", eos=None, bos="", **kwargs):
        self.base, self.name, self.eos, self.bos, self.kwargs = base, name, eos, bos, kwargs
        self.encoders = {}

    @property
    def tok(self):
        return family_tokenizer(self.base)

    def encode(self, row, **kw):
        saved = self.tok.eos_token
        if self.eos:
            self.tok.eos_token = self.eos
        try:
            key = tuple(sorted(kw.items()))
            if key not in self.encoders:
                chat = with_template_kwargs(real_template(self.name, self.tok, bos_token=self.bos), self.kwargs or None)
                self.encoders[key] = Encoder(self.tok, chat, max_length=4096, **kw)
            return self.encoders[key].encode([convert_row(row, "messages")])
        finally:
            self.tok.eos_token = saved

    def runs(self, row, **kw):
        result = self.encode(row, **kw)
        assert not result.dropped, result.dropped
        return [trained_runs(e, self.tok) for e in result.examples]


QWEN3 = "Qwen-Qwen3-0.6B"
DEEPSEEK = "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B"


def test_qwen3_token_for_token_trace_answer_and_end_of_turn():
    f = family(QWEN3)
    row = {"messages": [{"role": "user", "content": "2+2?"},
                        {"role": "assistant", "content": "<think>\nAdd them.\n</think>\n\n4"}]}
    (ex,) = f.encode(row).examples
    think, end_think = f.tok.convert_tokens_to_ids(["<think>", "</think>"])
    # <|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n | <think>\nAdd them.\n</think>\n\n4<|im_end|> | \n
    prompt = [151644, 872, 198, 17, 10, 17, 30, 151645, 198, 151644, 77091, 198]
    answer = [think, 198, 2212, 1105, 624, end_think, 271, 19, 151645]  # <think> \n Add ␣them .\n </think> \n\n 4 <|im_end|>
    assert (think, end_think) == (151936, 151937)  # (appended to this Qwen2 vocabulary; Qwen3's own: 151667, 151668)
    assert ex.input_ids == prompt + answer + [198]
    assert ex.labels == [IGNORE_INDEX] * len(prompt) + answer + [IGNORE_INDEX]
    no_trace = Encoder(f.tok, real_template(QWEN3, f.tok), train_reasoning=False).encode_one(convert_row(row, "messages"))
    assert no_trace.input_ids == ex.input_ids
    assert no_trace.labels == [IGNORE_INDEX] * (len(prompt) + 7) + [19, 151645, IGNORE_INDEX]


@pytest.mark.parametrize("fam, think, tool", [
    # Qwen3 drops earlier turns' reasoning: one example per turn, each prompt as inference sends it; an answer without
    # reasoning has the empty trace the model writes in thinking mode.
    (family(QWEN3), [["<think>\nAdd them.\n</think>\n\n4<|im_end|>"], ["<think>\n\n</think>\n\n6<|im_end|>"]],
     [['<think>\n\n</think>\n\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>'],
      ["<think>\n\n</think>\n\nIt is 21 °C.<|im_end|>"]]),
    # enable_thinking: false: the prompt carries the empty trace; the answer alone is the model's.
    (family(QWEN3, enable_thinking=False), [["4<|im_end|>"], ["6<|im_end|>"]],
     [['<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>'], ["It is 21 °C.<|im_end|>"]]),
    # DeepSeek-R1's prompt opens the trace (<think>\n) and its history drops it: the trace is trained as the prompt's
    # continuation. llama.cpp's copy closes it unless enable_thinking is set.
    (family(DEEPSEEK, bos="<｜begin▁of▁sentence｜>", eos="<｜end▁of▁sentence｜>", enable_thinking=True),
     [["Add them.\n</think>\n\n4<｜end▁of▁sentence｜>"], ["\n</think>\n\n6<｜end▁of▁sentence｜>"]], None),
    (family(DEEPSEEK, bos="<｜begin▁of▁sentence｜>", eos="<｜end▁of▁sentence｜>"),
     [["\n\n4<｜end▁of▁sentence｜>"], ["6<｜end▁of▁sentence｜>"]], None),
    # Templates without a reasoning field get the trace inline and keep it in history: one example.
    (family("Qwen-Qwen2.5-7B-Instruct"), [["<think>\nAdd them.\n</think>\n\n4<|im_end|>", "6<|im_end|>"]],
     [['<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>', "It is 21 °C.<|im_end|>"]]),
    (family("meta-llama-Llama-3.1-8B-Instruct", base="llama3", bos="<|begin_of_text|>"),
     [["<think>\nAdd them.\n</think>\n\n4<|eot_id|>", "6<|eot_id|>"]],
     [['{"name": "get_weather", "parameters": {"city": "Paris"}}<|eot_id|>', "It is 21 °C.<|eot_id|>"]]),
    (family("mistralai-Mistral-Nemo-Instruct-2407", base="llama2", bos="<s>", eos="</s>"),
     [["<think>\nAdd them.\n</think>\n\n4</s>", "6</s>"]],
     [['[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "call00001"}]</s>', "It is 21 °C.</s>"]]),
    # Hermes-2-Pro writes "\n" before a tool turn's <|im_end|> in history only: split, the prompt as inference's.
    (family("NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use", base="llama3"), None,
     [['<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>'], ["It is 21 °C.<|im_end|>"]]),
    # gpt-oss reads `thinking` (its analysis channel), drops it from history; the channel headers are the model's.
    (family("openai-gpt-oss-120b"),
     [["<|channel|>analysis<|message|>Add them.<|end|><|start|>assistant<|channel|>final<|message|>4<|return|>"],
      ["<|channel|>final<|message|>6<|return|>"]],
     [[' to=functions.get_weather<|channel|>commentary json<|message|>{"city": "Paris"}<|call|>',
       "<|channel|>final<|message|>It is 21 °C.<|return|>"]]),
    # functionary takes arguments as text; the recipient line after its ">>>" prompt is the model's.
    (family("meetkai-functionary-medium-v3.2", base="llama3"), [["all\n<think>\nAdd them.\n</think>\n\n4<|eot_id|>", "all\n6<|eot_id|>"]],
     [['get_weather\n{"city": "Paris"}<|eot_id|>', "all\nIt is 21 °C.<|eot_id|>"]]),
    # Command-R7B writes its generation prompt after every conversation: the turn ends at its EOS.
    (family("CohereForAI-c4ai-command-r7b-12-2024-tool_use", eos="<|END_OF_TURN_TOKEN|>"),
     [["<|START_RESPONSE|>4<|END_RESPONSE|><|END_OF_TURN_TOKEN|>"], ["<|START_RESPONSE|>6<|END_RESPONSE|><|END_OF_TURN_TOKEN|>"]],
     [['<|START_ACTION|>[\n    {"tool_call_id": "0", "tool_name": "get_weather", "parameters": {"city": "Paris"}}\n]<|END_ACTION|><|END_OF_TURN_TOKEN|>'],
      ["<|START_RESPONSE|>It is 21 °C.<|END_RESPONSE|><|END_OF_TURN_TOKEN|>"]]),
    # Kimi-K2-Thinking writes an empty trace for every answer in history, its last included: the reasoning is
    # put back in the turn the model writes.
    (family("Kimi-K2-Thinking"), [["<think>Add them.</think>4<|im_end|>"], ["<think></think>6<|im_end|>"]], None),
    (family("GLM-4.6"), [["\n<think>Add them.</think>\n4<|endoftext|>"], ["\n<think></think>\n6<|endoftext|>"]],
     [["\n<think></think>\n<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris</arg_value>\n</tool_call><|endoftext|>",
       "\n<think></think>\nIt is 21 °C.<|endoftext|>"]]),
    (family("StepFun3.5-Flash"), [["Add them.\n</think>\n4<|im_end|>"], ["\n</think>\n6<|im_end|>"]],
     [["\n</think>\n<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n</function>\n</tool_call><|im_end|>",
       "\n</think>\nIt is 21 °C.<|im_end|>"]]),
], ids=lambda f: f.name + (f" {f.kwargs}" if f.kwargs else "") if isinstance(f, family) else "")
def test_real_templates_train_the_trace_answer_tool_call_and_end_of_turn_never_a_tool_result(fam, think, tool):
    if think is not None:
        assert fam.runs(THINK_ROW) == think
    if tool is not None:
        assert fam.runs(TOOL_ROW) == tool


@pytest.mark.parametrize("fam, think", [
    (family(QWEN3), [["4<|im_end|>"], ["6<|im_end|>"]]),
    (family("Qwen-Qwen2.5-7B-Instruct"), [["4<|im_end|>", "6<|im_end|>"]]),
    (family(DEEPSEEK, bos="<｜begin▁of▁sentence｜>", eos="<｜end▁of▁sentence｜>", enable_thinking=True),
     [["4<｜end▁of▁sentence｜>"], ["6<｜end▁of▁sentence｜>"]]),
    (family("openai-gpt-oss-120b"), [["<|start|>assistant<|channel|>final<|message|>4<|return|>"],
                                     ["<|channel|>final<|message|>6<|return|>"]]),
    (family("GLM-4.6"), [["4<|endoftext|>"], ["6<|endoftext|>"]]),
], ids=lambda f: f.name if isinstance(f, family) else "")
def test_train_reasoning_false_trains_the_answer_and_end_of_turn_only(fam, think):
    assert fam.runs(THINK_ROW, train_reasoning=False) == think


def test_a_split_examples_prompt_is_token_for_token_what_inference_sends():
    # Qwen3.5's prompt ends "<think>\n" and an answer without reasoning goes on "\n</think>": tokenized whole, BPE
    # would merge the two "\n" across the boundary; the example's prompt tokens are the prompt's own.
    f = family("Qwen3.5-4B")
    result = f.encode(THINK_ROW)
    chat = real_template("Qwen3.5-4B", f.tok, bos_token="")
    for ex, upto in zip(result.examples, (2, 4)):
        msgs = [m.to_template_dict() for m in convert_row(THINK_ROW, "messages").messages[: upto - 1]]
        prompt = f.tok(chat.render(msgs, add_generation_prompt=True), add_special_tokens=False)["input_ids"]
        first = next(i for i, label in enumerate(ex.labels) if label != IGNORE_INDEX)
        assert ex.input_ids[:first] == prompt
    assert [trained_runs(e, f.tok) for e in result.examples] == [
        ["Add them.\n</think>\n\n4<|im_end|>"], ["\n</think>\n\n6<|im_end|>"]]
    assert (result.split_conversations, result.split_examples) == (1, 2)
    assert result.split_extra_tokens == len(result.examples[0])


def test_end_of_turn_is_not_doubled_where_the_template_writes_it_only_before_another_message():
    # Apertus closes an answer with <|assistant_end|> (its EOS) only when another message follows.
    f = family("Apertus-8B-Instruct", eos="<|assistant_end|>")
    (ex,) = f.encode(THINK_ROW).examples
    end = f.tok.convert_tokens_to_ids("<|assistant_end|>")
    assert ex.input_ids.count(end) == 2
    assert trained_runs(ex, f.tok) == ["<think>\nAdd them.\n</think>\n\n4<|assistant_end|>", "6<|assistant_end|>"]
    assert f.tok.decode(ex.input_ids).endswith("<|user_start|>3+3?<|user_end|><|assistant_start|>6<|assistant_end|>")


def test_a_tool_result_is_trained_only_where_the_row_says_so():
    row = json.loads(json.dumps(TOOL_ROW))
    row["messages"][2]["train"] = True
    f = family("Qwen-Qwen2.5-7B-Instruct")
    assert f.runs(row) == [['<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>',
                            '{"temp": 21}\n', "It is 21 °C.<|im_end|>"]]  # (the token "}\\n")
    with pytest.raises(AssertionError, match="a tool result"):
        family(QWEN3).runs(row)  # (Qwen3 rewrites history: a tool result cannot be trained with it)


def _conversations():
    """Many conversations: one to three turns, answers with a trace, an empty trace or none, English and Chinese."""
    traces = [None, "", "Think it through.", "先算一下：两个数相加。"]
    answers = ["4", "答案是六。", "Sure — here it is.", "好的 👍"]
    users = ["2+2?", "三加三等于几？", "Say hi."]
    out = []
    for k in range(12):
        msgs = []
        for turn in range(1 + k % 3):
            msgs.append({"role": "user", "content": users[(k + turn) % 3]})
            trace = traces[(k + 2 * turn) % 4]
            msg = {"role": "assistant", "content": answers[(k * 3 + turn) % 4]}
            if trace is not None:
                msg["reasoning_content"] = trace
            msgs.append(msg)
        out.append({"messages": msgs})
    return out


# Each family's turn as its model writes it after the generation prompt, from the template's text: (the trace of a
# reasoning, or None for a turn without one) → the trace text, and the end-of-turn.
TURN_FORMS = {
    QWEN3: (family(QWEN3), lambda r: f"<think>\n{r or ''}\n</think>\n\n", "<|im_end|>"),
    "Qwen-Qwen2.5-7B-Instruct": (family("Qwen-Qwen2.5-7B-Instruct"),
                                 lambda r: "" if r is None else f"<think>\n{r}\n</think>\n\n", "<|im_end|>"),
    "meta-llama-Llama-3.1-8B-Instruct": (family("meta-llama-Llama-3.1-8B-Instruct", base="llama3", bos="<|begin_of_text|>"),
                                         lambda r: "" if r is None else f"<think>\n{r}\n</think>\n\n", "<|eot_id|>"),
    DEEPSEEK: (family(DEEPSEEK, bos="<｜begin▁of▁sentence｜>", eos="<｜end▁of▁sentence｜>", enable_thinking=True),
               lambda r: f"{r or ''}\n</think>\n\n", "<｜end▁of▁sentence｜>"),
    "GLM-4.6": (family("GLM-4.6"), lambda r: f"\n<think>{r or ''}</think>\n", "<|endoftext|>"),
}


@pytest.mark.parametrize("name", list(TURN_FORMS))
@pytest.mark.parametrize("train_reasoning", [True, False])
def test_trained_tokens_are_the_trace_if_trained_the_answer_and_the_end_of_turn_for_every_turn(name, train_reasoning):
    fam, trace, end = TURN_FORMS[name]
    for row in _conversations():
        turns = [m for m in row["messages"] if m["role"] == "assistant"]
        expected = [(trace(m.get("reasoning_content")) if train_reasoning else "") + m["content"] + end for m in turns]
        got = [run for runs in fam.runs(row, train_reasoning=train_reasoning) for run in runs]
        assert got == expected, row


# --- the trace rule for any trace: nothing of it trained with train_reasoning false (issue 46) ----------------------

TRACES = ["Add </think> them.", "</think>", "a <think> b", "x <|im_end|> y", "<|im_start|>assistant\nfake"]


@pytest.mark.parametrize("trace", TRACES)
@pytest.mark.parametrize("base", ["qwen2", "family"])
def test_a_trace_holding_markers_is_never_trained_with_train_reasoning_false(trace, base):
    # The control (a plain trace) trains "42.<|im_end|>"; a trace holding its own </think> trained
    # "</think>\n\n42.<|im_end|>" (the first </think> was taken for the trace's end).
    tok = tokenizer("qwen2") if base == "qwen2" else family_tokenizer("qwen2")
    row = {"messages": [{"role": "user", "content": "2+2?"},
                        {"role": "assistant", "content": "42.", "reasoning_content": trace}]}
    conv = convert_row(row, "messages")
    off = Encoder(tok, real_template(QWEN3, tok), train_reasoning=False).encode_one(conv)
    assert trained_runs(off, tok) == ["42.<|im_end|>"]
    on = Encoder(tok, real_template(QWEN3, tok)).encode_one(conv)
    assert trained_runs(on, tok) == [f"<think>\n{trace}\n</think>\n\n42.<|im_end|>"]
    # Thinking switched off (the prompt holds the empty trace): the row's trace is dropped from the turn, whole.
    quiet = with_template_kwargs(real_template(QWEN3, tok), {"enable_thinking": False})
    for train_reasoning in (True, False):
        ex = Encoder(tok, quiet, train_reasoning=train_reasoning).encode_one(conv)
        assert trained_runs(ex, tok) == ["42.<|im_end|>"]


# A template that writes only the trace of an answer that has one (the answer vanishes), or that raises for one.
ONLY_TRACE = ("{% for m in messages %}<|im_start|>{{ m.role + '\\n' }}"
              "{% if m.role == 'assistant' and m.reasoning_content %}<think>{{ m.reasoning_content }}</think>"
              "{% else %}{{ m.content }}{% endif %}{{ '<|im_end|>\\n' }}{% endfor %}"
              "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
RAISES = ONLY_TRACE.replace("<think>{{ m.reasoning_content }}</think>", "{{ raise_exception('no traces here') }}")


@pytest.mark.parametrize("train_reasoning", [True, False])
@pytest.mark.parametrize("train_on", ["all_assistant", "all"])
def test_an_answer_the_template_does_not_write_drops_its_row_with_the_reason(train_reasoning, train_on):
    tok = tokenizer("qwen2")
    rows = [{"messages": [{"role": "user", "content": "2+2?"},
                          {"role": "assistant", "content": "42.", "reasoning_content": "Add them."}]},
            {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "42."}]},
            {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"},
                          {"role": "user", "content": "3+3?"},
                          {"role": "assistant", "content": "6", "reasoning_content": "Add them."}]}]
    convs = [convert_row(r, "messages") for r in rows]
    for k, c in enumerate(convs, 1):
        c.source, c.row = "d.jsonl", k
    for source, reason in ((ONLY_TRACE, "chat template 't' does not write the answer of message {} (its content), "
                                        "so it cannot be trained"),
                           (RAISES, "chat template 't' failed to render: no traces here")):
        got = Encoder(tok, ChatTemplate(source, "t", {}), train_reasoning=train_reasoning, train_on=train_on).encode(convs)
        assert [(d.source, d.row, d.reason) for d in got.dropped] == [
            ("d.jsonl", 1, reason.format(2)), ("d.jsonl", 3, reason.format(4))]
        assert [e.row for e in got.examples] == [2]
        if train_on == "all_assistant":
            assert trained_runs(got.examples[0], tok) == ["42.<|im_end|>"]


def test_a_short_trace_that_spells_part_of_a_marker_is_not_found_inside_it():
    # Command-R7B leaves the trace out of a turn after its thinking-off prompt; the trace "R" once matched the R of
    # <|START_RESPONSE|>, and "<|START_R" went untrained.
    f = family("CohereForAI-c4ai-command-r7b-12-2024-tool_use", eos="<|END_OF_TURN_TOKEN|>")
    row = {"messages": [{"role": "user", "content": "2+2?"},
                        {"role": "assistant", "content": "42.", "reasoning_content": "R"}]}
    for train_reasoning in (True, False):
        assert f.runs(row, train_reasoning=train_reasoning) == [
            ["<|START_RESPONSE|>42.<|END_RESPONSE|><|END_OF_TURN_TOKEN|>"]]


def test_a_think_close_in_the_data_never_reads_as_thinking_switched_off():
    # gpt-oss drops a tool-call turn's reasoning from history; a </think> in that reasoning or the call's arguments
    # was taken for a thinking-off prompt, and the tool result after it was trained as the last answer's.
    row = json.loads(json.dumps(TOOL_ROW))
    call = row["messages"][1]
    call["reasoning_content"] = "Call </think> it"
    call["tool_calls"][0]["function"]["arguments"] = json.dumps({"city": "</tool_call><|im_end|>\n<think></think>"})
    f = family("openai-gpt-oss-120b")
    for train_reasoning in (True, False):
        got = f.encode(row, train_reasoning=train_reasoning)
        # (as without the </think>: this template's history cannot be lined up with its prompt here)
        assert [d.reason for d in got.dropped] == ["chat template 'openai-gpt-oss-120b' renders the prompt of message 4 "
                                                   "differently from the conversation, so its answer cannot be located"]
        assert got.examples == []


def test_a_trace_the_template_writes_trimmed_is_still_the_trace():
    # The trace is found by its text; a template that trims it writes " Add them. " as "Add them.".
    tok = tokenizer("qwen2")
    chat = ChatTemplate(ONLY_TRACE.replace("<think>{{ m.reasoning_content }}</think>",
                                           "<think>{{ m.reasoning_content | trim }}</think>{{ m.content }}"), "t", {})
    row = {"messages": [{"role": "user", "content": "2+2?"},
                        {"role": "assistant", "content": "42.", "reasoning_content": " Add them. "}]}
    ex = Encoder(tok, chat, train_reasoning=False).encode_one(convert_row(row, "messages"))
    assert trained_runs(ex, tok) == ["42.<|im_end|>"]
    ex = Encoder(tok, chat).encode_one(convert_row(row, "messages"))
    assert trained_runs(ex, tok) == ["<think>Add them.</think>42.<|im_end|>"]


def test_encoding_says_how_far_it_is_when_it_takes_long(monkeypatch, caplog):
    """The phase's lines come from the encoder itself (sftlab.progress with its pauses set to 0 here)."""
    import logging

    from sftlab import progress

    monkeypatch.setattr(progress, "START_AFTER", 0.0)
    monkeypatch.setattr(progress, "EVERY", 0.0)
    convs = [Conversation([Message("user", f"q{k}"), Message("assistant", f"a{k}")]) for k in range(3)]
    with caplog.at_level(logging.INFO, logger="sftlab"):
        Encoder(tokenizer("qwen2"), resolve_template("chatml", tokenizer("qwen2"))).encode(convs)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("encoding")]
    assert lines[:2] == ["encoding: 1/3 conversations, 0 s left", "encoding: 2/3 conversations, 0 s left"]
    assert lines[2].startswith("encoding: 3 conversations done in ")
