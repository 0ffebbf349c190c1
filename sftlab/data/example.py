"""What encoding makes: an Example (token ids, labels, per-token weights), a conversation dropped with its
reason, and the two together for a whole input. The data types every later step (packing, batches,
loss, inspection) reads."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Any

IGNORE_INDEX = -100


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]
    source: str = "<memory>"
    row: int = 0
    # Per-token loss weights, only when some message carries a weight other than 1.
    weights: list[float] | None = None
    # For inspect's view only (Encoder(parts=True)): token ranges [lo, hi) of "reasoning", "answer", "tool_call"
    # and "tool_result" text.
    parts: list[tuple[int, int, str]] | None = None

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def trained_tokens(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE_INDEX)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"input_ids": self.input_ids, "labels": self.labels, "source": self.source, "row": self.row}
        if self.weights is not None:
            d["weights"] = self.weights
        return d


@dataclass
class Dropped:
    source: str
    row: int
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "row": self.row, "reason": self.reason}


@dataclass
class Encoded:
    examples: list[Example] = field(default_factory=list)
    dropped: list[Dropped] = field(default_factory=list)
    # Conversations a prefix-unstable template forced us to split into one example per turn.
    split_conversations: int = 0
    # The examples those became, and the tokens all but each conversation's last example add (the price of exact
    # prompts: each turn's history is in the data again).
    split_examples: int = 0
    split_extra_tokens: int = 0
    truncated: int = 0
    # Conversations whose tool definitions the template does not render (they are not in the example).
    tools_ignored: int = 0

    def extend(self, other: "Encoded") -> None:
        """Appends another part's results (encoding in several processes)."""
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def drop_reasons(self) -> dict[str, int]:
        return dict(Counter(d.reason for d in self.dropped))
