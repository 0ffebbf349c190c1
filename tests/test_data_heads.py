"""Rows for task heads (sftlab/data/heads.py): labelled rows and preference pairs → token ids, with literal
expectations from the real tokenizers (helpers.py's independent builders), and one sentence per bad row."""

from __future__ import annotations

import json

import pytest

from helpers import escaped_prompt_ids, text_ids, tokenizer
from sftlab.data.heads import (HeadEncoder, encode_classification, encode_pairs, label_name, label_names,
                               labelled_row, pair_row, read_task_rows)
from sftlab.data.templates import resolve_template
from sftlab.errors import RowError, SftlabError


def encoder(name: str = "qwen2", max_length: int = 1024) -> HeadEncoder:
    tok = tokenizer(name)
    chat = resolve_template(None, tok, warn=False) if tok.chat_template else None
    return HeadEncoder(tok, chat, max_length=max_length)


def test_text_row_is_its_own_tokens_special_text_staying_text():
    tok = tokenizer("qwen2")
    row = labelled_row({"text": "great <|im_end|> film", "label": "pos"}, "d.json", 1)
    # Qwen2 adds no BOS; <|im_end|> inside the text is text, not the control token.
    assert encoder().labelled(row) == text_ids(tok, "great <|im_end|> film")
    assert tok.convert_tokens_to_ids("<|im_end|>") not in encoder().labelled(row)


def test_text_row_gets_the_bos_the_tokenizer_adds():
    tok = tokenizer("llama2")
    ids = encoder("llama2").labelled(labelled_row({"text": "hello world", "label": 1}, "d.json", 1))
    assert ids == [1] + text_ids(tok, "hello world")


def test_conversation_row_reads_what_a_chat_would_show():
    tok = tokenizer("qwen2")
    messages = [{"role": "user", "content": "Is this spam? WIN NOW"}]
    row = labelled_row({"messages": messages, "label": "spam"}, "d.json", 3)
    # A conversation ending in a user turn: rendered with the generation prompt, as chat renders it.
    assert encoder().labelled(row) == escaped_prompt_ids(tok, messages, "Is this spam? WIN NOW")


def test_alpaca_and_prompt_rows_become_one_user_turn():
    tok = tokenizer("qwen2")
    alpaca = labelled_row({"instruction": "Classify", "input": "I loved it", "label": "pos"}, "d.json", 1)
    assert alpaca.messages == [{"role": "user", "content": "Classify\nI loved it", "instruction": "Classify",
                                "input": "I loved it"}]
    prompt = labelled_row({"prompt": "这部电影很好看", "label": "正面"}, "d.json", 2)
    assert encoder().labelled(prompt) == escaped_prompt_ids(tok, [{"role": "user", "content": "这部电影很好看"}],
                                                            "这部电影很好看")


def test_pair_rows_render_both_answers_after_the_same_prompt():
    tok = tokenizer("qwen2")
    pair = pair_row({"prompt": "2+2?", "chosen": "4", "rejected": "5"}, "p.json", 1)
    data = encode_pairs([pair], encoder(), 1)
    [example] = data.examples
    full = tok.apply_chat_template([{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}],
                                   tokenize=False)
    assert example["chosen_ids"] == tok(full, add_special_tokens=False)["input_ids"]
    assert tok.decode(example["rejected_ids"]).endswith("<|im_start|>assistant\n5<|im_end|>\n")
    assert data.tokens == len(example["chosen_ids"]) + len(example["rejected_ids"])


def test_pair_rows_in_the_conversational_shape():
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    pair = pair_row({"messages": messages, "chosen": [{"role": "assistant", "content": "Hello!"}],
                     "rejected": [{"role": "assistant", "content": "Go away."}]}, "p.json", 1)
    assert pair.prompt == messages
    assert pair.chosen == [{"role": "assistant", "content": "Hello!"}]


@pytest.mark.parametrize("row, sentence", [
    ({"text": "x"}, "d.json, row 4, field 'label': missing field: a classification row needs a label"),
    ({"label": "a"}, "d.json, row 4: a classification row needs its text: one of 'text', 'messages', "
                     "'conversations', 'instruction', 'prompt'"),
    ({"text": 5, "label": "a"}, "d.json, row 4, field 'text': must be a string, got a number"),
    ({"text": "  ", "label": "a"}, "d.json, row 4, field 'text': is empty"),
    ("just text", "d.json, row 4: must be an object with a text and a 'label', got a string"),
])
def test_bad_labelled_rows_are_one_sentence(row, sentence):
    with pytest.raises(RowError) as e:
        labelled_row(row, "d.json", 4)
    assert str(e.value) == sentence


@pytest.mark.parametrize("row, sentence", [
    ({"prompt": "q", "chosen": "same", "rejected": "same"},
     "p.json, row 2, field 'chosen': is the same as 'rejected': a pair must prefer one answer over another"),
    ({"prompt": "q", "chosen": "a"}, "p.json, row 2, field 'rejected': missing field: a preference row needs "
                                     "'chosen' and 'rejected'"),
    ({"prompt": "q", "chosen": 3, "rejected": "b"},
     "p.json, row 2, field 'chosen': must be a string or a list of messages, got a number"),
    ({"prompt": "q", "chosen": [{"role": "assistant", "content": 7}], "rejected": "b"},
     "p.json, row 2, field 'chosen[0].content': content must be a string or a list of text parts, got a number"),
])
def test_bad_pairs_are_one_sentence(row, sentence):
    with pytest.raises(RowError) as e:
        pair_row(row, "p.json", 2)
    assert str(e.value) == sentence


def test_label_names():
    assert label_name(True) == "true" and label_name(3) == "3" and label_name("正面") == "正面"
    with pytest.raises(RowError, match="structured JSON labels are scored on a generative model"):
        label_name({"a": 1})
    rows = [labelled_row({"text": "t", "label": v}, "d", 1) for v in (10, 2, 1)]
    assert label_names(rows) == ["1", "2", "10"]  # numerically, not as text ("1", "10", "2")
    rows = [labelled_row({"text": "t", "label": v}, "d", 1) for v in ("neg", "pos", "neg")]
    assert label_names(rows) == ["neg", "pos"]


@pytest.mark.parametrize("label, sentence", [
    (None, "d.json, row 4, field 'label': missing field: a classification row needs a label"),
    (1e3, "d.json, row 4, field 'label': must be a string, a whole number or a boolean for a classification head, "
          "got a number (1000.0)"),
    (" 1", "d.json, row 4, field 'label': label ' 1' has spaces around it; write it without them (' 1' and '1' "
           "would be two labels)"),
    ("", "d.json, row 4, field 'label': is empty"),
    (float("nan"), "d.json, row 4, field 'label': must be a string, a whole number or a boolean for a classification "
                   "head, got a number (nan)"),
])
def test_bad_labels_are_one_sentence_naming_file_row_and_field(label, sentence):
    with pytest.raises(RowError) as e:
        labelled_row({"text": "t", "label": label}, "d.json", 4)
    assert str(e.value) == sentence


def test_structured_label_for_a_head_names_file_and_row():
    # A structured label is read (a generative model is scored on it) but a head cannot name it: file and row.
    rows = [labelled_row({"text": "t", "label": "a"}, "d.json", 1),
            labelled_row({"text": "t", "label": {"k": [1]}}, "d.json", 2)]
    with pytest.raises(RowError) as e:
        label_names(rows)
    assert str(e.value) == ("d.json, row 2, field 'label': must be a string, a whole number or a boolean for a "
                            "classification head, got an object (structured JSON labels are scored on a generative "
                            "model's answers: docs/heads.md)")
    with pytest.raises(RowError, match=r"^d.json, row 2, field 'label': must be a string"):
        encode_classification(rows, encoder(), {"a": 0}, 2)


def test_labels_that_only_look_like_numbers_sort_as_text():
    # '--1' and '²' are text to int() (one refuses, str.isdigit() says '²' is a digit): the names sort as text.
    rows = [labelled_row({"text": "t", "label": v}, "d", k) for k, v in enumerate(("--1", "10", "2"), 1)]
    assert label_names(rows) == ["--1", "10", "2"]
    rows = [labelled_row({"text": "t", "label": v}, "d", k) for k, v in enumerate(("²", "10", "2"), 1)]
    assert label_names(rows) == ["10", "2", "²"]
    rows = [labelled_row({"text": "t", "label": v}, "d", k) for k, v in enumerate(("1e3", "10", "2"), 1)]
    assert label_names(rows) == ["10", "1e3", "2"]
    rows = [labelled_row({"text": "t", "label": v}, "d", k) for k, v in enumerate((True, False, "-3", 2), 1)]
    assert label_names(rows) == ["-3", "2", "false", "true"]
    rows = [labelled_row({"text": "t", "label": v}, "d", k) for k, v in enumerate((-3, 2, "-10"), 1)]
    assert label_names(rows) == ["-10", "-3", "2"]


def test_unseen_label_and_over_long_rows():
    rows = [labelled_row({"text": "a b c d e f g h", "label": "pos"}, "d.json", 1),
            labelled_row({"text": "short", "label": "neg"}, "d.json", 2)]
    data = encode_classification(rows, encoder(max_length=3), {"pos": 0, "neg": 1}, 2)
    # The long row is dropped and counted, never cut (the head reads the last token).
    assert [e["row"] for e in data.examples] == [2]
    assert data.dropped == [{"source": "d.json", "row": 1, "reason": "longer than max_length=3 (8 tokens)"}]
    with pytest.raises(RowError) as e:
        encode_classification([labelled_row({"text": "x", "label": "meh"}, "e.json", 9)], encoder(),
                              {"pos": 0, "neg": 1}, 1)
    assert str(e.value) == "e.json, row 9, field 'label': label 'meh' is not one the model was trained on (neg, pos)"


def test_read_task_rows_names_file_and_row(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"text": "a", "label": "x"}) + "\n" + json.dumps({"text": "b"}) + "\n")
    with pytest.raises(SftlabError, match=r"d.jsonl, row 2, field 'label': missing field"):
        read_task_rows(path, "classification")


def test_an_unseen_label_is_echoed_on_one_line_and_bounded():
    rows = [labelled_row({"text": "x", "label": "a\nb" + "c" * 100}, "e.json", 9)]
    with pytest.raises(RowError) as e:
        encode_classification(rows, encoder(), {f"l{k:02d}": k for k in range(25)}, 1)
    assert str(e.value) == ("e.json, row 9, field 'label': label 'a\\nb" + "c" * 57 + "…' is not one the model was "
                            "trained on (" + ", ".join(f"l{k:02d}" for k in range(20)) + ", … 5 more)")
