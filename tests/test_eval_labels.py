"""Scoring labels (sftlab/evaluation/labels.py): metrics worked by hand, and which answers count as a label."""

from __future__ import annotations

import pytest

from sftlab.evaluation.labels import NOT_A_LABEL, answer_label, classification_metrics, reward_metrics


def test_classification_metrics_by_hand():
    gold = ["a", "a", "b", "b", "c"]
    predicted = ["a", "b", "b", "b", None]  # None: an answer that is no label
    m = classification_metrics(gold, predicted, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(3 / 5)
    # a: P 1/1, R 1/2, F1 2/3; b: P 2/3, R 2/2, F1 0.8; c: never predicted, P 0, R 0, F1 0.
    assert m["per_label"]["a"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2})
    assert m["per_label"]["b"] == pytest.approx({"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2})
    assert m["per_label"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.8 + 0.0) / 3)
    assert m["confusion"] == {"labels": ["a", "b", "c"], "columns": ["a", "b", "c", NOT_A_LABEL],
                              "matrix": [[1, 1, 0, 0], [0, 2, 0, 0], [0, 0, 0, 1]]}


def test_macro_f1_leaves_out_labels_without_true_rows():
    m = classification_metrics(["a", "a"], ["a", "b"], ["a", "b"])
    # a: P 1, R 1/2, F1 2/3; b has no true row: not averaged in.
    assert m["macro_f1"] == pytest.approx(2 / 3)


def test_reward_metrics_by_hand():
    m = reward_metrics([1.0, 0.5, 2.0], [0.0, 1.0, 1.5])  # margins 1, -0.5, 0.5
    assert m == pytest.approx({"pairs": 3, "pairwise_accuracy": 2 / 3, "mean_margin": 1 / 3})


@pytest.mark.parametrize("answer, expected", [
    ("pos", "pos"), (" pos.\n", "pos"), ('"neg"', "neg"), ("Positive", None), ("pos, I think", None),
    ("正面。", "正面"), ("", None),
])
def test_plain_labels(answer, expected):
    assert answer_label(answer, {"pos": "pos", "neg": "neg", "正面": "正面"}) == expected


@pytest.mark.parametrize("answer, expected", [
    ('{"intent": "book", "slots": {"city": "Paris"}}', "L1"),
    ('```json\n{"slots": {"city": "Paris"}, "intent": "book"}\n```', "L1"),  # key order is not structure
    ('{"intent": "book", "slots": {"city": "paris"}}', None),
    ('{"intent": "book"}', None),
    ("intent: book", None),
    ('["a", 1]', "L2"), ('["a", "1"]', None),
])
def test_structured_labels_must_parse_and_equal(answer, expected):
    labels = {"L1": {"intent": "book", "slots": {"city": "Paris"}}, "L2": ["a", 1]}
    assert answer_label(answer, labels) == expected
