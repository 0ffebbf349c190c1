"""transformers' Trainer with sftlab's loss, token accounting, atomic checkpoints, and its callbacks.

The Trainer brings schedulers, accumulation, checkpoints and accelerate's distributed backends;
what changes here:
- the loss is cross-entropy over trained tokens only (see loss.py), divided by the number of trained
  targets of the whole accumulated batch on all processes, so neither gradient accumulation nor the
  number of processes changes it;
- evaluation reports the token-weighted mean over every trained token of the eval set (the Trainer's
  default averages per-batch means, which depends on the batch size);
- a checkpoint is written into a staging folder and renamed into place once complete, so a run
  killed while saving never leaves a half-written `checkpoint-N` for resume to trip over.
"""

from __future__ import annotations

import contextlib

import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from sftlab.train.loss import evaluate_loss, trained_token_loss
from sftlab.train.methods import set_hybrid_phase
from sftlab.train.neftune import NEFTune

STATE_FILE = "sftlab_state.json"


def row_slices(inputs: dict[str, Any], max_tokens: int | None) -> list[dict[str, Any]]:
    """The batch cut into consecutive groups of rows of at most max_tokens tokens (at least one row
    each); tensors with a batch dimension are sliced, anything else is passed along as is."""
    ids = inputs["input_ids"]
    rows, width = ids.shape
    per = rows if max_tokens is None else max(1, max_tokens // max(width, 1))
    if per >= rows:
        return [inputs]
    return [
        {k: v[i : i + per] if torch.is_tensor(v) and v.dim() > 0 and v.shape[0] == rows else v for k, v in inputs.items()}
        for i in range(0, rows, per)
    ]
STAGING_DIR = ".staging"


class SftTrainer(Trainer):
    def __init__(self, *args: Any, neftune: NEFTune | None = None, micro_batch_tokens: int | None = None,
                 **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.neftune = neftune
        self.micro_batch_tokens = micro_batch_tokens
        # Our compute_loss normalises by the trained-target count of the accumulated batch
        # (`num_items_in_batch`), counted over labels[..., 1:] since labels are shifted in the loss.
        self.model_accepts_loss_kwargs = True
        self._loss_shifts_labels = True
        self._staging: str | None = None
        self._trained_since_log = torch.zeros((), dtype=torch.long)
        self._trained_total = 0
        self._last_log_time = time.perf_counter()
        self._eval_seconds = 0.0

    # ---- loss -------------------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # type: ignore[override]
        if self.neftune is not None and model.training:
            self.neftune.prepare(inputs)
        labels = inputs["labels"]
        if num_items_in_batch is None:  # evaluation through the Trainer's own loop
            num_items_in_batch = (labels[:, 1:] != -100).sum()
        count = max(int(num_items_in_batch), 1)
        # DDP averages gradients over processes; the count is already global, so undo that average.
        scale = self.accelerator.num_processes / count if self.args.average_tokens_across_devices else 1 / count
        parts = trained_token_loss(model, inputs, scale)
        if model.training:
            self._trained_since_log = self._trained_since_log.to(parts.tokens.device) + parts.tokens
        return (parts.loss, {"loss": parts.loss}) if return_outputs else parts.loss

    def training_step(self, model, inputs, num_items_in_batch=None):  # type: ignore[override]
        """A batch larger than micro_batch_tokens goes through in slices of rows, one forward and
        backward each. The loss of every slice is already divided by the trained-target count of the
        whole batch, so the summed gradients and the summed loss are those of the whole batch."""
        slices = row_slices(inputs, self.micro_batch_tokens)
        if len(slices) == 1:
            return super().training_step(model, inputs, num_items_in_batch)
        total = None
        for k, part in enumerate(slices):
            # Under DDP only the last slice's backward all-reduces (the others accumulate locally).
            sync = k == len(slices) - 1 or self.accelerator.num_processes == 1
            with contextlib.nullcontext() if sync else self.accelerator.no_sync(model):
                loss = super().training_step(model, part, num_items_in_batch)
            total = loss if total is None else total + loss
        return total

    # ---- evaluation -------------------------------------------------------------------------
    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:  # type: ignore[override]
        start = time.perf_counter()
        loader = self.get_eval_dataloader(eval_dataset)
        dtype = torch.bfloat16 if self.args.bf16 else None
        model = self.model
        total = torch.zeros(2, dtype=torch.float64, device=self.args.device)
        batches = (self._prepare_inputs(b) for b in loader)
        mean, count = evaluate_loss(model, batches, autocast_dtype=dtype)
        if count:
            total += torch.tensor([mean * count, count], dtype=torch.float64, device=self.args.device)
        if self.accelerator.num_processes > 1:
            total = self.accelerator.reduce(total, reduction="sum")
        loss = float(total[0] / total[1]) if total[1] > 0 else float("nan")
        metrics = {f"{metric_key_prefix}_loss": loss, f"{metric_key_prefix}_tokens": int(total[1])}
        self._eval_seconds += time.perf_counter() - start
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    # ---- logging ----------------------------------------------------------------------------
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:  # type: ignore[override]
        if "loss" in logs:
            tokens = self._trained_since_log.to(self.args.device)
            if self.accelerator.num_processes > 1:
                tokens = self.accelerator.reduce(tokens, reduction="sum")
            n = int(tokens)
            self._trained_since_log = torch.zeros_like(self._trained_since_log)
            self._trained_total += n
            now = time.perf_counter()
            seconds = max(now - self._last_log_time - self._eval_seconds, 1e-9)
            self._last_log_time, self._eval_seconds = now, 0.0
            logs["trained_tokens"] = self._trained_total
            logs["tokens_per_second"] = n / seconds
        super().log(logs, start_time)

    def train(self, resume_from_checkpoint: str | None = None, **kwargs: Any):  # type: ignore[override]
        if resume_from_checkpoint:
            state = Path(resume_from_checkpoint) / STATE_FILE
            if state.is_file():
                self._trained_total = json.loads(state.read_text())["trained_tokens"]
        self._last_log_time = time.perf_counter()
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)

    # ---- atomic checkpoints -----------------------------------------------------------------
    def _get_output_dir(self, trial: Any) -> str:
        return self._staging or super()._get_output_dir(trial)

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        from transformers.trainer_utils import rotate_checkpoints

        run_dir = self.args.output_dir
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        staging = os.path.join(run_dir, STAGING_DIR)
        if self.is_world_process_zero():
            shutil.rmtree(staging, ignore_errors=True)  # what a killed save left behind
        self.accelerator.wait_for_everyone()
        self._staging = staging
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._staging = None
        self.accelerator.wait_for_everyone()
        if self.is_world_process_zero():
            staged = os.path.join(staging, name)
            (Path(staged) / STATE_FILE).write_text(json.dumps({"trained_tokens": self._trained_total}))
            final = os.path.join(run_dir, name)
            if os.path.exists(final):
                shutil.rmtree(final)
            os.replace(staged, final)
            shutil.rmtree(staging, ignore_errors=True)
            rotate_checkpoints(output_dir=run_dir, save_total_limit=self.args.save_total_limit, use_mtime=False)
        self.accelerator.wait_for_everyone()


class HybridSwitch(TrainerCallback):
    """method=hybrid: full fine-tuning before `switch_step`, LoRA from it on (also after a resume)."""

    def __init__(self, full_fraction: float):
        self.full_fraction = full_fraction
        self.switch_step: int | None = None
        self.phase: str | None = None

    def _apply(self, state: Any, model: Any) -> None:
        phase = "full" if state.global_step < self.switch_step else "lora"
        if phase != self.phase:
            set_hybrid_phase(model, phase)
            self.phase = phase

    def on_train_begin(self, args, state, control, model=None, **kwargs):  # type: ignore[override]
        self.switch_step = max(1, min(state.max_steps - 1, round(self.full_fraction * state.max_steps)))
        self._apply(state, model)

    def on_step_begin(self, args, state, control, model=None, **kwargs):  # type: ignore[override]
        self._apply(state, model)


METRIC_KEYS = ("loss", "learning_rate", "grad_norm", "trained_tokens", "tokens_per_second", "eval_loss")


class MetricsLog(TrainerCallback):
    """metrics.jsonl: one object per logging step (eval_loss joins the record of its step)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.records: list[dict[str, Any]] = []

    def on_train_begin(self, args, state, control, **kwargs):  # type: ignore[override]
        if not state.is_world_process_zero:
            return
        self.records = []
        if state.global_step > 0 and self.path.is_file():  # resumed: keep what led to the checkpoint
            for line in self.path.read_text().splitlines():
                record = json.loads(line)
                if record["step"] <= state.global_step:
                    self.records.append(record)
        self._write()

    def on_log(self, args, state, control, logs=None, **kwargs):  # type: ignore[override]
        if not state.is_world_process_zero or not logs:
            return
        values = {k: _clean(logs[k]) for k in METRIC_KEYS if k in logs}
        if not values:
            return
        if self.records and self.records[-1]["step"] == state.global_step:
            self.records[-1].update(values)
        else:
            self.records.append({"step": state.global_step, "epoch": round(state.epoch or 0.0, 4), **values})
        self._write()

    def _write(self) -> None:
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in self.records))
        tmp.replace(self.path)


def _clean(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


class RichProgress(TrainerCallback):
    """A progress bar with loss, trained tokens/s and time left (replaces the Trainer's tqdm output)."""

    def __init__(self) -> None:
        self.progress: Any = None
        self.task: Any = None
        self.last: dict[str, Any] = {}

    def on_train_begin(self, args, state, control, **kwargs):  # type: ignore[override]
        if not state.is_local_process_zero:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
        )
        self.task = self.progress.add_task("train", total=state.max_steps, completed=state.global_step, info="")
        self.progress.start()

    def on_step_end(self, args, state, control, **kwargs):  # type: ignore[override]
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):  # type: ignore[override]
        if self.progress is None or not logs:
            return
        if "loss" in logs:
            self.last = logs
        info = f"loss {self.last.get('loss', float('nan')):.4f}  {self.last.get('tokens_per_second', 0):,.0f} tok/s"
        if "eval_loss" in logs:
            self.progress.console.print(f"step {state.global_step}: eval_loss {logs['eval_loss']:.4f}")
        self.progress.update(self.task, info=info)

    def on_train_end(self, args, state, control, **kwargs):  # type: ignore[override]
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
