"""Mixing several data files by weight: weights are shares of the *examples* (README, docs/training.md)."""

from __future__ import annotations

import math
import random
from typing import Sequence

from sftlab.data.conversation import Conversation
from sftlab.errors import SftlabError


def shares(weights: Sequence[float]) -> list[float]:
    """Each weight's share of the sum, computed so that no finite weights overflow: divided by the largest first
    (each then at most 1, their sum at most the number of files), so two weights of 1e308 are half and half."""
    if any(not isinstance(w, (int, float)) or isinstance(w, bool) or not math.isfinite(w) or w < 0 for w in weights) \
            or not any(w > 0 for w in weights):
        raise SftlabError("dataset weights must be non-negative finite numbers and not all zero")
    top = max(weights)
    scaled = [w / top for w in weights]
    norm = math.fsum(scaled)
    return [w / norm for w in scaled]


def mixture_problem(weights: Sequence[float | None], total: int | None, replacement: bool) -> str | None:
    """Why the mixture keys cannot act on these files (their weights, None where not given), or None. They act
    whenever a file has a weight, one file alone included (its rows sampled or repeated to `total`)."""
    if any(w is not None for w in weights):
        return None
    for key, given in (("mixture_examples", total is not None), ("mixture_replacement", replacement)):
        if given:
            return (f"`{key}` has nothing to act on: no file in `datasets` has a `weight` (the mixture keys say how "
                    "weighted files are drawn; give a file a weight, or use `limit` for the first N rows)")
    return None


def mixture_counts(sizes: Sequence[int], weights: Sequence[float], total: int) -> list[int]:
    """How many examples each file gives: w_k / sum(w) × total, rounded by largest remainders so that the counts add
    up to `total` exactly and each is within one of its share (ties to the earlier file). `sizes` (the files' rows)
    only say how many files there are; a count may exceed its file's size (its rows are then repeated)."""
    if len(sizes) != len(weights):
        raise SftlabError(f"{len(sizes)} files but {len(weights)} weights")
    exact = [share * total for share in shares(weights)]
    counts = [int(x) for x in exact]
    for k in sorted(range(len(exact)), key=lambda k: (counts[k] - exact[k], k))[: total - sum(counts)]:
        counts[k] += 1
    return counts


def mix(
    groups: Sequence[Sequence[Conversation]], weights: Sequence[float], paths: Sequence[str], seed: int,
    *, replacement: bool = False, total: int | None = None,
) -> tuple[list[Conversation], dict[str, int]]:
    """Sample the sources in the ratio of their weights: shares of the *examples*. `total` examples in all
    (default: as many as the sources have rows); source k contributes w_k / sum(w) × total of them, rounded
    so that the counts add up to `total` exactly (largest remainders), so each source is within one example
    of its share. Without replacement (default) a source's rows are all used before any is repeated (a
    small domain set weighted up is seen several times, in a fresh order each time); with replacement every
    example is drawn independently. Deterministic for a seed.
    """
    total = sum(len(g) for g in groups) if total is None else total
    wants = mixture_counts([len(g) for g in groups], weights, total)
    rng = random.Random(seed)
    out: list[Conversation] = []
    counts: dict[str, int] = {}
    for group, want, path in zip(groups, wants, paths):
        if want and not group:
            raise SftlabError(f"{path}: has a weight but no usable rows to mix in")
        picked: list[Conversation] = []
        if replacement:
            picked = [group[rng.randrange(len(group))] for _ in range(want)]
        while len(picked) < want:
            order = list(group)
            rng.shuffle(order)
            picked += order[: want - len(picked)]
        counts[path] = len(picked)
        out += picked
    rng.shuffle(out)
    return out, counts
