"""One training run's lifecycle, alike for every kind of run (SFT, a task head): the checkpoint to resume from,
seed, device and precision, the tokenizer with the run's chat tokens, the callbacks every run has (its metrics, its
progress for `sftlab runs` and the UI), config.yaml and data_report.json, Ctrl-C/SIGTERM (stop at a checkpoint), the
loss plot and the checkpoints kept. A kind of run (`RunKind`: training/run.py's SFT, training/heads.py's heads) plugs
in only its data, its model with the method applied, its Trainer and the saving of its model.

The run lock of output_dir is held around all of it by `sftlab.training.train` (training/stages.py): a staged run's
stages train inside its one lock."""

from __future__ import annotations

import contextlib
import logging
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence

from sftlab import jsonsafe
from sftlab.config import TrainConfig
from sftlab.data.pipeline import DataReport
from sftlab.data.templates import resolve_template, with_default_system, with_template_kwargs
from sftlab.errors import SftlabError
from sftlab.files import require_output_dir, write_text
from sftlab.machine.hardware import Precision, choose_precision, pick_device, process_count
from sftlab.models import load_tokenizer, quantize, require_model
from sftlab.runs import settle_checkpoints
from sftlab.training.arguments import training_arguments
from sftlab.training.interrupt import GracefulStop, Interrupted
from sftlab.training.loss import head_workspace
from sftlab.training.resume import (checkpoint_problem, checkpoint_progress, existing_checkpoints, keep_global_batch,
                                   resume_checkpoint)
from sftlab.training.tokens import add_chat_tokens, init_new_rows, token_ids

log = logging.getLogger("sftlab")


@dataclass
class TrainResult:
    output_dir: Path
    metrics: list[dict[str, Any]] = field(default_factory=list)
    report: DataReport | None = None  # an SFT run's (a head run's data_report.json is its own; training/heads.py)
    main_process: bool = True  # False on the other ranks of a distributed run
    steps: int = 0  # optimizer steps taken (in total, a resumed run's earlier ones included)
    trained_tokens: int = 0
    train_seconds: float = 0.0  # the Trainer's training loop
    wall_seconds: float = 0.0  # the whole call: data, model loading, training, saving
    resumed_step: int = 0  # the checkpoint's step when the run was resumed (0: started from the beginning)
    resumed_tokens: int = 0  # trained tokens before that checkpoint

    @property
    def final_loss(self) -> float | None:
        return next((r["loss"] for r in reversed(self.metrics) if r.get("loss") is not None), None)

    def summary(self) -> str:
        """The run's closing line: final loss, trained tokens, trained tokens/s (of this call's steps) and wall time."""
        loss = f"final loss {self.final_loss:.4f}" if self.final_loss is not None else "no loss logged"
        if self.resumed_step and self.steps <= self.resumed_step:
            return f"nothing to train: the run had finished at step {self.steps} ({loss})"
        speed = (self.trained_tokens - self.resumed_tokens) / self.train_seconds if self.train_seconds else 0.0
        resumed = f" (resumed at step {self.resumed_step})" if self.resumed_step else ""
        return (f"{loss}, {self.steps} steps{resumed}, {self.trained_tokens:,} trained tokens, {speed:,.1f} trained "
                f"tokens/s, wall time {_duration(self.wall_seconds)}")


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs} s" if minutes else f"{seconds:.1f} s"


def held_out(items: list[Any], share: float, seed: int, what: str) -> tuple[list[Any], list[Any]]:
    """`eval_split`: a seeded `share` of `items` held out (at least one), and the rest, each in its order."""
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    n_eval = max(1, round(share * len(items)))
    if n_eval >= len(items):
        raise SftlabError(f"eval_split={share} leaves no training {what} out of {len(items)}")
    held = set(order[:n_eval])
    return [x for i, x in enumerate(items) if i not in held], [x for i, x in enumerate(items) if i in held]


@dataclass
class Session:
    """What a run has before its data: its config (grad_accum as a resumed run keeps its global batch), the
    checkpoint it resumes from, device, precision, and the tokenizer with the run's chat template and tokens."""

    config: TrainConfig
    quiet: bool
    user_callbacks: Sequence[Any]
    started: float  # time.perf_counter() when the run began
    checkpoint: str | None
    resumed: tuple[int, int]  # (step, trained tokens) of the checkpoint resumed from; (0, 0) when none
    device: str
    precision: Precision
    tokenizer: Any
    chat: Any  # the chat template (None for text-only data with no template)
    added: list[str]  # chat tokens added to the vocabulary
    metrics_log: Any = None  # MetricsLog, made with the callbacks

    @property
    def out(self) -> Path:
        return Path(self.config.output_dir)

    @property
    def bf16(self) -> bool:
        return self.precision.bf16

    @property
    def added_ids(self) -> dict[str, int]:
        """token → id of the chat tokens added (data_report.json's added_tokens)."""
        return token_ids(self.added, self.tokenizer)

    def fit_model(self, model: Any) -> Any:
        """The loaded model made ready to train: the added chat tokens' rows started, no KV cache while training."""
        if self.added:
            init_new_rows(model, self.tokenizer, list(self.added_ids.values()))
        model.config.use_cache = False
        return model

    def arguments(self, has_eval: bool) -> Any:
        return training_arguments(self.config, bf16=self.bf16, device=self.device, has_eval=has_eval, quiet=self.quiet)

    def callbacks(self, *own: Any) -> list[Any]:
        """Every run's callbacks (metrics.jsonl, the progress `sftlab runs` and the UI read, the last step logged, a
        zero learning rate said), the caller's, then the kind's `own`, and the progress line unless quiet."""
        from sftlab.training.trainer import LogLastStep, MetricsLog, Progress, RunProgress, ZeroLearningRate

        self.metrics_log = MetricsLog(self.out / "metrics.jsonl")
        found = [LogLastStep(), self.metrics_log, RunProgress(), ZeroLearningRate(), *self.user_callbacks, *own]
        return found if self.quiet else [*found, Progress()]


class RunKind(Protocol):
    """What a kind of run plugs into the session."""

    def build(self, session: Session) -> Any:
        """The run's Trainer: its data, its model (`session.fit_model`) with the method applied, the callbacks of
        `session.callbacks(...)`."""

    def report(self) -> dict[str, Any]:
        """data_report.json."""

    def describe(self, session: Session, trainer: Any) -> None:
        """Logs what is about to train (on the main process)."""

    def save(self, session: Session, trainer: Any, is_main: bool) -> None:
        """The finished run's model into output_dir (the session saves the tokenizer, plot and checkpoints)."""


def open_session(config: TrainConfig, *, callbacks: Sequence[Any] = (), quiet: bool = False) -> Session:
    """Everything before the data, in the order that says a mistake before time goes into work: the model, the
    checkpoint to resume from, output_dir, device and precision, then the tokenizer with the chat tokens."""
    from transformers import set_seed

    started = time.perf_counter()
    require_model(config.model)  # before any time goes into data: a folder without (whole) weights is said now
    checkpoint = resume_checkpoint(config)
    resumed = (0, 0)
    if checkpoint:
        config = keep_global_batch(config, Path(checkpoint))
        resumed = checkpoint_progress(Path(checkpoint))  # (read now: rotation may remove the checkpoint later)
        log.info("resume: continuing from %s (step %d, %s trained tokens so far)", checkpoint, resumed[0],
                 f"{resumed[1]:,}")
    check_output_dir(config)
    require_output_dir(Path(config.output_dir), "output_dir")
    set_seed(config.seed)
    device = pick_device()
    precision = choose_precision(config.precision, device)
    if config.method_spec.quantized:  # before any time goes into data
        quantize.require_bitsandbytes(device)
    tokenizer = load_tokenizer(config.model)
    chat, added = chat_tokens(config, tokenizer)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return Session(config, quiet, callbacks, started, checkpoint, resumed, device, precision, tokenizer, chat, added)


def check_output_dir(config: TrainConfig) -> None:
    """output_dir apart from what the run reads (its model, an adapter's base, data files, a template or DeepSpeed
    file), links resolved, before anything is written: a run saves its model and checkpoints there."""
    import os

    from sftlab.files import require_apart
    from sftlab.training.merge import model_reads

    files = [("data file", d.path) for d in (*config.datasets, *config.eval_datasets)]
    files += [("template file", config.template), ("DeepSpeed config", config.distributed.deepspeed)]
    # (only paths that exist: a built-in template's name or a hub name is no file of this disk)
    reads = model_reads(config.model) + [(what, p) for what, p in files if p and os.path.lexists(p)]
    require_apart(config.output_dir, "output_dir", reads)


def chat_tokens(config: TrainConfig, tokenizer: Any) -> tuple[Any, list[str]]:
    """The run's chat template (None when there is none to use) and the markers of it added to the
    tokenizer as new special tokens (a base model's vocabulary lacks them). The saved tokenizer carries
    the template the model was trained with, default_system and template_kwargs included."""
    if config.template is None and not getattr(tokenizer, "chat_template", None):
        return None, []
    chat = with_template_kwargs(resolve_template(config.template, tokenizer, warn=False), config.template_kwargs)
    chat = with_default_system(chat, config.default_system)
    added = add_chat_tokens(tokenizer, chat, config.template_tokens or ())
    if added:
        log.info("added %s to the vocabulary as new tokens (template '%s'; reasoning and tool tags plain, the rest "
                 "special); their embedding rows start as the mean of the others and are trained",
                 ", ".join(added), chat.name)
    tokenizer.chat_template = chat.source
    return chat, added


def prepare(config: TrainConfig, kind: RunKind, *, callbacks: Sequence[Any] = (),
            quiet: bool = False) -> tuple[Session, Any]:
    """The session and the kind's Trainer; nothing trained yet."""
    from transformers import PrinterCallback

    session = open_session(config, callbacks=callbacks, quiet=quiet)
    trainer = kind.build(session)
    trainer.remove_callback(PrinterCallback)
    return session, trainer


def run(config: TrainConfig, kind: RunKind, *, callbacks: Sequence[Any] = (), quiet: bool = False) -> TrainResult:
    """Train one run of `kind` as `config` says, from its first check to its saved model."""
    session, trainer = prepare(config, kind, callbacks=callbacks, quiet=quiet)
    config, out = session.config, session.out  # (grad_accum differs when a run is resumed by another number of processes)
    is_main = trainer.is_world_process_zero()
    if is_main:
        write_text(out / "config.yaml", config.for_rerun().to_yaml())
        write_text(out / "data_report.json", jsonsafe.dumps(kind.report(), indent=2, ensure_ascii=False) + "\n")
        kind.describe(session, trainer)
        log.info("%s", session.precision.note)
    single = process_count() == 1  # (in a distributed run every process would have to stop at the same step)
    stop = GracefulStop()
    if single:
        trainer.add_callback(stop)
    # The LM head's loss buffers are kept from step to step on the CPU (where that was measured to pay:
    # training/loss.py) and released when training ends.
    workspace = head_workspace() if session.device == "cpu" else contextlib.nullcontext()
    with stop if single else contextlib.nullcontext():
        try:
            with workspace:
                outcome = trainer.train(resume_from_checkpoint=session.checkpoint)
        except KeyboardInterrupt:  # a second signal: at once
            raise _interrupted(stop.signum or signal.SIGINT, out, trainer) from None
        if stop.signum is not None and trainer.state.global_step < trainer.state.max_steps:
            raise _interrupted(stop.signum, out, trainer)  # stopped early, at a checkpoint: no final model
        # (A stop after the last step, or while the model is saved, lets the finished run be saved whole.)
        _save(session, kind, trainer, is_main)
    resumed_step, resumed_tokens = session.resumed
    if resumed_step and outcome.global_step <= resumed_step:
        log.info("the run had finished at step %d already: nothing to train", resumed_step)
    return TrainResult(out, session.metrics_log.records, None, is_main, steps=outcome.global_step,
                       trained_tokens=trainer.trained_tokens, train_seconds=outcome.metrics["train_runtime"],
                       wall_seconds=time.perf_counter() - session.started, resumed_step=resumed_step,
                       resumed_tokens=resumed_tokens)


def _save(session: Session, kind: RunKind, trainer: Any, is_main: bool) -> None:
    """The kind's model, then what every finished run has: its tokenizer, the loss plot, the checkpoints kept as
    keep_checkpoints says."""
    from sftlab.training.plot import plot_metrics

    kind.save(session, trainer, is_main)
    if is_main:
        session.tokenizer.save_pretrained(str(session.out))
        plot_metrics(session.metrics_log.records, session.out / "loss.png")
        settle_checkpoints(session.out, session.config.keep_checkpoints)


def _interrupted(signum: int, out: Path, trainer: Any) -> Interrupted:
    step = trainer.state.global_step
    saved = [p for p in existing_checkpoints(out)
             if int(p.name.rsplit("-", 1)[-1]) <= step and checkpoint_problem(p) is None]
    return Interrupted(signum, out, step, trainer.state.max_steps, saved[-1] if saved else None)
