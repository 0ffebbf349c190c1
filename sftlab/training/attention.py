"""Attention for training rows: each example of a row attends only within itself.

The examples of a padding-free or packed row are the runs of its position_ids that start at 0. transformers
handles such rows on sdpa/eager with a block-diagonal mask: exact, but it computes (and keeps for backward) the full
row × row attention matrix, most of it on masked-out pairs. sftlab's training attention instead runs one of:

- ``sftlab_packed`` (the reference and the fallback): a Python loop over the examples. On CPU an example of up to
  SHORT tokens that trains runs as two batched matmuls around a softmax, by blocks of query rows (``_ShortCausal``:
  1.65× and 1.96× the CPU flash kernel's speed, forward and backward, on the benchmark recipes' rows,
  benchmarks/flat_attention.py); a longer one, or one on another device, takes causal sdpa's fused kernel with no
  mask and no stored matrix;
- ``sftlab_varlen``: PyTorch's variable-length flash attention (``torch.nn.attention.varlen``) over the examples'
  cumulative lengths, one call per layer (CUDA, bf16/fp16);
- ``sftlab_flex``: FlexAttention with a document mask (the example each token belongs to), compiled (CUDA);
- ``flash_attention_2`` when the flash_attn package is installed (transformers' own variable-length path).

What a kernel needs from the position_ids (the block mask, the cumulative lengths) is built once per batch and
reused by every layer. Right-padded unpacked rows are one example each (padding comes last, so causal attention
never lets a real token see it).

Every one acts in training mode only. Evaluation and generation (left padding, KV cache) take the regular sdpa path
with the mask transformers builds.
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Any, Callable

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

NAME = "sftlab_packed"
VARLEN = "sftlab_varlen"
FLEX = "sftlab_flex"


def segments(positions: torch.Tensor) -> list[tuple[int, int]]:
    """(start, end) of each example of a row: the runs of position_ids that start at 0."""
    starts = (positions == 0).nonzero().flatten().tolist()
    if not starts or starts[0] != 0:
        starts = [0] + starts
    return list(zip(starts, starts[1:] + [positions.shape[0]]))


def document_ids(positions: torch.Tensor) -> torch.Tensor:
    """[batch, T] → the index of the example each token belongs to in its row (0, 0, 0, 1, 1, …): a new example
    wherever position_ids restart at 0 (a row that starts inside an example still starts with example 0)."""
    starts = positions == 0
    starts[:, 0] = False
    return starts.cumsum(-1)


def cumulative_lengths(positions: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The examples of all rows, the rows laid end to end: their start offsets and the total (int32, the
    ``cu_seqlens`` of variable-length kernels), and the longest example."""
    batch, length = positions.shape
    bounds = [b * length + s for b in range(batch) for s, _ in segments(positions[b])] + [batch * length]
    cu = torch.tensor(bounds, dtype=torch.int32, device=positions.device)
    return cu, int((cu[1:] - cu[:-1]).max())


class _PerBatch:
    """What a kernel derives from a batch's position_ids, derived once: every layer is handed the same
    position_ids tensor, so the last one seen (kept, so that its id cannot be reused) is the key."""

    def __init__(self) -> None:
        self.positions: torch.Tensor | None = None
        self.values: dict[str, Any] = {}

    def get(self, positions: torch.Tensor, key: str, build: Callable[[], Any]) -> Any:
        if positions is not self.positions:
            self.positions, self.values = positions, {}
        if key not in self.values:
            self.values[key] = build()
        return self.values[key]


_batch = _PerBatch()


def _rows(query: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    return positions.expand(query.shape[0], -1) if positions.shape[0] != query.shape[0] else positions


def _trains(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, kwargs: dict) -> bool:
    """Training on whole rows (not evaluation, not a KV cache): the case the examples' own attention is for."""
    return module.training and kwargs.get("position_ids") is not None and query.shape[2] == key.shape[2]


def _sdpa(module, query, key, value, attention_mask, scaling, dropout, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)


# The longest example that takes the two-matmul attention. It keeps its softmax probabilities for backward, about
# heads·L²/2 values a layer (bf16: 9.4 MB at 1,024 tokens for the default model's 9 heads, about half of what the
# rest of the layer keeps for those tokens); the flash kernel, which longer examples take, keeps none.
SHORT = 1024
# Query rows per block: block i's rows attend to keys 0 … its last row, so the scores above the diagonal beyond the
# block are never computed, and each block's scores stay small enough for the cache (measured: faster than 192
# or 256).
BLOCK = 128

_causal: dict[torch.dtype, torch.Tensor] = {}


def _causal_mask(rows: slice, keys: int, dtype: torch.dtype) -> torch.Tensor:
    """[rows, keys] of the causal mask: 0 on and below the diagonal, -inf above (a slice of one square matrix per
    dtype, SHORT × SHORT unless a longer example asked for more)."""
    if dtype not in _causal or _causal[dtype].shape[0] < keys:
        size = max(SHORT, keys)
        _causal[dtype] = torch.full((size, size), float("-inf"), dtype=dtype).triu_(1)
    return _causal[dtype][rows, :keys]


class _ShortCausal(torch.autograd.Function):
    """Causal attention of one example by blocks of BLOCK query rows, each block's query heads grouped under their
    key/value head (query head h reads key/value head h // group, as transformers' repeat_kv lays them out), so that
    no key or value is repeated. For a block Q of rows s … e−1 and the keys and values K, V of positions 0 … e−1:

        forward:  S = scale·Q·Kᵀ + causal mask,  P = softmax(S),  O = P·V          (P kept for backward)
        backward: dV += Pᵀ·dO,  dP = dO·Vᵀ,  dS = P ∘ (dP − rowsum(dP ∘ P)),  dQ = scale·dS·K,  dK += scale·dSᵀ·Q

    Inputs [heads, L, d] (any layout: each block is reshaped, copied where it must be) and [kv_heads, L, d]
    (contiguous), one dtype. Matmuls accumulate in fp32 and round once;
    softmax and its backward compute in fp32 (PyTorch's CPU kernels) and round once; dK and dV are summed over the
    blocks in fp32 and rounded once."""

    @staticmethod
    def forward(ctx, query, key, value, scale):  # type: ignore[override]
        heads, length, dim = query.shape
        kv = key.shape[0]
        group = heads // kv
        outs, saved = [], []
        for s in range(0, length, BLOCK):
            e = min(s + BLOCK, length)
            block = query[:, s:e].reshape(kv, group * (e - s), dim)
            scores = torch.baddbmm(torch.empty((), dtype=query.dtype), block, key[:, :e].transpose(1, 2), beta=0,
                                   alpha=scale)
            scores.view(kv, group, e - s, e).add_(_causal_mask(slice(s, e), e, query.dtype))
            probs = torch.softmax(scores, -1)
            outs.append(torch.bmm(probs, value[:, :e]).view(heads, e - s, dim))
            saved += [block, probs]
        ctx.save_for_backward(key, value, *saved)
        ctx.scale = scale
        return torch.cat(outs, 1) if len(outs) > 1 else outs[0]

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        key, value, *saved = ctx.saved_tensors
        kv, length, dim = key.shape
        heads = grad_out.shape[0]
        grad_key = torch.zeros(key.shape, dtype=torch.float32, device=key.device)
        grad_value = torch.zeros(value.shape, dtype=torch.float32, device=value.device)
        grad_query = []
        for i, s in enumerate(range(0, length, BLOCK)):
            e = min(s + BLOCK, length)
            block, probs = saved[2 * i], saved[2 * i + 1]
            grad = grad_out[:, s:e].reshape(block.shape)
            grad_value[:, :e] += torch.bmm(probs.transpose(1, 2), grad)
            grad_scores = torch._softmax_backward_data(torch.bmm(grad, value[:, :e].transpose(1, 2)), probs, -1,
                                                       probs.dtype)
            grad_query.append(torch.bmm(grad_scores, key[:, :e]).mul_(ctx.scale).view(heads, e - s, dim))
            grad_key[:, :e] += torch.bmm(grad_scores.transpose(1, 2), block)
        grad_query = torch.cat(grad_query, 1) if len(grad_query) > 1 else grad_query[0]
        return grad_query, grad_key.mul_(ctx.scale).to(key.dtype), grad_value.to(value.dtype), None


def _compute_dtype(query: torch.Tensor) -> torch.dtype:
    """The dtype sdpa computes in: autocast's when it is on for the query's device, else the query's."""
    device = query.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else query.dtype


def _short_path(query: torch.Tensor, key: torch.Tensor, dropout: float) -> bool:
    """Whether this layer's short examples take the two-matmul attention: on CPU, training with gradients, no
    dropout, query heads in whole groups per key/value head."""
    return (query.device.type == "cpu" and not dropout and query.shape[1] % key.shape[1] == 0
            and torch.is_grad_enabled() and query.requires_grad)


def _example(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scaling: float | None, dropout: float,
             short: bool) -> torch.Tensor:
    """Causal attention of one example, [heads, L, d] → [heads, L, d]."""
    if short and query.shape[1] <= SHORT:
        scale = query.shape[-1] ** -0.5 if scaling is None else scaling
        return _ShortCausal.apply(query, key.contiguous(), value.contiguous(), scale)
    return F.scaled_dot_product_attention(query[None], key[None], value[None], is_causal=True, scale=scaling,
                                          dropout_p=dropout, enable_gqa=query.shape[0] != key.shape[0])[0]


def packed_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: Any, scaling: float | None = None, dropout: float = 0.0, **kwargs: Any):
    """The reference: causal attention on each example of each row. A row is cut into its examples with one split
    (whose backward is one concatenation), cast once to the dtype sdpa would compute in."""
    if not _trains(module, query, key, kwargs):
        return _sdpa(module, query, key, value, attention_mask, scaling, dropout, **kwargs)
    positions = _rows(query, kwargs["position_ids"])
    short = _short_path(query, key, dropout)
    dtype = _compute_dtype(query)
    rows = []
    with torch.autocast(query.device.type, enabled=False):
        for b in range(query.shape[0]):
            lengths = [e - s for s, e in segments(positions[b])]
            q, k, v = (t[b].to(dtype).split(lengths, dim=1) for t in (query, key, value))
            parts = [_example(*example, scaling, dropout, short) for example in zip(q, k, v)]
            rows.append(torch.cat(parts, dim=1) if len(parts) > 1 else parts[0])
    out = torch.stack(rows) if len(rows) > 1 else rows[0][None]
    return out.transpose(1, 2).contiguous(), None


def varlen_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: Any, scaling: float | None = None, dropout: float = 0.0, **kwargs: Any):
    """All examples of the batch in one variable-length flash-attention call per layer. Its kernels take bf16/fp16
    without dropout; anything else goes through the reference."""
    if not _trains(module, query, key, kwargs):
        return _sdpa(module, query, key, value, attention_mask, scaling, dropout, **kwargs)
    if dropout or query.dtype not in (torch.bfloat16, torch.float16):
        return packed_attention(module, query, key, value, attention_mask, scaling, dropout, **kwargs)
    from torch.nn.attention.varlen import varlen_attn

    given = kwargs["position_ids"]
    cu, longest = _batch.get(given, "varlen", lambda: cumulative_lengths(_rows(query, given)))
    batch, heads, length, dim = query.shape

    def flat(t: torch.Tensor) -> torch.Tensor:  # [batch, heads, T, d] → [batch·T, heads, d]
        return t.transpose(1, 2).reshape(batch * length, t.shape[1], dim)

    key, value, options = _varlen_options(varlen_attn, heads, key, value, scaling)
    out = varlen_attn(flat(query), flat(key), flat(value), cu, cu, longest, longest, **options)
    return out.reshape(batch, length, heads, dim), None


def _varlen_options(varlen_attn: Any, heads: int, key: torch.Tensor, value: torch.Tensor,
                    scaling: float | None) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Causal, grouped-query and scale as the installed torch's varlen_attn takes them: torch 2.10 has `is_causal`,
    later ones `window_size=(-1, 0)`; without `enable_gqa` (and `scale`), key and value heads are repeated (and the
    default 1/√d is the only scale)."""
    import inspect

    takes = inspect.signature(varlen_attn).parameters
    options: dict[str, Any] = {"window_size": (-1, 0)} if "window_size" in takes else {"is_causal": True}
    if "scale" in takes:
        options["scale"] = scaling
    elif scaling is not None and abs(scaling - key.shape[-1] ** -0.5) > 1e-12:
        raise NotImplementedError("this torch's varlen_attn takes no scale")
    if heads != key.shape[1]:
        if "enable_gqa" in takes:
            options["enable_gqa"] = True
        else:
            group = heads // key.shape[1]
            key, value = key.repeat_interleave(group, dim=1), value.repeat_interleave(group, dim=1)
    return key, value, options


def _document_mask(positions: torch.Tensor, device: torch.device) -> Any:
    from torch.nn.attention.flex_attention import create_block_mask

    docs = document_ids(positions)

    def same_example_causal(b, h, q, kv):
        return (docs[b, q] == docs[b, kv]) & (q >= kv)

    batch, length = positions.shape
    return create_block_mask(same_example_causal, batch, None, length, length, device=device)


_compiled_flex: Any = None


def _flex_kernel(device: torch.device) -> Any:
    """FlexAttention compiled where it trains (CUDA: eager flex materialises the scores, the slow path); eager
    elsewhere."""
    global _compiled_flex
    from torch.nn.attention.flex_attention import flex_attention

    if device.type != "cuda":
        return flex_attention
    if _compiled_flex is None:
        _compiled_flex = torch.compile(flex_attention, dynamic=True)
    return _compiled_flex


def flex_document_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                   attention_mask: Any, scaling: float | None = None, dropout: float = 0.0, **kwargs: Any):
    """All examples of the batch in one FlexAttention call per layer, through a document mask. torch 2.13 has no
    FlexAttention backward on CPU or MPS: there, a step that needs gradients goes through the reference."""
    if not _trains(module, query, key, kwargs):
        return _sdpa(module, query, key, value, attention_mask, scaling, dropout, **kwargs)
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (query, key, value))
    if dropout or (needs_grad and query.device.type in ("cpu", "mps")):
        return packed_attention(module, query, key, value, attention_mask, scaling, dropout, **kwargs)
    given = kwargs["position_ids"]
    mask = _batch.get(given, "flex", lambda: _document_mask(_rows(query, given), query.device))
    out = _flex_kernel(query.device)(query, key, value, block_mask=mask, scale=scaling,
                                     enable_gqa=query.shape[1] != key.shape[1])
    return out.transpose(1, 2).contiguous(), None


KERNELS = {NAME: packed_attention, VARLEN: varlen_attention, FLEX: flex_document_attention}


def register(name: str = NAME) -> str:
    """Registers the attention `name` (and sdpa's mask builder for it, used out of training) with transformers."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    AttentionInterface.register(name, KERNELS[name])
    ALL_MASK_ATTENTION_FUNCTIONS.register(name, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])
    return name


def has_varlen() -> bool:
    return importlib.util.find_spec("torch.nn.attention.varlen") is not None


def choose(device: str, flat: bool) -> str:
    """The training attention for a device. CUDA: flash-attention when installed (for padding-free or packed rows),
    else PyTorch's variable-length flash attention on GPUs that run it (compute capability 8.0 and up), else
    compiled FlexAttention. CPU and MPS: the per-example loop, the only one of them that trains there (torch 2.13
    has no FlexAttention backward on CPU or MPS; benchmarks/flat_attention.py)."""
    if device == "cuda":
        if flat and importlib.util.find_spec("flash_attn") is not None:
            return "flash_attention_2"
        if has_varlen() and torch.cuda.get_device_capability() >= (8, 0):
            return register(VARLEN)
        return register(FLEX)
    return register(NAME)
