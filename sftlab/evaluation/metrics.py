"""Reference metrics: exact match, ROUGE-L (F1 of the longest common subsequence) and corpus BLEU-4.

Text is split into units (sftlab/data/units.py) before comparing: every CJK character (Chinese, Japanese kana, Hangul) is
a unit of its own, since those scripts write no spaces; other words are runs of letters/digits;
punctuation marks are single units. Everything is lower-cased. All scores are fractions in [0, 1].
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Sequence

from sftlab.data.units import CJK, units  # noqa: F401  (the units compared; sftlab/data/units.py)


def exact_match(prediction: str, reference: str) -> float:
    return float(" ".join(prediction.lower().split()) == " ".join(reference.lower().split()))


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(prediction: str, reference: str) -> float:
    p, r = units(prediction), units(reference)
    lcs = lcs_length(p, r)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(p), lcs / len(r)
    return 2 * precision * recall / (precision + recall)


def _ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def bleu(predictions: Sequence[str], references: Sequence[str], max_n: int = 4) -> float:
    """Corpus BLEU (Papineni et al.): clipped n-gram precisions summed over the corpus, geometric mean
    for n = 1..4, brevity penalty. A precision with no match counts as 0.1 / total so short corpora
    do not collapse to 0 (sacrebleu's 'floor' smoothing)."""
    matches, totals = [0] * max_n, [0] * max_n
    pred_len = ref_len = 0
    for pred, ref in zip(predictions, references):
        p, r = units(pred), units(ref)
        pred_len, ref_len = pred_len + len(p), ref_len + len(r)
        for n in range(1, max_n + 1):
            pn, rn = _ngrams(p, n), _ngrams(r, n)
            matches[n - 1] += sum(min(c, rn[g]) for g, c in pn.items())
            totals[n - 1] += max(len(p) - n + 1, 0)
    if pred_len == 0 or totals[0] == 0:
        return 0.0
    logs = []
    for m, t in zip(matches, totals):
        if t == 0:
            return 0.0
        logs.append(math.log((m if m > 0 else 0.1) / t))
    bp = 1.0 if pred_len > ref_len else math.exp(1 - ref_len / pred_len)
    return bp * math.exp(sum(logs) / max_n)
