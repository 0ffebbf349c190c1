"""Diversity and balance of a data set: distinct n-grams, leading words, length distributions."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Sequence

import numpy as np

from sftlab.data.units import CJK, units

_CJK = re.compile(f"[{CJK}]")
_POLITE = re.compile(r"^(?:please|kindly|can you|could you|would you|请你|请您|请|帮我|麻烦你?)\s*[,，]?\s*", re.I)
_MARKER = re.compile(r"^[\s\"'“”‘’#*\-–—:：.。,，!！?？]*(?:\d+[.)、]\s*)?[\s\"'“”‘’#*\-–—:：]*")
_WORD = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*")


def split_words(value: str) -> list[str]:
    return [u for u in units(value.casefold()) if u[0].isalnum() or _CJK.match(u[0])]


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct n-grams / all n-grams over the texts (words; every CJK character is a word)."""
    seen: set[tuple[str, ...]] = set()
    total = 0
    for t in texts:
        words = split_words(t)
        grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return round(len(seen) / total, 4) if total else 0.0


def leading_word(instruction: str) -> str | None:
    """The first word of an instruction, after "please"/"请": for English the word ("write"), for
    Chinese (no spaces) its first two characters ("写一", "生成", "解释"), which is the verb in most
    instructions."""
    s = _POLITE.sub("", _MARKER.sub("", instruction))
    if not s:
        return None
    if _CJK.match(s[0]):
        head = "".join(_CJK.findall(s[:2]))
        return head or None
    m = _WORD.match(s)
    return m.group(0).casefold() if m else None


def leading_words(instructions: Sequence[str], top: int = 15) -> list[dict[str, Any]]:
    counts = Counter(w for w in map(leading_word, instructions) if w)
    n = len(instructions) or 1
    return [{"word": w, "count": c, "fraction": round(c / n, 4)} for w, c in counts.most_common(top)]


def distribution(values: Sequence[int], bins: int = 20) -> dict[str, Any]:
    """Summary and histogram of token counts (the last bin takes everything above the 99th percentile
    so one huge row does not squash the rest)."""
    if not values:
        return {"count": 0}
    a = np.asarray(values, dtype=np.int64)
    p99 = float(np.percentile(a, 99))
    top = max(int(np.ceil(p99)), int(a.min()) + 1)
    edges = np.linspace(int(a.min()), top, bins + 1)
    counts, _ = np.histogram(np.minimum(a, top), bins=edges)
    return {
        "count": int(a.size),
        "min": int(a.min()),
        "mean": round(float(a.mean()), 1),
        "p50": int(np.percentile(a, 50)),
        "p90": int(np.percentile(a, 90)),
        "p99": int(p99),
        "max": int(a.max()),
        "histogram": {"edges": [round(float(e), 1) for e in edges], "counts": [int(c) for c in counts]},
    }
