"""A training run, top to bottom: config → data → model + method → Trainer → outputs.

OUTPUT_DIR gets config.yaml, data_report.json, metrics.jsonl, loss.png, checkpoint-N/ (as many as
keep_checkpoints leaves once the run has finished) and the final model (full weights, or the adapter for
lora/dora) with its tokenizer and chat template.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence


from sftlab.config import TrainConfig
from sftlab.data.collate import Collator
from sftlab.data.example import Example
from sftlab.data.pipeline import DataReport, Source, build_examples, mixture_summary, pack_examples
from sftlab.data.templates import ChatTemplate, resolve_template, with_default_system, with_template_kwargs
from sftlab.errors import SftlabError
from sftlab.files import require_output_dir, write_text
from sftlab.hardware import choose_precision, pick_device, process_count
from sftlab.generate import save_generation_config
from sftlab.models import DEFAULT_MODEL, adapter_base, load_model, load_tokenizer, require_model, sftlab_home
from sftlab.runs import settle_checkpoints
from sftlab import quantize
from sftlab.training import attention
from sftlab.training.arguments import training_arguments
from sftlab.training.distributed import gathered_state
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
    report: DataReport | None = None
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


def _cleaner(config: TrainConfig, tokenizer: Any, template: Any) -> Any:
    if not config.clean:
        return None
    from sftlab.quality.clean import cleaner

    return cleaner(config.clean, tokenizer=tokenizer, template=template, max_length=config.max_length)


def _sources(specs: Sequence[Any]) -> list[Source]:
    return [Source.of(d) for d in specs]


def held_out(items: list[Any], share: float, seed: int, what: str) -> tuple[list[Any], list[Any]]:
    """`eval_split`: a seeded `share` of `items` held out (at least one), and the rest, each in its order."""
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    n_eval = max(1, round(share * len(items)))
    if n_eval >= len(items):
        raise SftlabError(f"eval_split={share} leaves no training {what} out of {len(items)}")
    held = set(order[:n_eval])
    return [x for i, x in enumerate(items) if i not in held], [x for i, x in enumerate(items) if i in held]


def prepare_data(config: TrainConfig, tokenizer: Any, rejects_path: Path | None = None,
                 chat: ChatTemplate | None = None) -> tuple[list[dict], list[dict], DataReport]:
    """Training rows (packed or not) and eval examples, with the data report. `chat`: the run's template, its
    default_system and template_kwargs applied (_chat_tokens); without it, the config's template and those."""
    # (packed below, after the eval split; a given `chat` has the default system prompt and options applied already)
    settings = config.data.model_copy(update={"packing": False, **({"default_system": None, "template_kwargs": None}
                                                                   if chat is not None else {})})
    template = chat if chat is not None else config.template
    examples, report = build_examples(
        _sources(config.datasets), tokenizer, settings, template=chat, rejects_path=rejects_path,
        clean=_cleaner(config, tokenizer, template), cache=sftlab_home() / "encoded" if config.encode_cache else None,
    )
    eval_examples: list[Example] = []
    if config.eval_split:
        examples, eval_examples = held_out(examples, config.eval_split, config.seed, "examples")
    elif config.eval_datasets:
        eval_examples, _ = build_examples(
            _sources(config.eval_datasets), tokenizer,
            settings.model_copy(update={"limit": None, "mixture_examples": None, "mixture_replacement": False,
                                        "clean": None}),
            template=chat, say_system=False,
        )
    rows = pack_examples(examples, config.max_length, report) if config.packing else examples
    report.train_examples = len(examples)
    report.eval_examples = len(eval_examples)
    return [r.to_dict() for r in rows], [e.to_dict() for e in eval_examples], report


@dataclass
class PreparedRun:
    """Everything a run needs before its first step (the benchmark's plain loop reuses it, too)."""

    config: TrainConfig
    trainer: Any  # SftTrainer
    tokenizer: Any
    report: DataReport
    metrics_log: Any
    neftune: Any
    checkpoint: str | None
    bf16: bool
    device: str
    started: float
    chat: Any = None  # the chat template (None for text-only data with no template)
    precision_note: str = ""  # the precision chosen and why (hardware.Precision.note)
    resumed: tuple[int, int] = (0, 0)  # (step, trained tokens) of the checkpoint resumed from


def check_output_dir(config: TrainConfig) -> None:
    """output_dir apart from what the run reads (its model, an adapter's base, data files, a template or DeepSpeed
    file), links resolved, before anything is written: a run saves its model and checkpoints there."""
    from sftlab.files import require_apart
    from sftlab.training.merge import model_reads

    files = [("data file", d.path) for d in (*config.datasets, *config.eval_datasets)]
    files += [("template file", config.template), ("DeepSpeed config", config.distributed.deepspeed)]
    # (only paths that exist: a built-in template's name or a hub name is no file of this disk)
    reads = model_reads(config.model) + [(what, p) for what, p in files if p and os.path.lexists(p)]
    require_apart(config.output_dir, "output_dir", reads)


def prepare_run(config: TrainConfig, *, callbacks: Sequence[Any] = (), quiet: bool = False) -> PreparedRun:
    """Data, model with its method, and the Trainer of the run `config` describes; nothing trained yet."""
    from transformers import PrinterCallback, set_seed

    from sftlab.training.methods import apply_method
    from sftlab.training.neftune import NEFTune
    from sftlab.training.trainer import (HybridSwitch, LogLastStep, MetricsLog, Progress, RunProgress, SftTrainer,
                                         ZeroLearningRate)

    started = time.perf_counter()
    out = Path(config.output_dir)
    require_model(config.model)  # before any time goes into data: a folder without (whole) weights is said now
    checkpoint = resume_checkpoint(config)
    resumed = (0, 0)
    if checkpoint:
        config = keep_global_batch(config, Path(checkpoint))
        resumed = checkpoint_progress(Path(checkpoint))  # (read now: rotation may remove the checkpoint later)
        log.info("resume: continuing from %s (step %d, %s trained tokens so far)", checkpoint, resumed[0],
                 f"{resumed[1]:,}")
    check_output_dir(config)
    require_output_dir(out, "output_dir")
    set_seed(config.seed)
    device = pick_device()
    precision = choose_precision(config.precision, device)
    bf16 = precision.bf16
    if config.method_spec.quantized:  # before any time goes into data
        quantize.require_bitsandbytes(device)

    tokenizer = load_tokenizer(config.model)
    chat, added = _chat_tokens(config, tokenizer)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    rejects = out / "rejects.jsonl" if config.on_error == "skip" else None
    train_rows, eval_rows, report = prepare_data(config, tokenizer, rejects, chat)
    report.added_tokens = token_ids(added, tokenizer)
    quantization = quantize.settings(bf16) if config.method_spec.quantized else None
    model = load_model(config.model, attn_implementation=attention.choose(device, config.packing or config.padding_free),
                       quantization=quantization)
    if added:
        init_new_rows(model, tokenizer, list(report.added_tokens.values()))
    model.config.use_cache = False
    model.config.pad_token_id = tokenizer.pad_token_id
    if model.generation_config is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    if config.gradient_checkpointing and config.distributed.strategy != "fsdp2":
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model, rows = apply_method(model, config, new_token_ids=list(report.added_tokens.values()))
    neftune = None
    if config.neftune_alpha:
        neftune = NEFTune(model.get_input_embeddings(), config.neftune_alpha)

    args = training_arguments(config, bf16=bf16, device=device, has_eval=bool(eval_rows), quiet=quiet)
    metrics_log = MetricsLog(out / "metrics.jsonl")
    trainer_callbacks: list[Any] = [LogLastStep(), metrics_log, RunProgress(), ZeroLearningRate(), *callbacks]
    if config.method_spec.lora_phase:
        trainer_callbacks.append(HybridSwitch(config.hybrid_full_fraction, rows))
    if not quiet:
        trainer_callbacks.append(Progress())
    if config.method_spec.adapter:
        trainer_callbacks.append(_checkpoint_cards(user_base(config), config.method))
    trainer = SftTrainer(
        model=model,
        args=args,
        train_dataset=train_rows,
        eval_dataset=eval_rows or None,
        data_collator=Collator(tokenizer.pad_token_id, padding_free=config.padding_free),
        processing_class=tokenizer,
        callbacks=trainer_callbacks,
        neftune=neftune,
        micro_batch_tokens=config.micro_batch_tokens,
        adapter_learning_rate=config.hybrid_lora_learning_rate,
        row_training=rows,
    )
    trainer.remove_callback(PrinterCallback)
    return PreparedRun(config, trainer, tokenizer, report, metrics_log, neftune, checkpoint, bf16, device, started, chat,
                       precision.note, resumed)


def _chat_tokens(config: TrainConfig, tokenizer: Any) -> tuple[Any, list[str]]:
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


def train_one(config: TrainConfig, *, callbacks: Sequence[Any] = (), quiet: bool = False) -> TrainResult:
    """Run the training that `config` describes (one run: a staged config goes through sftlab.train, which
    calls this once per stage); returns where everything was written."""
    if config.stages:
        raise SftlabError("a staged config (stages:) is trained by sftlab.train (from sftlab import train), stage by stage")
    run = prepare_run(config, callbacks=callbacks, quiet=quiet)
    config = run.config  # (grad_accum differs when a run is resumed by another number of processes)
    trainer, report, metrics_log = run.trainer, run.report, run.metrics_log
    out = Path(config.output_dir)
    is_main = trainer.is_world_process_zero()
    if is_main:
        write_text(out / "config.yaml", config.for_rerun().to_yaml())
        report.write(out / "data_report.json")
        mixture = mixture_summary(report, _sources(config.datasets))
        if mixture:
            log.info("%s", mixture)
        log.info(
            "training %s (%s, %s, lr %g) on %d %s (%d trained tokens), %s",
            config.model or DEFAULT_MODEL, config.method, "bf16" if run.bf16 else "fp32",
            config.learning_rate, len(trainer.train_dataset), "packed rows" if config.packing else "examples",
            report.trained_tokens, run.device,
        )
        log.info("%s", run.precision_note)
        losses = data_losses(report.to_dict())
        if losses:
            log.info("data: %s; every row is listed in %s", losses, out / "data_report.json")
    single = process_count() == 1  # (in a distributed run every process would have to stop at the same step)
    stop = GracefulStop()
    if single:
        trainer.add_callback(stop)
    # The head's loss buffers are kept from step to step on the CPU (where that was measured to pay:
    # training/loss.py) and released when training ends.
    workspace = head_workspace() if run.device == "cpu" else contextlib.nullcontext()
    with stop if single else contextlib.nullcontext():
        try:
            with workspace:
                outcome = trainer.train(resume_from_checkpoint=run.checkpoint)
        except KeyboardInterrupt:  # a second signal: at once
            raise _interrupted(stop.signum or signal.SIGINT, out, trainer) from None
        if stop.signum is not None and trainer.state.global_step < trainer.state.max_steps:
            raise _interrupted(stop.signum, out, trainer)  # stopped early, at a checkpoint: no final model
        # (A stop after the last step, or while the model is saved, lets the finished run be saved whole.)
        _save_final(run, config, out, is_main)
    resumed_step, resumed_tokens = run.resumed
    if resumed_step and outcome.global_step <= resumed_step:
        log.info("the run had finished at step %d already: nothing to train", resumed_step)
    return TrainResult(out, metrics_log.records, report, is_main, steps=outcome.global_step,
                       trained_tokens=trainer.trained_tokens, train_seconds=outcome.metrics["train_runtime"],
                       wall_seconds=time.perf_counter() - run.started, resumed_step=resumed_step,
                       resumed_tokens=resumed_tokens)


def data_losses(d: dict[str, Any]) -> str:
    """What of the data did not reach training as it was written, from a data report's counts ("" when nothing):
    rows rejected, removed by `clean`, dropped in encoding, and examples cut to max_length."""
    def kinds(reasons: dict[str, int]) -> str:
        return ", ".join(f"{k} {n}" for k, n in reasons.items())

    parts = []
    if d["rejected"]:
        parts.append(f"{d['rejected']} rejected ({kinds(d['rejected_reasons'])})")
    if d.get("cleaned"):
        parts.append(f"{d['cleaned']} removed by clean ({kinds(d['cleaned_reasons'])})")
    if d["dropped"]:
        parts.append(f"{d['dropped']} dropped ({kinds(d['dropped_reasons'])})")
    if d["truncated"]:
        parts.append(f"{d['truncated']} cut to max_length (the start kept; one that lost its whole answer is dropped)")
    return f"of {d['rows_read']} rows read, " + "; ".join(parts) if parts else ""


def _save_final(run: PreparedRun, config: TrainConfig, out: Path, is_main: bool) -> None:
    """The finished run's model (hybrid's adapters merged, FSDP2's shards gathered; an adapter naming its base as
    the user did), tokenizer, generation config and loss plot; checkpoints kept as keep_checkpoints says."""
    from sftlab.training.methods import merge_adapters
    from sftlab.training.plot import plot_metrics

    trainer, tokenizer = run.trainer, run.tokenizer
    if run.neftune is not None:
        run.neftune.remove()
    final = trainer.model
    if config.method_spec.lora_phase:
        final = merge_adapters(final)
        trainer.model = final
    if trainer.is_fsdp_enabled:  # one ordinary model folder, gathered on the first process, not shards
        state = gathered_state(trainer.model, is_main)
        if is_main:
            trainer.accelerator.unwrap_model(trainer.model).save_pretrained(str(out), state_dict=state)
    else:
        trainer.save_model(str(out))
    if is_main and config.method_spec.adapter:
        # The base as the user named it (resolved again on load), not a path inside sftlab's cache; written
        # after saving, because peft looks the base's config up while saving (on the hub, for a bare name).
        adapter_config = out / "adapter_config.json"
        saved = json.loads(adapter_config.read_text(encoding="utf-8"))
        # (An adapter trained on from another adapter, a staged run continuing it, keeps that one's base.)
        saved["base_model_name_or_path"] = user_base(config)
        write_text(adapter_config, json.dumps(saved, indent=2))
        write_adapter_card(out, user_base(config), config.method)
        # (an adapter trained on from a QLoRA adapter, a staged run continuing it, keeps its 4-bit base)
        prior = quantize.read(Path(config.model)) if adapter_base(config.model) else None
        if config.method_spec.quantized or prior is not None:
            quantize.write(out, prior or quantize.settings(run.bf16))
    if is_main:
        tokenizer.save_pretrained(str(out))
        save_generation_config(final, tokenizer, run.chat, out)
        plot_metrics(run.metrics_log.records, out / "loss.png")
        settle_checkpoints(out, config.keep_checkpoints)


def user_base(config: TrainConfig) -> str:
    """An adapter's base as the user named it (a name, or the path they gave), never a folder in sftlab's cache."""
    return adapter_base(config.model) or config.model or DEFAULT_MODEL


def write_adapter_card(folder: Path, base: str, method: str) -> None:
    """README.md of an adapter folder: sftlab's own short card. peft's names the base by the folder it was loaded
    from (for the default model one in sftlab's cache, meaningless elsewhere) and is mostly empty headings."""
    import shlex

    here = shlex.quote(str(folder))
    # (json.dumps: a double-quoted YAML scalar whatever the name holds; JSON's escapes are YAML's too)
    write_text(folder / "README.md", f"""---
base_model: {json.dumps(base)}
library_name: peft
tags:
- sftlab
- {method}
---

# {folder.name}

A {method} adapter trained with sftlab on `{base}`.

- chat with it: `sftlab chat --model {here}`
- fold it into its base: `sftlab merge --model {here} --out merged`
- run it elsewhere: `sftlab export --model {here} --out export` (GGUF for llama.cpp and Ollama)
- in Python: `sftlab.models.load_model({json.dumps(str(folder))})` loads the base with the adapter
""")


def _checkpoint_cards(base: str, method: str) -> Any:
    """A callback that writes sftlab's card over the one peft writes into every checkpoint-N of an adapter run."""
    from transformers import TrainerCallback
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    class CheckpointCards(TrainerCallback):
        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
            if state.is_world_process_zero and (folder / "adapter_config.json").is_file():
                write_adapter_card(folder, base, method)

    return CheckpointCards()


def _interrupted(signum: int, out: Path, trainer: Any) -> Interrupted:
    step = trainer.state.global_step
    saved = [p for p in existing_checkpoints(out)
             if int(p.name.rsplit("-", 1)[-1]) <= step and checkpoint_problem(p) is None]
    return Interrupted(signum, out, step, trainer.state.max_steps, saved[-1] if saved else None)


