"""sftlab/data/mixture.py: weights are shares of the examples; counts by largest remainders (literal cases)."""

import pytest

from sftlab.data.conversation import Conversation, Message
from sftlab.data.mixture import mix, mixture_counts
from sftlab.errors import SftlabError


@pytest.mark.parametrize("sizes, weights, total, counts", [
    ([10, 10], [1, 1], 20, [10, 10]),
    ([10, 10], [0.3, 0.7], 10, [3, 7]),
    ([5, 100], [0.5, 0.5], 11, [6, 5]),          # 5.5 and 5.5: the tie goes to the earlier file
    ([3, 3, 3], [1, 1, 1], 10, [4, 3, 3]),       # 3.33 each: one remainder left, to the first
    ([2, 50], [0.9, 0.1], 20, [18, 2]),          # a small file weighted up gives more than it has
    ([7, 7], [1, 0], 5, [5, 0]),
    ([1, 1, 1], [0.2, 0.3, 0.5], 7, [1, 2, 4]),  # 1.4, 2.1, 3.5 → 1, 2, 3 and the largest remainder (0.5) +1
])
def test_mixture_counts(sizes, weights, total, counts):
    assert mixture_counts(sizes, weights, total) == counts
    assert sum(counts) == total


@pytest.mark.parametrize("weights", [[0, 0], [-1, 2]])
def test_weights_must_be_non_negative_and_not_all_zero(weights):
    with pytest.raises(SftlabError, match="non-negative and not all zero"):
        mixture_counts([1, 1], weights, 2)


def _convs(tag, n):
    return [Conversation([Message("user", f"{tag}{i}"), Message("assistant", "a")]) for i in range(n)]


def test_mix_takes_each_file_its_count_and_repeats_a_small_one_whole_first():
    out, counts = mix([_convs("a", 2), _convs("b", 10)], [0.5, 0.5], ["a.json", "b.json"], seed=0, total=8)
    assert counts == {"a.json": 4, "b.json": 4}
    firsts = sorted(c.messages[0].content for c in out if c.messages[0].content.startswith("a"))
    assert firsts == ["a0", "a0", "a1", "a1"]  # both rows once, then both again (no replacement)
    with pytest.raises(SftlabError, match="e.json: has a weight but no usable rows"):
        mix([_convs("a", 2), []], [1, 1], ["a.json", "e.json"], seed=0)
