"""Ctrl-C and SIGTERM during training: the first one ends the run at the end of the step in progress and
saves a checkpoint there (an exact resume point); a second one stops at once. Either way the run ends with
Interrupted, which says what was saved and how to go on, never a silent death."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

log = logging.getLogger("sftlab")

SIGNAL_NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}


class Interrupted(KeyboardInterrupt):
    """A training run stopped by a signal: where it stopped and the checkpoint it can resume from."""

    def __init__(self, signum: int, output_dir: Path, step: int, max_steps: int, checkpoint: Path | None):
        self.signum, self.output_dir, self.step, self.max_steps = signum, output_dir, step, max_steps
        self.checkpoint = checkpoint
        super().__init__(self.sentence())

    @property
    def exit_code(self) -> int:
        return 128 + int(self.signum)  # what a shell reports for a process ended by that signal (130, 143)

    def sentence(self) -> str:
        how = SIGNAL_NAMES.get(self.signum, f"signal {self.signum}")
        if self.checkpoint is None:
            return (f"stopped by {how} at step {self.step} of {self.max_steps}; no checkpoint was saved yet, so "
                    f"the run starts again from the beginning")
        return (f"stopped by {how} at step {self.step} of {self.max_steps}; {self.checkpoint} holds the run up to "
                f"step {self.checkpoint.name.rsplit('-', 1)[-1]} (model, optimizer, scheduler, data order)")


class GracefulStop(TrainerCallback):
    """Installed around Trainer.train in a single-process run (in a distributed run every process would have to
    stop at the same step; there the signal stops the processes as before)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt  # the second one: at once
        self.signum = signum
        log.warning("%s: finishing this step and saving a checkpoint (%s again to stop at once)",
                    SIGNAL_NAMES.get(signum, signum), SIGNAL_NAMES.get(signum, "the signal"))

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if self.signum is not None:
            control.should_save = True
            control.should_training_stop = True
        return control

    def __enter__(self) -> "GracefulStop":
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNAL_NAMES:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
