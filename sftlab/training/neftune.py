"""NEFTune (Jain et al., 2023): uniform noise on the input embeddings during training.

Each token of an example of length L gets noise drawn from U(-1, 1) · alpha / sqrt(L · d), d the
embedding width. L is the example's own length: its real tokens when padded, its segment of the row
when packed (a packed row of four examples is four examples, not one long one). Padding gets no
noise. The hook only acts while the embedding module is in training mode, so evaluation and
generation never see noise.
"""

from __future__ import annotations

from typing import Any

import torch


def example_lengths(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """For every position, the length L of the example it belongs to (0 on padding)."""
    if "position_ids" in batch:
        pos = batch["position_ids"]
        starts = pos == 0
        segment = torch.cumsum(starts.long(), dim=1)  # 1, 1, 1, 2, 2, ... per row
        lengths = torch.zeros_like(pos)
        for r in range(pos.shape[0]):
            counts = torch.bincount(segment[r])
            lengths[r] = counts[segment[r]]
        return lengths
    mask = batch["attention_mask"]
    return mask * mask.sum(dim=1, keepdim=True)


def noise_scale(lengths: torch.Tensor, alpha: float, dim: int) -> torch.Tensor:
    """alpha / sqrt(L · d) per position, 0 where L is 0."""
    lengths = lengths.float()
    scale = alpha / torch.sqrt(lengths.clamp(min=1) * dim)
    return torch.where(lengths > 0, scale, torch.zeros_like(scale))


class NEFTune:
    """Adds the noise through a forward hook on the input embeddings; `prepare(batch)` before each forward."""

    def __init__(self, embeddings: torch.nn.Module, alpha: float):
        self.alpha = alpha
        self.embeddings = embeddings
        self._scale: torch.Tensor | None = None
        self._handle = embeddings.register_forward_hook(self._hook)

    def prepare(self, batch: dict[str, torch.Tensor]) -> None:
        dim = self.embeddings.weight.shape[1]
        self._scale = noise_scale(example_lengths(batch), self.alpha, dim)

    def _hook(self, module: torch.nn.Module, _args: Any, output: torch.Tensor) -> torch.Tensor:
        scale, self._scale = self._scale, None  # one batch, one use
        if not module.training or scale is None or scale.shape != output.shape[:2]:
            return output
        noise = torch.empty_like(output).uniform_(-1, 1)
        return output + noise * scale.to(output.dtype)[..., None]

    def remove(self) -> None:
        self._handle.remove()
