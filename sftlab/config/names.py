"""What an unknown config key most likely meant: the names other SFT tools give sftlab's keys (LLaMA-Factory,
axolotl, TRL / transformers' TrainingArguments), and a typo's nearest key — never a key that is only spelled alike
(`max_samples` is no `max_steps`). `sftlab import` translates a whole recipe (docs/coming-from.md); this is for
a config written by hand."""

from __future__ import annotations

import difflib
from typing import Iterable

# Another tool's key → (sftlab's key, or None where sftlab has no key of that meaning; what it is there).
FOREIGN: dict[str, tuple[str | None, str]] = {
    "model_name_or_path": ("model", "LLaMA-Factory's and TRL's name"),
    "base_model": ("model", "axolotl's name"),
    "dataset": ("datasets", "LLaMA-Factory names datasets of its dataset_info.json; sftlab takes files"),
    "dataset_name": ("datasets", "TRL's name"),
    "dataset_dir": ("datasets", "LLaMA-Factory's folder of dataset_info.json; sftlab takes files"),
    "cutoff_len": ("max_length", "LLaMA-Factory's name"),
    "sequence_len": ("max_length", "axolotl's name"),
    "max_seq_length": ("max_length", "TRL's former name"),
    "per_device_train_batch_size": ("batch_size", "transformers' name"),
    "micro_batch_size": ("batch_size", "axolotl's name"),
    "gradient_accumulation_steps": ("grad_accum", "transformers' name"),
    "num_train_epochs": ("epochs", "transformers' name"),
    "num_epochs": ("epochs", "axolotl's name"),
    "lr_scheduler_type": ("lr_scheduler", "transformers' name"),
    "lora_rank": ("lora_r", "LLaMA-Factory's name"),
    "lora_target": ("lora_targets", "LLaMA-Factory's name"),
    "lora_target_modules": ("lora_targets", "axolotl's name"),
    "lora_target_linear": ("lora_targets", "axolotl's name; sftlab: lora_targets: all-linear"),
    "finetuning_type": ("method", "LLaMA-Factory's name"),
    "adapter": ("method", "axolotl's name"),
    "use_peft": ("method", "TRL's name; sftlab: method: lora"),
    "val_size": ("eval_split", "LLaMA-Factory's name"),
    "val_set_size": ("eval_split", "axolotl's name"),
    "max_samples": ("limit", "LLaMA-Factory's name"),
    "neftune_noise_alpha": ("neftune_alpha", "transformers' name"),
    "sample_packing": ("packing", "axolotl's name"),
    "train_on_inputs": ("train_on", "axolotl's name; sftlab: train_on: all"),
    "train_on_prompt": ("train_on", "LLaMA-Factory's name; sftlab: train_on: all"),
    "assistant_only_loss": ("train_on", "TRL's name; sftlab trains assistant turns by default"),
    "completion_only_loss": ("train_on", "TRL's name; sftlab trains completions by default"),
    "roles_to_train": ("train_on", "axolotl's name"),
    "mask_history": ("train_on", "LLaMA-Factory's name; sftlab: train_on: last_assistant"),
    "chat_template": ("template", "axolotl's name"),
    "bf16": ("precision", "transformers' name; sftlab: precision: bf16"),
    "fp16": ("precision", "transformers' name; sftlab's precisions: auto, bf16, fp32"),
    "resume_from_checkpoint": ("resume", "transformers' name"),
    "deepspeed": ("distributed", "sftlab: distributed: {strategy: deepspeed, deepspeed: FILE}"),
    "stage": (None, "LLaMA-Factory's training stage; sftlab trains SFT, and raw text with datasets of format text"),
    "do_train": (None, "transformers' switch; `sftlab train` always trains"),
}

# Keys only another tool's recipe has: two or more of them and the error points at `sftlab import`.
_TELLING = {"model_name_or_path", "stage", "finetuning_type", "cutoff_len", "base_model", "sequence_len",
            "micro_batch_size", "dataset_name", "per_device_train_batch_size", "num_train_epochs"}


def hint(key: str, known: Iterable[str]) -> str:
    """What `key` most likely meant, as a phrase (" (did you mean `max_length`? LLaMA-Factory's name)"), or ""."""
    if key in FOREIGN:
        to, what = FOREIGN[key]
        if to is None:
            return f" ({what})"
        return f" (did you mean `{to}`?{' ' + what if what else ''})"
    # A typo: nearly the same letters (0.8 keeps `lerning_rate` → `learning_rate`, not `max_samples` → `max_steps`).
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.8)
    return f" (did you mean `{close[0]}`?)" if close else ""


def looks_foreign(keys: Iterable[str]) -> bool:
    """Whether unknown keys are another tool's recipe rather than typos."""
    return len(_TELLING.intersection(keys)) >= 2
