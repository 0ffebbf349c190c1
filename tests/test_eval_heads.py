"""Scoring labels (sftlab/evaluation/heads.py): metrics worked by hand, and which answers count as a label."""

from __future__ import annotations

import pytest

from sftlab.evaluation.heads import NOT_A_LABEL, answer_label, classification_metrics, reward_metrics


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


# ---- bounded before work (issue 46): a head of many labels on a few rows ----

def test_only_labels_that_occur_are_scored_and_tabled():
    labels = [f"l{i:04d}" for i in range(2000)]
    m = classification_metrics(["l0005", "l0007", "l0005"], ["l0005", "l1999", None], labels)
    assert m["confusion"] == {"labels": ["l0005", "l0007", "l1999"],
                              "columns": ["l0005", "l0007", "l1999", NOT_A_LABEL],
                              "matrix": [[1, 0, 0, 1], [0, 0, 1, 0], [0, 0, 0, 0]]}
    assert list(m["per_label"]) == ["l0005", "l0007", "l1999"] and m["labels_left_out"] == 1997
    assert m["per_label"]["l0005"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2})
    assert m["accuracy"] == pytest.approx(1 / 3) and m["macro_f1"] == pytest.approx((2 / 3 + 0.0) / 2)


def test_above_the_limit_the_confusion_table_is_left_out_with_a_sentence(tmp_path):
    from sftlab.evaluation.heads import _write

    labels = [f"label {i}" for i in range(10_000)]
    gold = labels[:60]
    m = classification_metrics(gold, gold, labels)
    assert "confusion" not in m
    assert m["confusion_skipped"] == ("60 labels occur (true or predicted); a confusion table and plot hold at most "
                                      "50, so there are none")
    _write(tmp_path, {"model": "m", **m}, [{"row": 1}])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions.jsonl", "summary.json"]
    assert (tmp_path / "summary.json").stat().st_size < 20_000


def test_a_row_keeps_the_probabilities_of_its_ten_likeliest_labels():
    from sftlab.evaluation.heads import _most_probable, _softmax

    names = [f"l{i}" for i in range(10_000)]
    scores = [0.0] * 10_000
    scores[42], scores[7] = 5.0, 4.0
    kept = _most_probable(names, _softmax(scores))
    assert list(kept)[:2] == ["l42", "l7"] and len(kept) == 10
    assert _most_probable(["a", "b"], [0.25, 0.75]) == {"a": 0.25, "b": 0.75}  # (few labels: all, in label order)


def test_label_names_are_text_in_the_tables_and_the_plot(tmp_path):
    import io

    from rich.console import Console

    from sftlab.evaluation.heads import _write, print_label_summary

    names = ["[/bold]", "$x^", "[red]hot"]
    m = {"model": "[b]m", **classification_metrics(names, names[::-1], names)}
    console = Console(file=io.StringIO(), width=200)
    print_label_summary(m, console)
    shown = console.file.getvalue()
    assert "[/bold]" in shown and "[red]hot" in shown and "[b]m" in shown
    _write(tmp_path, m, [{"row": 1}])
    assert (tmp_path / "confusion.png").stat().st_size > 0
