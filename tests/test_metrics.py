import math

import pytest

from sftlab.evaluation.metrics import bleu, exact_match, rouge_l, units


def test_units_split_cjk_per_character_and_words_whole():
    assert units("Hello, 世界! It's 2024年") == ["hello", ",", "世", "界", "!", "it", "'", "s", "2024", "年"]


def test_exact_match_ignores_case_and_spacing():
    assert exact_match(" The  cat\n", "the cat") == 1.0
    assert exact_match("the cat.", "the cat") == 0.0


def test_rouge_l_hand_worked():
    # LCS 3; precision 3/3, recall 3/4 -> F1 = 2·1·0.75 / 1.75
    assert rouge_l("the cat sat", "the cat sat down") == pytest.approx(1.5 / 1.75)
    # Chinese per character: 我喜欢猫 vs 我喜欢狗 -> LCS 3 of 4 each
    assert rouge_l("我喜欢猫", "我喜欢狗") == pytest.approx(0.75)
    assert rouge_l("", "abc") == 0.0


def test_bleu_hand_worked():
    assert bleu(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(1.0)
    # pred "a b c d" vs ref "a b c e": p1 3/4, p2 2/3, p3 1/2, p4 0 -> floor 0.1/1; same length, BP 1
    want = math.exp((math.log(3 / 4) + math.log(2 / 3) + math.log(1 / 2) + math.log(0.1)) / 4)
    assert bleu(["a b c d"], ["a b c e"]) == pytest.approx(want)
    # Brevity penalty: pred shorter than ref (2 vs 4 units), all n-gram precisions perfect up to n=2
    short = bleu(["猫狗"], ["猫狗鸟鱼"], max_n=2)
    assert short == pytest.approx(math.exp(1 - 4 / 2))
