"""The configuration: every setting declared once as a typed field (fields.py: how; data.py: the
data section; train.py: TrainConfig; bounds.py: the bounds of numbers; methods.py: the training methods), read
from YAML and --set by load.py."""

from sftlab.config.bounds import Limit
from sftlab.config.checks import bound, check, require
from sftlab.config.data import DataSettings
from sftlab.config.fields import GROUPS, setting
from sftlab.config.load import explain, file_problem, load_config, parse_yaml
from sftlab.config.methods import (ADAPTER_LEARNING_RATE, DEFAULT_METHOD, FULL_LEARNING_RATE, METHOD_NAMES, METHODS,
                                   UNMERGEABLE_PEFT_TYPES, Method)
from sftlab.config.train import DatasetSpec, DistributedSpec, StageSpec, TrainConfig, installed
from sftlab.defaults import DATA_CHECK_DESCRIPTIONS, DATA_CHECKS, DEFAULT_MODEL, MAX_LENGTH

__all__ = [
    "ADAPTER_LEARNING_RATE", "DATA_CHECKS", "DATA_CHECK_DESCRIPTIONS", "DEFAULT_METHOD", "DEFAULT_MODEL",
    "FULL_LEARNING_RATE", "GROUPS", "MAX_LENGTH", "METHODS", "METHOD_NAMES", "UNMERGEABLE_PEFT_TYPES", "DataSettings", "DatasetSpec",
    "DistributedSpec", "Limit", "Method", "StageSpec", "TrainConfig", "bound", "check", "explain", "file_problem", "installed",
    "load_config", "parse_yaml", "require", "setting",
]
