"""Long phases say where they are. A phase (encoding, eval's generation …) that is still going after START_AFTER
seconds says so with how far it is (n/N) and the time left, then again every EVERY seconds, through the "sftlab"
logger: the same lines on a terminal, in a log file and in the UI's log. A phase that ends sooner says nothing."""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

log = logging.getLogger("sftlab")

START_AFTER = 3.0  # seconds before a phase's first line: short phases stay quiet
EVERY = 30.0  # seconds between its lines after that (training's piped progress keeps the same pace)


class Phase:
    """`with Phase("encoding", total, "conversations") as phase: … phase.advance(n)`."""

    def __init__(self, what: str, total: int, unit: str, clock: Callable[[], float] = time.monotonic):
        self.what, self.total, self.unit, self.clock = what, total, unit, clock
        self.done = 0
        self.started = self.said = 0.0
        self.spoke = False

    def __enter__(self) -> "Phase":
        self.started = self.clock()
        return self

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = self.clock()
        if self.done >= self.total or now - (self.said if self.spoke else self.started) < (
                EVERY if self.spoke else START_AFTER):
            return
        self.said, self.spoke = now, True
        left = (now - self.started) / self.done * (self.total - self.done) if self.done else None
        log.info("%s: %d/%d %s%s", self.what, self.done, self.total, self.unit,
                 f", {duration(left)} left" if left is not None else "")

    def __exit__(self, kind: Any, *_: Any) -> None:
        if kind is None and self.spoke:
            log.info("%s: %d %s done in %s", self.what, self.total, self.unit, duration(self.clock() - self.started))


def duration(seconds: float) -> str:
    """`1 h 02 min`, `4 min 05 s`, `12 s`: a time as people read it."""
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    if s >= 60:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s} s"
