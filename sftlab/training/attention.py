"""Attention for training rows: each example attends only within itself, computed per example.

transformers handles packed rows on sdpa/eager by building a block-diagonal mask from the restarting
position_ids. That is exact, but on CPU the masked path computes (and keeps for backward) the full
row × row attention matrix: for 8 rows of 1024 tokens and a 30-layer model, gigabytes of saved
probabilities, and most of the work is spent on masked-out pairs. Here every example of a row
(every run of position_ids starting at 0) goes through causal sdpa on its own, which uses the fused
kernel with no mask and no stored matrix. Right-padded unpacked rows are one example each (padding
comes last, so causal attention never lets a real token see it).

It acts in training mode only. Evaluation and generation (left padding, KV cache) take the regular
sdpa path with the mask transformers builds.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

NAME = "sftlab_packed"


def segments(positions: torch.Tensor) -> list[tuple[int, int]]:
    """(start, end) of each example of a row: the runs of position_ids that start at 0."""
    starts = (positions == 0).nonzero().flatten().tolist()
    if not starts or starts[0] != 0:
        starts = [0] + starts
    return list(zip(starts, starts[1:] + [positions.shape[0]]))


def packed_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: Any, scaling: float | None = None, dropout: float = 0.0, **kwargs: Any):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    positions = kwargs.get("position_ids")
    if not module.training or positions is None or query.shape[2] != key.shape[2]:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                      **kwargs)
    if positions.shape[0] != query.shape[0]:
        positions = positions.expand(query.shape[0], -1)
    gqa = query.shape[1] != key.shape[1]
    rows = []
    for b in range(query.shape[0]):
        parts = [
            F.scaled_dot_product_attention(query[b : b + 1, :, s:e], key[b : b + 1, :, s:e], value[b : b + 1, :, s:e],
                                           is_causal=True, scale=scaling, dropout_p=dropout, enable_gqa=gqa)
            for s, e in segments(positions[b])
        ]
        rows.append(torch.cat(parts, dim=2) if len(parts) > 1 else parts[0])
    out = torch.cat(rows, dim=0) if len(rows) > 1 else rows[0]
    return out.transpose(1, 2).contiguous(), None


def register() -> str:
    """Registers the attention (and sdpa's mask builder for it, used by the fallback) under NAME."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    AttentionInterface.register(NAME, packed_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])
    return NAME


def choose(device: str, flat: bool) -> str:
    """Flash-attention (variable-length kernels over the restarting position_ids of padding-free or packed
    rows) on CUDA when installed; elsewhere causal sdpa per example in training (sftlab/training/attention.py)
    and plain sdpa in evaluation."""
    if device == "cuda" and flat:
        import importlib.util

        if importlib.util.find_spec("flash_attn") is not None:
            return "flash_attention_2"
    return register()
