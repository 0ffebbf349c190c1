"""The keys of transformers' TrainingArguments, which LLaMA-Factory and TRL recipes take as they are (both run
transformers' Trainer, as sftlab does), and the few axolotl shares under the same names: one table for all three."""

from __future__ import annotations

from typing import Any, Mapping

from sftlab.recipes.rules import Default, Rule, Unmapped, choice, names, number, whole

# transformers' scheduler names (SchedulerType), which sftlab's lr_scheduler takes as they are.
SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
              "inverse_sqrt", "reduce_lr_on_plateau", "cosine_with_min_lr", "cosine_warmup_with_min_lr",
              "warmup_stable_decay")
# The optimizers that are AdamW as sftlab runs it (torch's AdamW, fused where the device has it).
ADAMW = ("adamw_torch", "adamw_torch_fused", "adamw_hf")


def warmup(value: Any, recipe: Mapping[str, Any]) -> float:
    """warmup_steps → warmup_ratio: a value below 1 is already a fraction (transformers 5 reads it so); a count of
    steps is a fraction of max_steps where the recipe gives max_steps; otherwise the total is not known yet."""
    steps = number(value, recipe)
    if steps < 1:
        return float(steps)
    total = recipe.get("max_steps")
    if isinstance(total, int) and not isinstance(total, bool) and total > 0:
        return min(steps / total, 0.99)
    raise Unmapped("unsupported", "{value} warmup steps: sftlab's warmup is a fraction of all steps (warmup_ratio), "
                   "and without max_steps the number of steps is known only once the data is encoded; set "
                   "warmup_ratio to warmup_steps ÷ the run's steps (the run logs its step count)")


def step_count(value: Any, recipe: Mapping[str, Any]) -> int:
    """logging/save/eval steps: transformers reads a value below 1 as a fraction of the steps; sftlab counts steps."""
    steps = number(value, recipe)
    if 0 < steps < 1:
        raise Unmapped("unsupported", "{value} is a fraction of the run's steps in transformers; sftlab counts whole "
                       "steps: set it once the run's step count is known")
    return whole(steps, recipe)


def reporters(value: Any, recipe: Mapping[str, Any]) -> Any:
    chosen = names(value)
    if "all" in chosen:
        raise Unmapped("unsupported", "'all' (every integration installed): name them (none, tensorboard, wandb …)")
    return chosen[0] if len(chosen) == 1 else chosen


def adam(default: float) -> Any:
    def convert(value: Any, recipe: Mapping[str, Any]) -> Any:
        if number(value, recipe) == default:
            raise Unmapped("ignored", "{value}: transformers' default, which sftlab's AdamW uses too")
        raise Unmapped("unsupported", f"{{value}}: sftlab's AdamW keeps transformers' default ({default})")
    return convert


def precision_bf16(value: Any, recipe: Mapping[str, Any]) -> str:
    if value is True or (isinstance(value, str) and value.lower() == "true"):
        return "bf16"
    if value is False or (isinstance(value, str) and value.lower() == "false"):
        if recipe.get("fp16") is True:
            raise Unmapped("ignored", "false: the recipe asks for fp16 instead (see fp16)")
        return "fp32"
    if isinstance(value, str) and value.lower() == "auto":
        return "auto"
    raise Unmapped("unsupported", "{value}: bf16 is true, false or auto")


def deepspeed(value: Any, recipe: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(value, str):
        raise Unmapped("unsupported", "an inline DeepSpeed config: sftlab takes a JSON file (distributed.deepspeed); "
                       "save it as one")
    return {"strategy": "deepspeed", "deepspeed": value}


_IGNORED_RUNTIME = "how the run is executed or logged, not what it learns"

TRAINING_ARGUMENTS: list[Rule] = [
    Rule("output_dir", "output_dir", "the run's folder: checkpoints, logs and the final model go there in both"),
    Rule("per_device_train_batch_size", "batch_size",
         "examples per device per micro-step ({value}); with gradient_accumulation_steps an optimizer step sees "
         "batch_size × grad_accum examples per device, in both (sftlab counts examples whatever the batch layout)",
         whole),
    Rule("gradient_accumulation_steps", "grad_accum",
         "micro-steps per optimizer step ({value}); the loss is the mean over the trained tokens of the whole "
         "accumulated batch, as transformers' Trainer computes it", whole),
    Rule("num_train_epochs", "epochs", "passes over the data ({value}); a max_steps above 0 overrides it, in both",
         number),
    Rule("max_steps", "max_steps", "optimizer steps in all ({value}); -1 trains by epochs, in both", whole),
    Rule("learning_rate", "learning_rate", "the peak learning rate ({value}), reached after warmup", number),
    Rule("lr_scheduler_type", "lr_scheduler", "the learning-rate schedule after warmup ({value}: transformers' "
         "scheduler, the same function in both)",
         choice({s: s for s in SCHEDULERS}, "{value} is not one of transformers' schedulers sftlab can run")),
    Rule("lr_scheduler_kwargs", None, "the scheduler's own options: sftlab runs each scheduler with transformers' "
         "defaults", status="unsupported"),
    Rule("lr_scheduler_kwargs.*", None, "the scheduler's own options: sftlab runs each scheduler with transformers' "
         "defaults", status="unsupported"),
    Rule("warmup_ratio", "warmup_ratio", "the fraction of all optimizer steps the learning rate warms up over "
         "({value}); sftlab rounds the step count up, as transformers does", number),
    Rule("warmup_steps", "warmup_ratio", "{value} warmup steps, as a fraction of max_steps (sftlab's warmup is a "
         "fraction of all steps)", warmup),
    Rule("weight_decay", "weight_decay", "AdamW's decoupled weight decay ({value})", number),
    Rule("max_grad_norm", "max_grad_norm", "gradients clipped to this norm ({value})", number),
    Rule("seed", "seed", "the seed of the data order, the split and the initialisation ({value})", whole),
    Rule("data_seed", None, "sftlab seeds the data order with `seed`", status="unsupported"),
    Rule("logging_steps", "logging_steps", "log every {value} steps (sftlab always logs step 1 and the last)",
         step_count),
    Rule("save_steps", "save_steps", "a checkpoint every {value} steps", step_count),
    Rule("save_total_limit", "save_total_limit", "checkpoints kept while training ({value})", whole),
    Rule("eval_steps", "eval_steps", "the eval loss every {value} steps (with eval data: val_size/eval_dataset)",
         step_count),
    Rule("bf16", "precision", "bf16 mixed precision ({value}): autocast to bf16 with the weights kept in fp32, as "
         "transformers' bf16 does; without it transformers trains in fp32", precision_bf16),
    Rule("fp16", None, "", choice({True: Unmapped("unsupported", "fp16 mixed precision: sftlab trains in bf16 or "
                                                 "fp32 (precision: auto picks bf16 where the device runs it)"),
                                   False: Unmapped("ignored", "off, as in sftlab")}, "{value}: fp16 is true or false"),
         ),
    Rule("use_cpu", None, "train on the CPU even where CUDA is: sftlab picks the device itself (CUDA where torch "
         "sees one, else the CPU; CUDA_VISIBLE_DEVICES= keeps it on the CPU)", status="ignored"),
    Rule("tf32", None, "TF32 matmuls on Ampere GPUs: a speed setting; sftlab leaves torch's own", status="ignored"),
    Rule("gradient_checkpointing", "gradient_checkpointing",
         "activations recomputed in the backward pass ({value}): less memory, the same gradients"),
    Rule("gradient_checkpointing_kwargs.*", None, "options of the recomputation (use_reentrant): sftlab's gradient "
         "checkpointing chooses its own; the gradients are the same", status="ignored"),
    Rule("neftune_noise_alpha", "neftune_alpha", "NEFTune: uniform noise of scale alpha/√(length × hidden) added to "
         "the input embeddings while training ({value}), as transformers adds it", number),
    Rule("resume_from_checkpoint", "resume", "continue from a checkpoint ({value}); sftlab resumes exactly "
         "(data order and optimizer state)"),
    Rule("report_to", "report_to", "where the metrics also go ({value}); sftlab writes metrics.jsonl and loss.png "
         "either way", reporters),
    Rule("deepspeed", "distributed", "DeepSpeed ZeRO through its JSON config ({value}), handed to transformers' "
         "integration as the tool does; sftlab runs it on CUDA with several processes (sftlab train --nproc N); the "
         "path is the recipe's: sftlab ships examples/deepspeed/zero2.json and zero3.json", deepspeed),
    Rule("optim", None, "", choice({name: Unmapped("ignored", "{value}: AdamW, as sftlab trains with torch's (fused) "
                                                   "AdamW") for name in ADAMW},
                                   "{value}: sftlab trains with torch's AdamW only (no 8-bit, paged or other "
                                   "optimizers): the update is AdamW's")),
    Rule("adam_beta1", None, "", adam(0.9)),
    Rule("adam_beta2", None, "", adam(0.999)),
    Rule("adam_epsilon", None, "", adam(1e-8)),
    Rule("per_device_eval_batch_size", None, "sftlab evaluates with batch_size; the eval loss does not depend on it",
         status="ignored"),
    Rule("eval_strategy", None, "", choice({
        "no": Unmapped("ignored", "no: held-out data is still split off (val_size) in the tool; sftlab evaluates "
                                  "whenever it has eval data"),
        "steps": Unmapped("ignored", "steps: sftlab evaluates every eval_steps when it has eval data"),
        "epoch": Unmapped("ignored", "epoch: sftlab evaluates each epoch when it has eval data and no eval_steps")},
        "{value}: sftlab evaluates every eval_steps, or each epoch")),
    Rule("evaluation_strategy", None, "transformers' former name of eval_strategy: sftlab evaluates every "
         "eval_steps, or each epoch, when it has eval data", status="ignored"),
    Rule("save_strategy", None, "", choice({
        "steps": Unmapped("ignored", "steps: a checkpoint every save_steps, as sftlab does"),
        "epoch": Unmapped("ignored", "epoch: sftlab saves once per epoch when save_steps is not given")},
        "{value}: sftlab saves every save_steps or once per epoch (keep_checkpoints: none removes them at the end)")),
    Rule("load_best_model_at_end", None, "", choice({False: Unmapped("ignored", "off, as in sftlab")},
         "sftlab's model is the last step's; pick a checkpoint-N by its eval loss in metrics.jsonl")),
    Rule("metric_for_best_model", None, "sftlab's model is the last step's", status="unsupported"),
    Rule("greater_is_better", None, "sftlab's model is the last step's", status="unsupported"),
    Rule("push_to_hub", None, "", choice({False: Unmapped("ignored", "off")},
                                         "sftlab does not upload: the model is in output_dir")),
    Rule("hub_model_id", None, "sftlab does not upload: the model is in output_dir", status="unsupported"),
    Rule("hub_strategy", None, "sftlab does not upload", status="unsupported"),
    Rule("hub_private_repo", None, "sftlab does not upload", status="unsupported"),
    Rule("group_by_length", None, "", choice({False: Unmapped("ignored", "off, as in sftlab")},
         "batches of similar length change which examples train together; sftlab samples them in a random order")),
    Rule("label_smoothing_factor", None, "", choice({0: Unmapped("ignored", "0, as in sftlab")},
                                                    "sftlab's loss is plain cross-entropy")),
    Rule("fsdp", None, "transformers' FSDP options: sftlab shards with FSDP2 through distributed: {strategy: fsdp2}",
         status="unsupported"),
    Rule("fsdp_config.*", None, "transformers' FSDP options: sftlab shards with FSDP2 through distributed: "
         "{strategy: fsdp2}", status="unsupported"),
    Rule("do_train", None, "transformers' switch: `sftlab train` always trains", status="ignored"),
    Rule("do_eval", None, "sftlab evaluates whenever it has eval data", status="ignored"),
    Rule("do_predict", None, "predictions are `sftlab eval --model RUN --data FILE`", status="unsupported"),
    Rule("overwrite_output_dir", None, "sftlab trains into output_dir and continues a run only with resume: true "
         "(a folder in training is refused)", status="ignored"),
    Rule("trust_remote_code", None, "sftlab never runs a model repository's own code: models of the architectures "
         "transformers ships load without it", status="ignored"),
    Rule("use_liger_kernel", None, "a kernel choice with the same loss; sftlab's loss already evaluates the head "
         "on trained tokens only, in chunks", status="ignored"),
    *[Rule(key, None, _IGNORED_RUNTIME, status="ignored") for key in (
        "ddp_timeout", "dataloader_num_workers", "dataloader_pin_memory", "dataloader_persistent_workers",
        "logging_dir", "logging_first_step", "logging_strategy", "save_only_model", "save_safetensors", "run_name",
        "disable_tqdm", "log_level", "remove_unused_columns", "ddp_find_unused_parameters", "local_rank",
        "torch_compile", "include_num_input_tokens_seen", "ddp_backend", "log_on_each_node")],
]


# What transformers' TrainingArguments does with these keys left out, where sftlab's defaults differ: written into
# the config (with a note) for every tool whose recipes are TrainingArguments (LLaMA-Factory, TRL).
TRAINING_DEFAULTS: list[Default] = [
    Default("per_device_train_batch_size", "batch_size", lambda r: 8, "transformers' default; sftlab's is 4"),
    Default("lr_scheduler_type", "lr_scheduler", lambda r: "linear", "transformers' default schedule; sftlab's is "
            "cosine"),
    Default(("warmup_ratio", "warmup_steps"), "warmup_ratio", lambda r: 0.0, "no warmup; sftlab's default is 0.03"),
]
