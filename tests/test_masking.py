"""Masking (sftlab/data/masking.py) on tiny literal inputs: token ids, where each token's first character lies, and
the trained character spans in; labels, inserted EOS tokens, weights and inspect's token ranges out (docs/data.md,
"The masking contract"). The real tokenizers' token-for-token cases are in test_encode.py."""

from __future__ import annotations

import bisect

import numpy as np

from sftlab.data.conversation import Conversation, Message
from sftlab.data.example import Dropped
from sftlab.data.masking import Masking, mask_spans, token_parts
from sftlab.data.render import Piece

X = -100  # IGNORE_INDEX, written out
EOS = 2
# Five tokens whose first characters are 0, 3, 5, 8 and 9 (a text of 11 characters).
STARTS = [0, 3, 5, 8, 9]


def locate(char: int) -> int:
    return bisect.bisect_left(STARTS, char)


def test_a_token_is_trained_iff_its_first_character_is_in_a_span_and_an_answer_gets_eos():
    ids = [10, 11, 12, 13, 14]
    labels, weights, inserted = mask_spans(ids, locate, [(4, 9, 1.0, "answer")], frozenset({EOS}), EOS)
    # Tokens starting at 5 and 8 lie in [4, 9); the one starting at 3 runs into the span but starts before it.
    assert ids == [10, 11, 12, 13, EOS, 14]
    assert labels == [X, X, 12, 13, EOS, X]
    assert (weights, inserted) == (None, [4])


def test_an_answer_ending_in_a_special_token_gets_no_eos():
    ids = [10, 11, 12, 13, 14]
    labels, _, inserted = mask_spans(ids, locate, [(5, 9, 1.0, "answer")], frozenset({EOS, 13}), EOS)
    assert ids == [10, 11, 12, 13, 14] and labels == [X, X, 12, 13, X] and inserted == []


def test_the_eos_the_template_writes_right_after_an_answer_is_trained_not_doubled():
    ids = [10, 11, 12, 13, EOS]
    labels, _, inserted = mask_spans(ids, locate, [(5, 9, 1.0, "answer")], frozenset({EOS}), EOS)
    assert ids == [10, 11, 12, 13, EOS] and labels == [X, X, 12, 13, EOS] and inserted == []


def test_a_reasoning_span_gets_no_eos_and_weights_follow_the_spans():
    ids = [10, 11, 12, 13, 14]
    spans = [(3, 5, 0.5, "reasoning"), (5, 9, 0.5, "answer")]
    labels, weights, inserted = mask_spans(ids, locate, spans, frozenset({EOS}), EOS)
    assert ids == [10, 11, 12, 13, EOS, 14]
    assert labels == [X, 11, 12, 13, EOS, X]
    assert weights == [0.0, 0.5, 0.5, 0.5, 0.5, 0.0]
    assert inserted == [4]


def test_token_parts_move_past_inserted_eos_which_belongs_to_the_answer():
    # Reasoning is token 1, the answer tokens 2-3 and the EOS inserted after them (at 4), a tool result token 4 (5
    # after the insertion).
    parts = [(3, 5, "reasoning"), (5, 9, "answer"), (9, 11, "tool_result")]
    assert token_parts(parts, locate, [4], 6) == [(1, 2, "reasoning"), (2, 5, "answer"), (5, 6, "tool_result")]


def _piece(train_all=False, is_text=False, spans=()):
    conv = Conversation([Message("user", "q"), Message("assistant", "a")], source="f.jsonl", row=3, is_text=is_text)
    return Piece("0123456789a", list(spans), conv, train_all=train_all)


def test_truncation_keeps_the_start_and_an_example_left_untrained_is_dropped_with_the_reason():
    masking = Masking(max_length=4, eos_id=EOS, bos_id=1, adds_bos=False, special_ids=frozenset({EOS}))
    ids = np.array([10, 11, 12, 13, 14])
    example, truncated = masking.example(_piece(spans=[(3, 9, 1.0, "answer")]), ids, locate)
    assert (example.input_ids, example.labels, truncated) == ([10, 11, 12, 13], [X, 11, 12, 13], True)
    lost, truncated = masking.example(_piece(spans=[(9, 11, 1.0, "answer")]), ids, locate)
    assert lost == Dropped("f.jsonl", 3, "answer lost to truncation at max_length=4") and truncated


def test_raw_text_gets_the_tokenizers_bos_and_a_final_eos_and_trains_everything():
    masking = Masking(max_length=10, eos_id=EOS, bos_id=1, adds_bos=True, special_ids=frozenset({EOS}))
    example, _ = masking.example(_piece(train_all=True, is_text=True), np.array([10, 11]), locate)
    assert example.input_ids == example.labels == [1, 10, 11, EOS]
    # A conversation trained whole (train_on: all) is trained exactly as its template writes it.
    example, _ = masking.example(_piece(train_all=True), np.array([10, 11]), locate)
    assert example.input_ids == example.labels == [10, 11]
