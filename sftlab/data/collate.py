"""Padding collator: right padding, -100 labels on padding, optional pad_to_multiple_of."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from sftlab.data.encode import IGNORE_INDEX


@dataclass
class Collator:
    """Batches examples ({input_ids, labels[, position_ids, weights]}) into padded tensors.

    Unpacked batches get an attention_mask (padding is not looked at). Packed batches (rows with
    position_ids) get none: transformers then derives a block-diagonal mask from the restarting
    position_ids, which keeps examples from attending to each other; the padding of a packed row
    gets positions 0, 1, … of its own, so it forms a block nobody attends to, and labels -100.
    (transformers only looks for packed sequences when the forward pass has no KV cache: call the
    model with use_cache=False.)
    """

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        longest = max(len(f["input_ids"]) for f in features)
        m = self.pad_to_multiple_of
        width = ((longest + m - 1) // m) * m if m else longest
        packed = "position_ids" in features[0]
        weighted = any(f.get("weights") is not None for f in features)
        n = len(features)
        input_ids = torch.full((n, width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((n, width), IGNORE_INDEX, dtype=torch.long)
        attention = torch.zeros((n, width), dtype=torch.long)
        positions = torch.zeros((n, width), dtype=torch.long)
        weights = torch.zeros((n, width), dtype=torch.float32)
        for r, f in enumerate(features):
            k = len(f["input_ids"])
            input_ids[r, :k] = torch.as_tensor(f["input_ids"])
            labels[r, :k] = torch.as_tensor(f["labels"])
            attention[r, :k] = 1
            if packed:
                positions[r, :k] = torch.as_tensor(f["position_ids"])
                positions[r, k:] = torch.arange(width - k)
            if weighted:
                w = f.get("weights")
                weights[r, :k] = torch.as_tensor(w) if w is not None else (labels[r, :k] != IGNORE_INDEX).float()
        batch = {"input_ids": input_ids, "labels": labels}
        if packed:
            batch["position_ids"] = positions
        else:
            batch["attention_mask"] = attention
        if weighted:
            batch["weights"] = weights
        return batch
