"""Collators: a batch of examples (or packed rows) → tensors, in one of two layouts.

- padding-free (the default): the batch's members laid end to end in one row of shape [1, T], no
  padding at all. `position_ids` restart at 0 for every example, which keeps examples from attending
  to each other (sftlab's training attention runs each example on its own; flash-attention takes the
  restarts as variable-length boundaries), and the first label of every member is -100 so no example
  is trained to predict the next one's first token. The loss equals the padded batch's (tested).
- padded: right padding with label -100. Unpacked rows get an attention_mask (padding is not looked
  at); packed rows get their position_ids and no mask, and their padding positions 0, 1, … of its
  own, so it forms a block nobody attends to.

(transformers only looks for packed sequences when the forward pass has no KV cache: call the model
with use_cache=False.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from sftlab.data.example import IGNORE_INDEX
from sftlab.data.packing import join, member_weights


@dataclass
class Collator:
    """Batches examples ({input_ids, labels[, position_ids, weights]}) into tensors (layouts above)."""

    pad_token_id: int
    pad_to_multiple_of: int | None = None
    padding_free: bool = False

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if self.padding_free:
            return self._flat(features)
        return self._padded(features)

    def _flat(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        row = join(features)
        batch = {k: torch.tensor([row[k]], dtype=torch.long) for k in ("input_ids", "labels", "position_ids")}
        if row["weights"] is not None:
            batch["weights"] = torch.tensor([row["weights"]], dtype=torch.float32)
        return batch

    def _padded(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
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
                weights[r, :k] = torch.as_tensor(member_weights(f))
        batch = {"input_ids": input_ids, "labels": labels}
        if packed:
            batch["position_ids"] = positions
        else:
            batch["attention_mask"] = attention
        if weighted:
            batch["weights"] = weights
        return batch
