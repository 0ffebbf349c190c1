"""Packing and collation pinned with literal examples."""

from __future__ import annotations

import pytest
import torch

from sftlab.data.collate import Collator
from sftlab.data.example import Example
from sftlab.data.packing import pack, pack_lengths, packing_efficiency
from sftlab.errors import SftlabError

X = -100


def test_best_fit_decreasing_rows():
    # Longest first; each example goes to the open row with the least free space that still fits.
    assert pack_lengths([3, 4, 1, 2, 5], 6) == [[4, 2], [1, 3], [0]]
    assert pack_lengths([2, 2, 2], 4) == [[0, 1], [2]]
    assert pack_lengths([4, 4], 4) == [[0], [1]]
    assert pack_lengths([], 4) == []


def test_best_fit_prefers_the_tightest_row_not_the_first():
    # After 5 and 3 open rows with free 3 and 5, a 3 goes to the row with free 3 (best fit), not to
    # the first opened (first fit would be the same here) … and a 2 then to the row with free 2.
    assert pack_lengths([5, 3, 3, 2, 2], 8) == [[0, 1], [2, 3, 4]]
    assert pack_lengths([6, 5, 2, 2], 8) == [[0, 2], [1, 3]]


def test_no_example_is_ever_split_and_all_are_placed():
    lengths = [7, 1, 3, 8, 2, 2, 5, 4, 6, 1]
    rows = pack_lengths(lengths, 8)
    assert sorted(i for r in rows for i in r) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in r) <= 8 for r in rows)


def test_too_long_example_is_an_error():
    with pytest.raises(SftlabError, match="example 1 has 9 tokens, more than max_length=8"):
        pack_lengths([3, 9], 8)


def test_pack_rows_position_ids_and_boundary_labels():
    e0 = Example([1, 2, 3], [X, 2, 3])
    e1 = Example([4, 5, 6, 7], [X, X, 6, 7])
    e2 = Example([8, 9], [8, 9])
    rows = pack([e0, e1, e2], 6)
    assert [r.to_dict() for r in rows] == [
        {"input_ids": [4, 5, 6, 7, 8, 9], "labels": [X, X, 6, 7, X, 9], "position_ids": [0, 1, 2, 3, 0, 1], "lengths": [4, 2]},
        {"input_ids": [1, 2, 3], "labels": [X, 2, 3], "position_ids": [0, 1, 2], "lengths": [3]},
    ]
    # The first token of e2 (8) is not a target of e1's last token: its label became -100.
    assert packing_efficiency(rows, 6) == pytest.approx(9 / 12)


def test_pack_carries_weights():
    rows = pack([Example([1, 2], [X, 2], weights=[0.0, 0.5]), Example([3, 4], [3, 4])], 4)
    assert rows[0].weights == [0.0, 0.5, 0.0, 1.0]


def test_padding_collator_literal():
    batch = Collator(pad_token_id=0, pad_to_multiple_of=4)(
        [{"input_ids": [1, 2, 3], "labels": [X, 2, 3]}, {"input_ids": [4], "labels": [4]}]
    )
    assert batch["input_ids"].tolist() == [[1, 2, 3, 0], [4, 0, 0, 0]]
    assert batch["labels"].tolist() == [[X, 2, 3, X], [4, X, X, X]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 0, 0, 0]]
    assert "position_ids" not in batch
    no_multiple = Collator(pad_token_id=9)([{"input_ids": [1, 2, 3], "labels": [X, 2, 3]}, {"input_ids": [4], "labels": [4]}])
    assert no_multiple["input_ids"].tolist() == [[1, 2, 3], [4, 9, 9]]


def test_packed_collator_gives_positions_and_no_attention_mask():
    rows = [
        {"input_ids": [1, 2, 3], "labels": [X, 2, X], "position_ids": [0, 1, 0]},
        {"input_ids": [4, 5, 6, 7, 8], "labels": [X, 5, 6, 7, 8], "position_ids": [0, 1, 2, 3, 4]},
    ]
    batch = Collator(pad_token_id=0, pad_to_multiple_of=4)(rows)
    assert batch["position_ids"].tolist() == [[0, 1, 0, 0, 1, 2, 3, 4], [0, 1, 2, 3, 4, 0, 1, 2]]
    assert batch["labels"].tolist() == [[X, 2, X, X, X, X, X, X], [X, 5, 6, 7, 8, X, X, X]]
    assert "attention_mask" not in batch


def _tiny_model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    cfg._attn_implementation = "sdpa"
    return LlamaForCausalLM(cfg).eval()


def test_loss_packed_equals_unpacked():
    examples = [
        Example([1, 5, 9, 13, 17], [X, X, 9, 13, 17]),
        Example([2, 6, 10], [X, 6, 10]),
        Example([3, 7, 11, 15], [X, X, X, 15]),
        Example([4, 8], [4, 8]),
    ]
    model = _tiny_model()
    unpacked = Collator(pad_token_id=0)([{"input_ids": e.input_ids, "labels": e.labels} for e in examples])
    rows = pack(examples, 8)
    assert len(rows) == 2
    packed = Collator(pad_token_id=0)([r.to_dict() for r in rows])
    with torch.no_grad():
        loss_unpacked = model(**unpacked, use_cache=False).loss
        # use_cache=False matters: with a KV cache transformers does not look for packed sequences.
        loss_packed = model(**packed, use_cache=False).loss
    assert loss_packed.item() == pytest.approx(loss_unpacked.item(), abs=1e-5)
    # Control: the same rows without reset positions let examples see each other and the loss moves.
    with torch.no_grad():
        leaky = model(input_ids=packed["input_ids"], labels=packed["labels"], use_cache=False).loss
    assert abs(leaky.item() - loss_unpacked.item()) > 1e-4


def test_padding_free_collator_literal():
    """The batch's examples end to end in one row: no padding, positions restart, first labels -100."""
    batch = Collator(pad_token_id=0, padding_free=True)(
        [{"input_ids": [1, 2, 3], "labels": [X, 2, 3]}, {"input_ids": [4, 5], "labels": [4, 5]},
         {"input_ids": [6], "labels": [X]}]
    )
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4, 5, 6]]
    assert batch["labels"].tolist() == [[X, 2, 3, X, 5, X]]  # 4 would be predicted from 3: not a target
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0]]
    assert set(batch) == {"input_ids", "labels", "position_ids"}  # no attention mask, no weights


def test_padding_free_collator_weights_and_packed_rows():
    rows = [
        {"input_ids": [1, 2, 3], "labels": [X, 2, 3], "position_ids": [0, 0, 1], "weights": [0.0, 0.5, 1.0]},
        {"input_ids": [4, 5], "labels": [X, 5], "position_ids": [0, 1]},
    ]
    batch = Collator(pad_token_id=0, padding_free=True)(rows)
    assert batch["position_ids"].tolist() == [[0, 0, 1, 0, 1]]  # a packed row keeps its own restarts
    assert batch["weights"].tolist() == [[0.0, 0.5, 1.0, 0.0, 1.0]]
