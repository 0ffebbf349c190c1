"""Helper for test_resume: trains, and when told dies abruptly (os._exit: no cleanup, no final save)
either right after optimizer step N or in the middle of writing checkpoint N."""

import os
import sys

from transformers import TrainerCallback

from sftlab.config import load_config
from sftlab.training import trainer as trainer_mod
from sftlab.training import train


class DieAfterStep(TrainerCallback):
    def __init__(self, step: int, stage: str | None = None):
        self.step, self.stage = step, stage

    def on_step_end(self, args, state, control, **kwargs):
        # In a staged run, steps count per stage: `stage` names the one to die in.
        if state.global_step == self.step and (self.stage is None or args.output_dir.endswith("/" + self.stage)):
            os._exit(17)


def die_while_saving(step: int) -> None:
    """The model of checkpoint `step` is written, its optimizer state not yet."""
    original = trainer_mod.SftTrainer._save_optimizer_and_scheduler

    def save(self, output_dir):
        if self.state.global_step == step:
            os._exit(17)
        original(self, output_dir)

    trainer_mod.SftTrainer._save_optimizer_and_scheduler = save


def main() -> None:
    mode, step, sets = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    callbacks = []
    if mode == "step":
        callbacks.append(DieAfterStep(step))
    elif mode.startswith("stage:"):  # stage:NAME
        callbacks.append(DieAfterStep(step, mode.split(":", 1)[1]))
    elif mode == "save":
        die_while_saving(step)
    train(load_config(None, sets), callbacks=callbacks, quiet=True)


if __name__ == "__main__":
    main()
