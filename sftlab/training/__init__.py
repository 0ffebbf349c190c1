"""Training: methods, NEFTune, the trained-tokens-only loss, the Trainer, one run (run.py) and the staged runs
above it (stages.py). `sftlab.train(config)` (sftlab.training.stages.train) trains a config, staged or not."""

from typing import Any


def __getattr__(name: str) -> Any:  # (lazy: importing a light module of this package does not import torch)
    if name == "train":
        from sftlab.training.stages import train

        return train
    raise AttributeError(f"module 'sftlab.training' has no attribute {name!r}")
