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
    with pytest.raises(SftlabError, match="must be non-negative finite numbers and not all zero"):
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


@pytest.mark.parametrize("weights, total, counts", [
    ([1e308, 1e308], 8, [4, 4]),                # their sum overflows to inf; normalised first, half and half
    ([1e308, 1e308, 1e308], 9, [3, 3, 3]),
    ([1.5e308, 0.5e308], 8, [6, 2]),            # 0.75 and 0.25
    ([1e308, 1e-308], 8, [8, 0]),               # 1e-616 of the whole: nothing
    ([5e-324, 5e-324], 6, [3, 3]),              # the smallest subnormal weights
])
def test_weights_are_normalised_before_they_are_summed(weights, total, counts):
    assert mixture_counts([1] * len(weights), weights, total) == counts


@pytest.mark.parametrize("weights", [[float("inf"), 1], [float("nan"), 1], [True, 1]])
def test_weights_that_are_not_finite_numbers_are_refused(weights):
    with pytest.raises(SftlabError, match="non-negative finite numbers and not all zero"):
        mixture_counts([1, 1], weights, 2)


def _rows_file(path, tag, n):
    import json

    path.write_text(json.dumps([{"instruction": f"{tag}{i}", "output": "a"} for i in range(n)]))
    return str(path)


def test_two_files_weighted_1e308_each_give_the_rows_read(tmp_path):
    from sftlab.data.pipeline import Source, load_sources

    a, b = _rows_file(tmp_path / "a.json", "a", 3), _rows_file(tmp_path / "b.json", "b", 5)
    convs, report = load_sources([Source(a, weight=1e308), Source(b, weight=1e308)])
    assert len(convs) == 8 and report.mixture == {a: 4, b: 4}
    assert report.mixture_target == {a: 0.5, b: 0.5}


def test_one_weighted_file_with_mixture_examples_gives_that_many(tmp_path):
    from collections import Counter

    from sftlab.data.pipeline import Source, load_sources

    a = _rows_file(tmp_path / "a.json", "a", 20)
    convs, report = load_sources([Source(a, weight=1)], total=50)
    assert len(convs) == 50 and report.mixture == {a: 50}
    # Two whole passes over the 20 rows, then 10 of them a third time.
    seen = Counter(c.messages[0].content for c in convs)
    assert sorted(seen.values()) == [2] * 10 + [3] * 10 and set(seen) == {f"a{i}" for i in range(20)}
    # Without a mixture key one weighted file is read as it is (in its order, no mixing).
    convs, report = load_sources([Source(a, weight=1)])
    assert [c.messages[0].content for c in convs] == [f"a{i}" for i in range(20)] and report.mixture is None


@pytest.mark.parametrize("keys, key", [({"total": 50}, "mixture_examples"), ({"replacement": True},
                                                                              "mixture_replacement")])
def test_mixture_keys_with_no_weighted_file_are_refused_with_the_reason(tmp_path, keys, key):
    from sftlab.data.pipeline import Source, load_sources

    a, b = _rows_file(tmp_path / "a.json", "a", 3), _rows_file(tmp_path / "b.json", "b", 5)
    with pytest.raises(SftlabError) as e:
        load_sources([Source(a), Source(b)], **keys)
    assert str(e.value) == (f"`{key}` has nothing to act on: no file in `datasets` has a `weight` (the mixture keys "
                            "say how weighted files are drawn; give a file a weight, or use `limit` for the first N "
                            "rows)")
