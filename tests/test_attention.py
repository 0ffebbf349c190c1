"""sftlab.training.attention: every example of a training row attends only within itself. Expected values are
computed here by hand: the example boundaries as literal lists, the attention as softmax(q·kᵀ·scale + causal mask)·v
per example."""

from __future__ import annotations

import torch

import pytest

from sftlab.training import attention
from sftlab.training.attention import (FLEX, NAME, VARLEN, cumulative_lengths, document_ids, flex_document_attention,
                                       packed_attention, register, segments, varlen_attention)


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


# --- the two-matmul path: examples that train on CPU, forward and backward against the hand-written attention ---

def with_grad(*tensors):
    return [t.detach().clone().requires_grad_() for t in tensors]


def hand_gradients(query, key, value, bounds, scale, grad_out):
    q, k, v = with_grad(query, key, value)
    out = by_hand(q, k, v, bounds, scale)
    out.backward(grad_out)
    return out.detach(), [q.grad, k.grad, v.grad]


@pytest.mark.parametrize("block", [128, 2])  # one block per example, and blocks of 2 query rows (the last one short)
def test_examples_that_train_take_two_matmuls_and_give_the_hand_written_attention_and_gradients(monkeypatch, block):
    monkeypatch.setattr(attention, "BLOCK", block)
    calls = []
    original = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                        lambda q, *a, **kw: calls.append(q.shape[2]) or original(q, *a, **kw))
    query, key, value = inputs(seed=3, heads=6, kv_heads=2)  # three query heads per key/value head
    grad_out = torch.randn(2, 7, 6, 8, generator=torch.Generator().manual_seed(4))
    expected, expected_grads = hand_gradients(query, key, value, BOUNDS, 0.3, grad_out)
    q, k, v = with_grad(query, key, value)
    out, _ = packed_attention(Attention().train(), q, k, v, None, scaling=0.3, position_ids=ROWS)
    out.backward(grad_out)
    assert calls == []  # no example went through sdpa
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    for got, want in zip([q.grad, k.grad, v.grad], expected_grads):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_an_example_longer_than_short_takes_the_fused_kernel_in_the_same_row(monkeypatch):
    calls = []
    original = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                        lambda q, *a, **kw: calls.append(q.shape[2]) or original(q, *a, **kw))
    monkeypatch.setattr(attention, "SHORT", 3)
    query, key, value = inputs(seed=5)
    grad_out = torch.randn(2, 7, 4, 8, generator=torch.Generator().manual_seed(6))
    expected, expected_grads = hand_gradients(query, key, value, BOUNDS, 0.25, grad_out)
    q, k, v = with_grad(query, key, value)
    out, _ = packed_attention(Attention().train(), q, k, v, None, scaling=0.25, position_ids=ROWS)
    out.backward(grad_out)
    assert calls == [4, 4]  # the two 4-token examples; the 3-, 1- and 2-token ones took two matmuls
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    for got, want in zip([q.grad, k.grad, v.grad], expected_grads):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("block", [128, 8])
def test_two_matmul_attention_in_bf16_and_under_autocast_stays_within_bf16_tolerance(monkeypatch, block):
    """bf16 inputs, and float32 inputs under bf16 autocast (what training runs: sdpa's dtype is autocast's), against
    the float32 hand-written attention: forward and every gradient within 2e-2 of its largest value (torch's own
    flash kernel in bf16 comes within 0.6 % here; per-block rounding of dK adds up to about 0.3 %)."""
    monkeypatch.setattr(attention, "BLOCK", block)
    query, key, value = inputs(seed=7, length=40, dim=16)
    rows = torch.tensor([list(range(25)) + list(range(15))] * 2)
    bounds = [[(0, 25), (25, 40)]] * 2
    grad_out = torch.randn(2, 40, 4, 16, generator=torch.Generator().manual_seed(8))
    expected, expected_grads = hand_gradients(query, key, value, bounds, 0.25, grad_out)
    for autocast in (False, True):
        q, k, v = with_grad(*(t if autocast else t.bfloat16() for t in (query, key, value)))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out, _ = packed_attention(Attention().train(), q, k, v, None, scaling=0.25, position_ids=rows)
        assert out.dtype == torch.bfloat16
        out.backward(grad_out.bfloat16())
        torch.testing.assert_close(out.float(), expected, atol=2e-2 * expected.abs().max(), rtol=0)
        for got, want in zip([q.grad, k.grad, v.grad], expected_grads):
            assert got.dtype == q.dtype
            torch.testing.assert_close(got.float(), want, atol=2e-2 * want.abs().max(), rtol=0)


# --- the kernel paths: the same attention in one call per layer ---

ROWS = torch.tensor([[0, 1, 2, 0, 1, 2, 3], [0, 0, 1, 2, 3, 0, 1]])
BOUNDS = [[(0, 3), (3, 7)], [(0, 1), (1, 5), (5, 7)]]


def test_document_ids_number_the_examples_of_each_row():
    assert document_ids(ROWS).tolist() == [[0, 0, 0, 1, 1, 1, 1], [0, 1, 1, 1, 1, 2, 2]]
    assert document_ids(torch.tensor([[3, 4, 0, 1]])).tolist() == [[0, 0, 1, 1]]
    assert ROWS.tolist() == [[0, 1, 2, 0, 1, 2, 3], [0, 0, 1, 2, 3, 0, 1]]  # the batch's own tensor is left alone


def test_cumulative_lengths_lay_the_rows_end_to_end():
    cu, longest = cumulative_lengths(ROWS)
    assert cu.dtype == torch.int32 and cu.tolist() == [0, 3, 7, 8, 12, 14] and longest == 4


@pytest.mark.parametrize("dtype, atol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_flex_attention_equals_each_example_on_its_own(dtype, atol):
    """Forward on CPU (torch 2.13 has no FlexAttention backward there); fp32 to 1e-5, bf16 to 2e-2 (bf16's 8-bit
    mantissa on values of order 1)."""
    query, key, value = (t.to(dtype) for t in inputs(length=130))  # past one 128-token block of the mask
    positions = torch.cat([torch.arange(70), torch.arange(60)])[None].expand(2, -1).clone()
    positions[1] = torch.cat([torch.arange(5), torch.arange(125)])
    with torch.no_grad():
        out, _ = flex_document_attention(Attention().train(), query, key, value, None, scaling=0.25,
                                         position_ids=positions)
    expected = by_hand(query.float(), key.float(), value.float(), [[(0, 70), (70, 130)], [(0, 5), (5, 130)]], 0.25)
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), expected, atol=atol, rtol=0)


def test_flex_attention_that_needs_gradients_on_cpu_takes_the_reference():
    query, key, value = (t.requires_grad_() for t in inputs())
    out, _ = flex_document_attention(Attention().train(), query, key, value, None, scaling=0.25, position_ids=ROWS)
    out.square().sum().backward()
    got = [t.grad.clone() for t in (query, key, value)]
    for t in (query, key, value):
        t.grad = None
    by_hand(query, key, value, BOUNDS, 0.25).square().sum().backward()
    for g, t in zip(got, (query, key, value)):
        torch.testing.assert_close(g, t.grad, atol=1e-5, rtol=1e-4)


def test_varlen_attention_hands_the_kernel_the_examples_end_to_end(monkeypatch):
    """The glue around torch's varlen kernel (CUDA-only): the kernel is replaced by attention over the examples that
    cu_seqlens names, written here; the output must be every example on its own again."""
    import torch.nn.attention.varlen as varlen

    seen = []

    def kernel(q, k, v, cu_q, cu_k, max_q, max_k, *, scale=None, window_size=(-1, -1), enable_gqa=False):
        seen.append((cu_q.tolist(), max_q, window_size, enable_gqa, tuple(q.shape), tuple(k.shape)))
        group = q.shape[1] // k.shape[1]
        out = torch.zeros_like(q, dtype=torch.float32)
        bounds = cu_q.tolist()
        for s, e in zip(bounds, bounds[1:]):
            for h in range(q.shape[1]):
                out[s:e, h] = causal_attention(q[s:e, h].float(), k[s:e, h // group].float(),
                                               v[s:e, h // group].float(), scale)
        return out.to(q.dtype)

    monkeypatch.setattr(varlen, "varlen_attn", kernel)
    query, key, value = (t.bfloat16() for t in inputs())
    out, _ = varlen_attention(Attention().train(), query, key, value, None, scaling=0.25, position_ids=ROWS)
    assert seen == [([0, 3, 7, 8, 12, 14], 4, (-1, 0), True, (14, 4, 8), (14, 2, 8))]
    expected = by_hand(query.float(), key.float(), value.float(), BOUNDS, 0.25)
    torch.testing.assert_close(out.float(), expected, atol=2e-2, rtol=0)
    # fp32 (the kernels take bf16/fp16 only) goes through the reference.
    fp32 = inputs()
    out, _ = varlen_attention(Attention().train(), *fp32, None, scaling=0.25, position_ids=ROWS)
    assert len(seen) == 1
    torch.testing.assert_close(out, by_hand(*fp32, BOUNDS, 0.25))


def test_the_document_mask_is_built_once_per_batch_and_gives_each_example_its_own_logits(tiny_model, monkeypatch):
    """A 2-layer model with a real tokenizer: two examples packed into one row through FlexAttention give the logits
    each gets alone, and the block mask is built once for the batch, not once per layer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    built = []
    original = attention._document_mask
    monkeypatch.setattr(attention, "_document_mask", lambda *a: built.append(1) or original(*a))
    tok = AutoTokenizer.from_pretrained(str(tiny_model))
    first = tok("The capital of France is Paris.")["input_ids"]
    second = tok("Two plus two is four")["input_ids"]
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model), attn_implementation=register(FLEX)).train()
    with torch.no_grad():
        packed = model(input_ids=torch.tensor([first + second]), use_cache=False,
                       position_ids=torch.tensor([list(range(len(first))) + list(range(len(second)))])).logits[0]
        assert built == [1]
        alone = [model(input_ids=torch.tensor([ids]), use_cache=False).logits[0] for ids in (first, second)]
    assert built == [1, 1, 1]
    torch.testing.assert_close(packed, torch.cat(alone), atol=1e-5, rtol=1e-4)


def test_choose_picks_the_loop_on_cpu_and_the_kernels_on_cuda(monkeypatch):
    assert attention.choose("cpu", True) == attention.choose("cpu", False) == NAME
    assert attention.choose("mps", True) == NAME
    installed = {"flash_attn": False, "torch.nn.attention.varlen": True}
    monkeypatch.setattr(attention.importlib.util, "find_spec", lambda name: object() if installed[name] else None)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda: (9, 0))
    assert attention.choose("cuda", True) == VARLEN
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda: (7, 5))  # no flash kernels before Ampere
    assert attention.choose("cuda", True) == FLEX
    installed["flash_attn"] = True
    assert attention.choose("cuda", True) == "flash_attention_2"
    assert attention.choose("cuda", False) == FLEX


# --- on a CUDA GPU (benchmarks/gpu_check.py): the kernels against the reference, loss and gradients ---

def _flat_batch(tok, device):
    texts = ["The capital of France is Paris.", "Two plus two is four, and four plus four is eight.", "Hello!",
             "Water boils at one hundred degrees Celsius at sea level."]
    ids = [tok(t)["input_ids"] for t in texts]
    row_a, row_b = ids[0] + ids[1], ids[2] + ids[3]
    width = max(len(row_a), len(row_b))
    pad = lambda r: r + [tok.eos_token_id] * (width - len(r))  # noqa: E731 (a packed row's tail padding)
    positions = [list(range(len(ids[0]))) + list(range(len(ids[1]))), list(range(len(ids[2]))) + list(range(len(ids[3])))]
    positions = [p + list(range(width - len(p))) for p in positions]
    return (torch.tensor([pad(row_a), pad(row_b)], device=device), torch.tensor(positions, device=device))


@pytest.mark.cuda
@pytest.mark.parametrize("kernel", [VARLEN, FLEX])
def test_cuda_kernels_give_the_references_loss_and_gradients(tmp_path, kernel):
    """bf16 autocast as training runs it: loss within 1e-2 relative, gradients within 5e-2 relative (norm) of the
    per-example loop's (head dim 16: the smallest the GPU kernels all take)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from helpers import make_tiny_model

    tiny_model = make_tiny_model(tmp_path / "model", hidden=64)
    if kernel == VARLEN and (not attention.has_varlen() or torch.cuda.get_device_capability() < (8, 0)):
        pytest.skip("no varlen flash attention on this GPU")
    tok = AutoTokenizer.from_pretrained(str(tiny_model))
    ids, positions = _flat_batch(tok, "cuda")
    results = []
    for name in (NAME, kernel):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(str(tiny_model), attn_implementation=register(name)).cuda().train()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(input_ids=ids, position_ids=positions, labels=ids, use_cache=False).loss
        loss.backward()
        results.append((loss.float(), {n: p.grad.float() for n, p in model.named_parameters() if p.grad is not None}))
    (ref_loss, ref_grads), (loss, grads) = results
    torch.testing.assert_close(loss, ref_loss, rtol=1e-2, atol=0)
    assert grads.keys() == ref_grads.keys()
    for n, g in grads.items():
        assert (g - ref_grads[n]).norm() <= 5e-2 * ref_grads[n].norm() + 1e-6, n
