"""The run's TrainingArguments: sftlab's config keys mapped onto transformers' (and, through them, accelerate's
distributed plugins)."""

from __future__ import annotations

import logging
from typing import Any

from sftlab.config import TrainConfig
from sftlab.config.fields import transformers_arguments

log = logging.getLogger("sftlab")


def training_arguments(config: TrainConfig, *, bf16: bool, device: str, has_eval: bool, quiet: bool) -> Any:
    from transformers import TrainingArguments

    eval_strategy = "no"
    if has_eval:
        eval_strategy = "steps" if config.eval_steps else "epoch"
    report_to = config.report_to if isinstance(config.report_to, list) else [config.report_to]
    return TrainingArguments(
        **strategy_arguments(config, device),
        # the keys that are TrainingArguments under transformers' own names, as each key's declaration says
        # (output_dir, batch sizes, learning rate and schedule, steps, seeds: sftlab/config/train.py)
        **transformers_arguments(config),
        logging_first_step=True,  # and LogLastStep logs the last one: every run has metrics
        save_strategy="steps" if config.save_steps else "epoch",
        save_steps=config.save_steps or 500,
        eval_strategy=eval_strategy,
        bf16=bf16,
        use_cpu=device == "cpu",
        report_to=[r for r in report_to if r != "none"] or "none",
        disable_tqdm=True,
        remove_unused_columns=False,
        ddp_find_unused_parameters=config.method_spec.lora_phase,
        dataloader_num_workers=0,
        save_only_model=False,
        log_level="warning" if quiet else "passive",
    )


def strategy_arguments(config: TrainConfig, device: str) -> dict[str, Any]:
    """TrainingArguments of the distributed strategy (accelerate builds its plugin from them)."""
    spec = config.distributed
    if spec.strategy == "deepspeed":
        return {"deepspeed": spec.deepspeed}
    if spec.strategy == "fsdp2":
        if spec.cpu_offload and device == "cpu":
            log.info("distributed.cpu_offload: training on the CPU, the shards are in CPU memory already")
        # Sharded checkpoints while training (each process writes its shards; they load again at any number
        # of processes); the final model is gathered into one ordinary folder at the end (see train()).
        return {"fsdp": True, "fsdp_config": {
            "version": 2, "reshard_after_forward": True, "cpu_offload": spec.cpu_offload and device != "cpu",
            "activation_checkpointing": config.gradient_checkpointing, "state_dict_type": "SHARDED_STATE_DICT",
        }}
    return {}
