"""sftlab.training.attention: every example of a training row attends only within itself. Expected values are
computed here by hand: the example boundaries as literal lists, the attention as softmax(q·kᵀ·scale + causal mask)·v
per example."""

from __future__ import annotations

import torch

from sftlab.training.attention import NAME, packed_attention, register, segments


def test_segments_are_the_runs_of_positions_that_start_at_zero():
    assert segments(torch.tensor([0, 1, 2, 0, 1, 0])) == [(0, 3), (3, 5), (5, 6)]
    assert segments(torch.tensor([0, 1, 2, 3])) == [(0, 4)]
    assert segments(torch.tensor([0, 0, 0])) == [(0, 1), (1, 2), (2, 3)]
    # A row that does not start at 0 (a slice that begins inside an example): its first run is still one.
    assert segments(torch.tensor([3, 4, 0, 1])) == [(0, 2), (2, 4)]
    # A packed row's padding has positions 0, 1, … of its own: a segment of its own, which nobody attends to.
    assert segments(torch.tensor([0, 1, 0, 1, 2, 0, 1])) == [(0, 2), (2, 5), (5, 7)]


def causal_attention(q, k, v, scale):
    """One example, one head: softmax over the tokens at or before each position."""
    scores = q @ k.T * scale
    future = torch.triu(torch.ones(len(q), len(q), dtype=torch.bool), diagonal=1)
    return scores.masked_fill(future, float("-inf")).softmax(-1) @ v


def by_hand(query, key, value, bounds, scale):
    """[batch, heads, T, d] inputs → [batch, T, heads, d], each (start, end) of `bounds[row]` on its own; query head h
    reads key/value head h // (heads / kv_heads) (grouped-query attention)."""
    batch, heads, length, dim = query.shape
    group = heads // key.shape[1]
    out = torch.zeros(batch, length, heads, dim)
    for b in range(batch):
        for s, e in bounds[b]:
            for h in range(heads):
                kv = h // group
                out[b, s:e, h] = causal_attention(query[b, h, s:e], key[b, kv, s:e], value[b, kv, s:e], scale)
    return out


class Attention(torch.nn.Module):
    """What the attention function reads of the module calling it."""

    num_key_value_groups = 2
    is_causal = True


def inputs(seed=0, batch=2, heads=4, kv_heads=2, length=7, dim=8):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, heads, length, dim, generator=g), torch.randn(batch, kv_heads, length, dim, generator=g),
            torch.randn(batch, kv_heads, length, dim, generator=g))


def test_in_training_each_example_attends_causally_within_itself():
    query, key, value = inputs()
    positions = torch.tensor([[0, 1, 2, 0, 1, 2, 3], [0, 0, 1, 2, 3, 0, 1]])
    module = Attention().train()
    out, weights = packed_attention(module, query, key, value, None, scaling=0.25, position_ids=positions)
    assert weights is None and out.shape == (2, 7, 4, 8)
    expected = by_hand(query, key, value, [[(0, 3), (3, 7)], [(0, 1), (1, 5), (5, 7)]], 0.25)
    torch.testing.assert_close(out, expected)
    # One row of positions for a whole batch applies to every row.
    out, _ = packed_attention(module, query, key, value, None, scaling=0.25, position_ids=positions[:1])
    torch.testing.assert_close(out, by_hand(query, key, value, [[(0, 3), (3, 7)]] * 2, 0.25))


def test_a_row_of_one_example_is_plain_causal_attention():
    query, key, value = inputs(seed=1, batch=1)
    out, _ = packed_attention(Attention().train(), query, key, value, None, scaling=0.5,
                              position_ids=torch.arange(7)[None])
    torch.testing.assert_close(out, by_hand(query, key, value, [[(0, 7)]], 0.5))


def test_out_of_training_it_is_transformers_sdpa_with_the_mask_it_is_given():
    """Evaluation and generation: the mask transformers built decides (here: block-diagonal by hand)."""
    query, key, value = inputs(seed=2, batch=1)
    blocks = torch.zeros(7, 7, dtype=torch.bool)
    blocks[:3, :3] = blocks[3:, 3:] = True
    mask = (blocks & torch.ones(7, 7, dtype=torch.bool).tril())[None, None]
    positions = torch.tensor([[0, 1, 2, 0, 1, 2, 3]])
    out, _ = packed_attention(Attention().eval(), query, key, value, mask, scaling=0.25, position_ids=positions)
    torch.testing.assert_close(out, by_hand(query, key, value, [[(0, 3), (3, 7)]], 0.25))


def test_a_packed_row_gives_each_example_the_logits_it_has_alone(monkeypatch):
    """Through a whole (tiny, random) Llama in training mode: two examples packed into one row with restarting
    position_ids give the logits each gets as a row of its own."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from sftlab.training import attention

    rows = []
    monkeypatch.setattr(attention, "segments", lambda p: rows.append(p.tolist()) or segments(p))

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    model = LlamaForCausalLM(config)
    model.config._attn_implementation = register()
    assert NAME == "sftlab_packed" and model.config._attn_implementation == NAME
    model.train()
    first, second = [5, 9, 14, 3], [7, 7, 21]
    with torch.no_grad():
        packed = model(input_ids=torch.tensor([first + second]), position_ids=torch.tensor([[0, 1, 2, 3, 0, 1, 2]]),
                       use_cache=False).logits[0]
        alone = [model(input_ids=torch.tensor([ids]), use_cache=False).logits[0] for ids in (first, second)]
    torch.testing.assert_close(packed, torch.cat(alone), atol=1e-5, rtol=1e-4)
    assert rows[:2] == [[0, 1, 2, 3, 0, 1, 2]] * 2  # sftlab's attention did it, in each of the two layers


def test_the_fused_kernel_gets_no_mask_in_training(monkeypatch):
    """Per example, torch's sdpa runs causal without a mask (the fused kernel: no row × row matrix kept)."""
    calls = []
    original = torch.nn.functional.scaled_dot_product_attention

    def spy(q, k, v, *args, **kw):
        calls.append((q.shape[2], kw.get("attn_mask"), kw.get("is_causal")))
        return original(q, k, v, *args, **kw)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    query, key, value = inputs(batch=1)
    packed_attention(Attention().train(), query, key, value, None,
                     position_ids=torch.tensor([[0, 1, 2, 0, 1, 2, 3]]))
    assert calls == [(3, None, True), (4, None, True)]
