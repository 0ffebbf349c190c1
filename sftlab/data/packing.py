"""Best-fit-decreasing packing of whole examples into rows, with position_ids restarting per example."""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any, Sequence

from sftlab.data.example import IGNORE_INDEX, Example
from sftlab.errors import SftlabError


def pack_lengths(lengths: Sequence[int], max_length: int) -> list[list[int]]:
    """Indices of the examples in each row (best-fit decreasing; no example is ever split).

    Longest first; each goes into the open row whose free space is the smallest that still fits it.
    Ties keep input order, so the result is deterministic.
    """
    for i, n in enumerate(lengths):
        if n > max_length:
            raise SftlabError(f"example {i} has {n} tokens, more than max_length={max_length}; truncate before packing")
        if n <= 0:
            raise SftlabError(f"example {i} is empty")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    rows: list[list[int]] = []
    # Sorted (free space, row index) of open rows; bisect finds the tightest fit in O(log n).
    free: list[tuple[int, int]] = []
    for i in order:
        n = lengths[i]
        k = bisect.bisect_left(free, (n, -1))
        if k < len(free):
            space, r = free.pop(k)
            rows[r].append(i)
            space -= n
        else:
            r = len(rows)
            rows.append([i])
            space = max_length - n
        if space > 0:
            bisect.insort(free, (space, r))
    return rows


@dataclass
class PackedRow:
    input_ids: list[int]
    labels: list[int]
    position_ids: list[int]
    # Lengths of the examples in this row, in order (for flash-attention's cu_seqlens and for NEFTune's L).
    lengths: list[int]
    weights: list[float] | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "input_ids": self.input_ids,
            "labels": self.labels,
            "position_ids": self.position_ids,
            "lengths": self.lengths,
        }
        if self.weights is not None:
            d["weights"] = self.weights
        return d


def pack(examples: Sequence[Example], max_length: int) -> list[PackedRow]:
    """Pack examples into rows of at most max_length tokens.

    Each example's first label becomes -100: in a row, the previous example's last token would
    otherwise be trained to predict it. (Unpacked, label 0 is never a target, so the loss is unchanged.)
    """
    rows = []
    for members in pack_lengths([len(e) for e in examples], max_length):
        rows.append(PackedRow(**join([examples[i].to_dict() for i in members]),
                              lengths=[len(examples[i]) for i in members]))
    return rows


def member_weights(member: dict[str, Any]) -> list[float]:
    """A member's per-token loss weights: its own, or 1 where its labels are trained."""
    w = member.get("weights")
    return list(w) if w is not None else [float(x != IGNORE_INDEX) for x in member["labels"]]


def join(members: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Members ({input_ids, labels[, position_ids, weights]}) laid end to end in one row: position_ids restart at 0
    for each (a packed row keeps its own), each member's first label is -100 so none is trained to predict the next
    one's first token, and per-token weights (None when no member has any)."""
    weighted = any(m.get("weights") is not None for m in members)
    row: dict[str, Any] = {"input_ids": [], "labels": [], "position_ids": [], "weights": [] if weighted else None}
    for m in members:
        row["input_ids"] += m["input_ids"]
        row["labels"] += [IGNORE_INDEX, *m["labels"][1:]]
        row["position_ids"] += m["position_ids"] if "position_ids" in m else range(len(m["input_ids"]))
        if weighted:
            row["weights"] += [0.0, *member_weights(m)[1:]]
    return row


def packing_efficiency(rows: Sequence[PackedRow] | Sequence[Sequence[int]], max_length: int) -> float:
    """Real tokens / row capacity."""
    if not rows:
        return 0.0
    tokens = sum(len(r.input_ids) if isinstance(r, PackedRow) else len(r) for r in rows)
    return tokens / (len(rows) * max_length)
