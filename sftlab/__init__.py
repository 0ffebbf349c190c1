"""sftlab: supervised instruction fine-tuning with an exact loss mask for every chat template.

Every command is a function too (README.md, "From Python"):

    from sftlab import load_config, train
    result = train(load_config("examples/identity.yaml", ["datasets=[my.json]", "output_dir=runs/mine"]))

The names below are imported on first use, so `import sftlab` (and so `sftlab --help`) loads no torch,
transformers or pydantic.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from sftlab.errors import SftlabError

# bitsandbytes, which peft imports where it is installed (the `qlora` extra), warns on every CPU with avx512_bf16
# that it could not fetch an optional kernel from the Hugging Face Hub ("kernels-community"); it falls back to its own
# 4-bit kernel, and sftlab works offline. Only that module's logger is quietened, before anything imports it.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

__version__ = "0.1.0"

# The public API: each name and the module that defines it.
_API = {
    "load_config": "sftlab.config",  # a YAML file and key=value overrides → TrainConfig (`sftlab train`'s arguments)
    "TrainConfig": "sftlab.config",
    "train": "sftlab.training",  # `sftlab train`: TrainConfig → TrainResult (output_dir, metrics, report, summary())
    "TrainResult": "sftlab.training.run",
    "merge_adapter": "sftlab.training.merge",  # `sftlab merge`
    "Source": "sftlab.data.pipeline",  # a data file with its weight
    "build_examples": "sftlab.data.pipeline",  # files → examples and the data report
    "pack_examples": "sftlab.data.pipeline",  # examples → packed rows of max_length (the `packing` key's step)
    "DataReport": "sftlab.data.pipeline",
    "DataSettings": "sftlab.config",  # the data keys build_examples takes (template, max_length, train_on, packing …)
    "check_data": "sftlab.quality.run",  # `sftlab data check`
    "evaluate": "sftlab.evaluation.run",  # `sftlab eval`
    "EvalOptions": "sftlab.evaluation.run",
    "load_tokenizer": "sftlab.models",  # what every --model takes: a model directory, a .gguf file, the default's name
    "load_model": "sftlab.models",
    "load_generator": "sftlab.inference.generate",  # chat, serve and eval's generation: prompt_ids, answers, stream
}
__all__ = ["SftlabError", "__version__", *_API]


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'sftlab' has no attribute {name!r}")
    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value  # later look-ups find it without coming here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
