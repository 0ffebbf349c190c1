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
import logging
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from sftlab import jsonsafe
from sftlab.files import write_text
from sftlab.progress import duration
from sftlab.runlock import note_progress
from sftlab.training.attention import segments
from sftlab.training.loss import evaluate_loss, trained_token_loss
from sftlab.training.methods import set_hybrid_phase
from sftlab.training.neftune import NEFTune
from sftlab.training.resume import STATE_FILE
from sftlab.training.tokens import RowTraining

log = logging.getLogger("sftlab")



def batch_slices(inputs: dict[str, Any], max_tokens: int | None) -> list[dict[str, Any]]:
    """The batch cut into consecutive parts of at most max_tokens tokens (never less than one member).

    A padding-free batch (one row with restarting position_ids) is cut between examples; a padded
    batch is cut into groups of rows. Tensors of the batch's shape are sliced, anything else is
    passed along as is.
    """
    ids = inputs["input_ids"]
    rows, width = ids.shape
    if max_tokens is None or rows * width <= max_tokens:
        return [inputs]
    if rows == 1 and "position_ids" in inputs:
        cuts = [0]
        for start, end in segments(inputs["position_ids"][0])[1:]:
            if end - cuts[-1] > max_tokens:  # this example would not fit: it opens the next part
                cuts.append(start)
        bounds = list(zip(cuts, cuts[1:] + [width]))
        return [
            {k: v[:, s:e] if torch.is_tensor(v) and v.dim() == 2 and v.shape == ids.shape else v for k, v in inputs.items()}
            for s, e in bounds
        ]
    per = max(1, max_tokens // max(width, 1))
    if per >= rows:
        return [inputs]
    return [
        {k: v[i : i + per] if torch.is_tensor(v) and v.dim() > 0 and v.shape[0] == rows else v for k, v in inputs.items()}
        for i in range(0, rows, per)
    ]


STAGING_DIR = ".staging"


class PatchedTrainer(Trainer):
    """transformers' Trainer (5.x, pinned in pyproject.toml) with what sftlab needs it to do differently, each
    patch next to the transformers behaviour it depends on. Nothing of sftlab's own training ideas is here."""

    _staging: str | None = None

    def write_checkpoint_extras(self, checkpoint: Path) -> None:
        """Files of the subclass's own in a checkpoint being written (before it is renamed into place)."""

    def create_accelerator_and_postprocess(self) -> None:
        super().create_accelerator_and_postprocess()
        if self.args.fsdp_plugin_args is not None and not self.is_fsdp_enabled:
            # accelerate (1.x) turns FSDP on for GPU-type process groups only; torch's fully_shard works the same
            # over gloo on CPU, so a CPU run (tests/test_distributed.py) is switched to it here.
            from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

            self.accelerator.state.distributed_type = DistributedType.FSDP
            self.accelerator.state.fsdp_plugin = FullyShardedDataParallelPlugin(**self.args.fsdp_plugin_args)
            self.is_fsdp_enabled = True

    def _issue_warnings_after_load(self, load_result: Any) -> None:  # type: ignore[override]
        """Resume: a tied head (lm_head.weight is the embedding matrix) is not in a checkpoint, so transformers
        (5.x) reports it missing although nothing is; tie again and report only keys really missing."""
        names: dict[int, list[str]] = {}
        for name, p in self.model.named_parameters(remove_duplicate=False):
            names.setdefault(id(p), []).append(name)
        tied = {name for group in names.values() if len(group) > 1 for name in group}
        missing = [k for k in load_result.missing_keys if k not in tied]
        if len(missing) != len(load_result.missing_keys):
            self.model.tie_weights()
        load_result = type(load_result)(missing, load_result.unexpected_keys)
        super()._issue_warnings_after_load(load_result)

    def _run_epoch(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        # transformers (5.x) takes one more step in an epoch before it looks at max_steps: resuming a run that
        # had already finished would train a step past its end.
        if self.state.global_step >= self.state.max_steps:
            self.control.should_training_stop = True
            return
        super()._run_epoch(*args, **kwargs)

    # ---- atomic checkpoints -----------------------------------------------------------------
    # transformers (5.x) writes checkpoint-N straight into output_dir, file by file: a run killed while
    # saving leaves a checkpoint that looks whole and is not. Its `_save_checkpoint` takes the folder from
    # `_get_output_dir`, so pointing that at a staging folder for the call and renaming the finished
    # checkpoint into place makes every checkpoint-N complete or absent (rotation runs after the rename).
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
            self.write_checkpoint_extras(Path(staged))
            final = os.path.join(run_dir, name)
            if os.path.exists(final):
                shutil.rmtree(final)
            os.replace(staged, final)
            shutil.rmtree(staging, ignore_errors=True)
            rotate_checkpoints(output_dir=run_dir, save_total_limit=self.args.save_total_limit, use_mtime=False)
        self.accelerator.wait_for_everyone()


class SftTrainer(PatchedTrainer):
    """sftlab's ideas on top of the Trainer: the trained-tokens-only loss, micro-batch slices, token accounting,
    hybrid's adapter learning rate, rows of new chat tokens kept out of weight decay, and the eval loss over every
    trained token."""

    def __init__(self, *args: Any, neftune: NEFTune | None = None, micro_batch_tokens: int | None = None,
                 adapter_learning_rate: float | None = None, row_training: RowTraining | None = None, **kwargs: Any):
        """`row_training`: the embeddings of which only some rows train (new chat tokens; training/tokens.py)."""
        super().__init__(*args, **kwargs)
        self.row_training = row_training
        self.neftune = neftune
        self.micro_batch_tokens = micro_batch_tokens
        self.adapter_learning_rate = adapter_learning_rate
        self._adapter_groups_done = False
        # Our compute_loss normalises by the trained-target count of the accumulated batch
        # (`num_items_in_batch`), counted over labels[..., 1:] since labels are shifted in the loss.
        self.model_accepts_loss_kwargs = True
        self._loss_shifts_labels = True
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
        """A batch larger than micro_batch_tokens goes through in slices (of examples, or of rows), one
        forward and backward each. The loss of every slice is already divided by the trained-target count of the
        whole batch, so the summed gradients and the summed loss are those of the whole batch."""
        slices = batch_slices(inputs, self.micro_batch_tokens)
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

    # ---- optimizer --------------------------------------------------------------------------
    def get_decay_parameter_names(self, model) -> list[str]:  # type: ignore[override]
        """As transformers decides, less embeddings of which only some rows train (new chat tokens): decay
        would move the rows that must stay."""
        rows = {id(w) for w in self.row_training.weights} if self.row_training is not None else set()
        return [n for n in super().get_decay_parameter_names(model) if id(model.get_parameter(n)) not in rows]

    def create_optimizer(self, model=None):  # type: ignore[override]
        """method=hybrid: the LoRA parameters get their own learning rate (param groups of their own), under
        the one schedule (the scheduler scales every group's initial rate by the same factor)."""
        optimizer = super().create_optimizer(model)
        if self.adapter_learning_rate is None or self._adapter_groups_done:
            return optimizer
        from sftlab.training.methods import is_adapter_param

        named = {id(p): n for n, p in (model or self.model).named_parameters()}
        groups = []
        for group in optimizer.param_groups:
            base = [p for p in group["params"] if not is_adapter_param(named.get(id(p), ""))]
            adapters = [p for p in group["params"] if is_adapter_param(named.get(id(p), ""))]
            rest = {k: v for k, v in group.items() if k != "params"}
            groups += [{**rest, "params": base}, {**rest, "params": adapters, "lr": self.adapter_learning_rate}]
        optimizer.param_groups = []  # nothing has stepped yet: the groups can be laid out anew
        for group in groups:
            if group["params"]:
                optimizer.add_param_group(group)
        self._adapter_groups_done = True
        return optimizer

    # ---- evaluation -------------------------------------------------------------------------
    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:  # type: ignore[override]
        start = time.perf_counter()
        batches = (self._prepare_inputs(b) for b in self.get_eval_dataloader(eval_dataset))
        mean, count = evaluate_loss(self.model, batches, autocast_dtype=torch.bfloat16 if self.args.bf16 else None)
        total = torch.tensor([mean * count if count else 0.0, count], dtype=torch.float64, device=self.args.device)
        if self.accelerator.num_processes > 1:
            total = self.accelerator.reduce(total, reduction="sum")
        loss = float(total[0] / total[1]) if total[1] > 0 else float("nan")
        metrics = {f"{metric_key_prefix}_loss": loss, f"{metric_key_prefix}_tokens": int(total[1])}
        self._eval_seconds += time.perf_counter() - start
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    # ---- logging ----------------------------------------------------------------------------
    @property
    def trained_tokens(self) -> int:
        """Trained targets so far (as logged; a resumed run counts those before its checkpoint too)."""
        return self._trained_total

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

    def write_checkpoint_extras(self, checkpoint: Path) -> None:
        """sftlab_state.json: the trained tokens so far, and the processes and global batch of the run (resuming
        at another number of processes keeps the global batch: training/resume.py)."""
        processes = self.accelerator.num_processes
        global_batch = self.args.per_device_train_batch_size * self.args.gradient_accumulation_steps * processes
        (checkpoint / STATE_FILE).write_text(json.dumps(
            {"trained_tokens": self._trained_total, "processes": processes, "global_batch": global_batch}))

    def train(self, resume_from_checkpoint: str | None = None, **kwargs: Any):  # type: ignore[override]
        if resume_from_checkpoint:
            state = Path(resume_from_checkpoint) / STATE_FILE
            if state.is_file():
                self._trained_total = json.loads(state.read_text())["trained_tokens"]
        self._last_log_time = time.perf_counter()
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)



class HybridSwitch(TrainerCallback):
    """method=hybrid: full fine-tuning before `switch_step`, LoRA from it on (also after a resume)."""

    def __init__(self, full_fraction: float, rows: RowTraining | None = None):
        self.full_fraction = full_fraction
        self.rows = rows  # new chat tokens' rows: all rows train in the full phase, only theirs after it
        self.switch_step: int | None = None
        self.lora: bool | None = None  # the phase: False full fine-tuning, True LoRA

    def _apply(self, state: Any, model: Any, optimizer: Any) -> None:
        lora = state.global_step >= self.switch_step
        if lora != self.lora:
            set_hybrid_phase(model, lora, self.rows)
            if lora and self.rows is not None and optimizer is not None:
                self.rows.clear_optimizer_rows(optimizer)  # the full phase's momentum must not move old rows
            self.lora = lora

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):  # type: ignore[override]
        self.switch_step = max(1, min(state.max_steps - 1, round(self.full_fraction * state.max_steps)))
        self._apply(state, model, optimizer)

    def on_step_begin(self, args, state, control, model=None, optimizer=None, **kwargs):  # type: ignore[override]
        self._apply(state, model, optimizer)


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
        self.resumed_at = state.global_step or None
        if state.global_step > 0 and self.path.is_file():  # resumed: keep what led to the checkpoint
            for line in jsonsafe.lines(self.path.read_text(encoding="utf-8")):  # (JSONL: "\n" only)
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
        if "loss" in values and self.resumed_at is not None:
            # The Trainer averages a logged loss over the steps since its last log, and a resumed run has not
            # logged since the checkpoint: the first loss after a resume averages fewer steps than the same
            # record of an uninterrupted run. Said in the record (loss_steps) rather than left to look like a jump.
            logged = [r["step"] for r in self.records if r.get("loss") is not None and r["step"] <= self.resumed_at]
            window, usual = state.global_step - self.resumed_at, state.global_step - (logged[-1] if logged else 0)
            if window != usual:
                values["loss_steps"] = window
                log.info("the loss logged at step %d averages the %d steps since the resume (step %d); an "
                         "uninterrupted run's averages %d", state.global_step, window, self.resumed_at, usual)
            self.resumed_at = None
        if self.records and self.records[-1]["step"] == state.global_step:
            self.records[-1].update(values)
        else:
            self.records.append({"step": state.global_step, "epoch": round(state.epoch or 0.0, 4), **values})
        self._write()

    def _write(self) -> None:
        write_text(self.path, jsonsafe.jsonl(self.records))


def _clean(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


class RunProgress(TrainerCallback):
    """What `sftlab runs` and the UI show of a live run that its files do not say yet (the total steps, when
    training proper began), noted in the run lock's record (sftlab.runlock)."""

    def on_train_begin(self, args, state, control, **kwargs):  # type: ignore[override]
        if state.is_world_process_zero:  # (a stage's output_dir is inside the staged run's, which holds the lock)
            note_progress(max_steps=state.max_steps, start_step=state.global_step, train_started=time.time(),
                          output_dir=os.path.abspath(args.output_dir))


class LogLastStep(TrainerCallback):
    """The last step is always logged (with step 1 and every logging_steps: the Trainer's own rule), so a
    run shorter than logging_steps still has its metrics."""

    def on_step_end(self, args, state, control, **kwargs):  # type: ignore[override]
        if state.global_step >= state.max_steps:
            control.should_log = True
        return control


class ZeroLearningRate(TrainerCallback):
    """Says so when every optimizer step the run will take has learning rate 0 (a warmup as long as a short run:
    `max_steps: 1` with any warmup trains at 0), so such a run does not report success without a word."""

    def on_train_begin(self, args, state, control, lr_scheduler=None, **kwargs):  # type: ignore[override]
        lambdas = getattr(lr_scheduler, "lr_lambdas", None)
        remaining = range(state.global_step, state.max_steps)
        if not state.is_world_process_zero or not lambdas or not 0 < len(remaining) <= 10_000:
            return
        if all(f(step) == 0 for f in lambdas for step in remaining):
            log.warning("every optimizer step of this run has learning rate 0 (steps %d to %d of %d, with a warmup "
                        "of %d steps): the model will not change; lower warmup_ratio or train more steps",
                        state.global_step + 1, state.max_steps, state.max_steps,
                        args.get_warmup_steps(state.max_steps))


class Progress(TrainerCallback):
    """Progress on screen: a rich bar with loss, trained tokens/s and time left on a terminal; elsewhere (logs, CI,
    nohup, the UI's log) one plain line per logging step, and a line at least every `every` seconds of wall time
    between them (step, the last loss, tokens/s, time left), so a run is never silent for long."""

    def __init__(self, terminal: bool | None = None, every: float = 30.0, clock: Any = time.monotonic) -> None:
        self.terminal = sys.stderr.isatty() if terminal is None else terminal
        self.every, self.clock = every, clock
        self.progress: Any = None
        self.task: Any = None
        self.started = self.last_line = 0.0
        self.start_step = 0
        self.last: dict[str, Any] = {}

    def on_train_begin(self, args, state, control, **kwargs):  # type: ignore[override]
        self.started = self.last_line = self.clock()
        self.start_step = state.global_step
        if not state.is_local_process_zero or not self.terminal:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeRemainingColumn

        self.progress = Bar(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
        )
        self.task = self.progress.add_task("train", total=state.max_steps, completed=state.global_step, info="")
        self.progress.start()

    def on_step_end(self, args, state, control, **kwargs):  # type: ignore[override]
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step)
        elif state.is_local_process_zero and self.clock() - self.last_line >= self.every:
            self._print(self._heartbeat(state))

    def _heartbeat(self, state: Any) -> str:
        done = state.global_step - self.start_step
        line = f"step {state.global_step}/{state.max_steps}"
        if self.last.get("loss") is not None:
            line += f"  loss {self.last['loss']:.4f} (step {self.last['step']})"
        if self.last.get("tokens_per_second") is not None:
            line += f"  {self.last['tokens_per_second']:,.0f} trained tok/s"
        if done > 0:
            left = (self.clock() - self.started) / done * max(0, state.max_steps - state.global_step)
            line += f"  {duration(left)} left"
        return line

    def on_log(self, args, state, control, logs=None, **kwargs):  # type: ignore[override]
        if not state.is_local_process_zero or not logs:
            return
        lines = []
        if logs.get("loss") is not None:
            self.last = {"step": state.global_step, "loss": logs["loss"],
                         "tokens_per_second": logs.get("tokens_per_second")}
            info = f"loss {logs['loss']:.4f}  {logs.get('tokens_per_second', 0):,.0f} trained tok/s"
            if self.progress is not None:
                self.progress.update(self.task, info=info)
            else:
                lines.append(f"step {state.global_step}/{state.max_steps}  {info}  lr {logs.get('learning_rate', 0):.3g}")
        if "eval_loss" in logs:
            lines.append(f"step {state.global_step}: eval_loss {logs['eval_loss']:.4f}")
        for line in lines:
            self._print(line)

    def _print(self, line: str) -> None:
        self.last_line = self.clock()
        if self.progress is not None:
            self.progress.console.print(line)
        else:
            print(line, file=sys.stderr, flush=True)

    def on_train_end(self, args, state, control, **kwargs):  # type: ignore[override]
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

