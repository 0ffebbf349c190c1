"""The SFT run, top to bottom: config → data → model + method → Trainer → outputs. What every run does alike
(resume, seed, device, chat tokens, callbacks, config.yaml, interrupts, plot, checkpoints kept) is
training/session.py; this module plugs in the examples, the causal LM with its method and SftTrainer (SftRun).

OUTPUT_DIR gets config.yaml, data_report.json, metrics.jsonl, loss.png, checkpoint-N/ (as many as
keep_checkpoints leaves once the run has finished) and the final model (full weights, or the adapter for
lora/dora) with its tokenizer and chat template.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from sftlab.config import TrainConfig
from sftlab.data.collate import Collator
from sftlab.data.example import Example
from sftlab.data.pipeline import DataReport, Source, build_examples, mixture_summary, pack_examples
from sftlab.data.templates import ChatTemplate
from sftlab.errors import SftlabError
from sftlab.files import write_text
from sftlab.home import sftlab_home
from sftlab.inference.generate import save_generation_config
from sftlab.models import DEFAULT_MODEL, adapter_base, load_model, quantize
from sftlab.training import attention
from sftlab.training.distributed import gathered_state
from sftlab.training.session import Session, prepare, run
# (names other modules import from here: the run's result, the eval split, the output_dir check)
from sftlab.training.session import TrainResult, check_output_dir, held_out

__all__ = ["PreparedRun", "TrainResult", "check_output_dir", "data_losses", "held_out", "prepare_data", "prepare_run",
           "train_one", "user_base", "write_adapter_card"]

log = logging.getLogger("sftlab")


def _cleaner(config: TrainConfig, tokenizer: Any, chat: ChatTemplate | None) -> Any:
    if not config.clean:
        return None
    from sftlab.quality.clean import cleaner

    return cleaner(config.clean, config.data, tokenizer=tokenizer, template=chat)


def _sources(specs: Sequence[Any]) -> list[Source]:
    return [Source.of(d) for d in specs]


def prepare_data(config: TrainConfig, tokenizer: Any, rejects_path: Path | None = None,
                 chat: ChatTemplate | None = None) -> tuple[list[dict], list[dict], DataReport]:
    """Training rows (packed or not) and eval examples, with the data report. `chat`: the run's template, its
    default_system and template_kwargs applied (session.chat_tokens); without it, the config's template and those."""
    settings = config.data
    examples, report = build_examples(
        _sources(config.datasets), tokenizer, settings, template=chat, rejects_path=rejects_path,
        clean=_cleaner(config, tokenizer, chat), cache=sftlab_home() / "encoded" if config.encode_cache else None,
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
    # (packed after the eval split: held-out examples stay whole)
    rows = pack_examples(examples, config.max_length, report) if config.packing else examples
    report.train_examples = len(examples)
    report.eval_examples = len(eval_examples)
    return [r.to_dict() for r in rows], [e.to_dict() for e in eval_examples], report


class SftRun:
    """The SFT run's part of the session (training/session.py): its examples, the causal LM with the method applied,
    SftTrainer, and the saved model (full weights or the adapter, with its card)."""

    data: DataReport  # (made by build)
    neftune: Any = None

    def build(self, session: Session) -> Any:
        from sftlab.training.methods import apply_method
        from sftlab.training.neftune import NEFTune
        from sftlab.training.trainer import HybridSwitch, SftTrainer

        config, tokenizer = session.config, session.tokenizer
        rejects = session.out / "rejects.jsonl" if config.on_error == "skip" else None
        train_rows, eval_rows, self.data = prepare_data(config, tokenizer, rejects, session.chat)
        self.data.added_tokens = session.added_ids
        quantization = quantize.settings(session.bf16) if config.method_spec.quantized else None
        attn = attention.choose(session.device, config.packing or config.padding_free)
        model = session.fit_model(load_model(config.model, attn_implementation=attn, quantization=quantization))
        model.config.pad_token_id = tokenizer.pad_token_id
        if model.generation_config is not None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id
        if config.gradient_checkpointing and config.distributed.strategy != "fsdp2":
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.enable_input_require_grads()
        model, rows = apply_method(model, config, new_token_ids=list(self.data.added_tokens.values()))
        if config.neftune_alpha:
            self.neftune = NEFTune(model.get_input_embeddings(), config.neftune_alpha)
        own: list[Any] = []
        if config.method_spec.lora_phase:
            own.append(HybridSwitch(config.hybrid_full_fraction, rows))
        if config.method_spec.adapter:
            own.append(_checkpoint_cards(user_base(config), config.method))
        return SftTrainer(
            model=model,
            args=session.arguments(has_eval=bool(eval_rows)),
            train_dataset=train_rows,
            eval_dataset=eval_rows or None,
            data_collator=Collator(tokenizer.pad_token_id, padding_free=config.padding_free),
            processing_class=tokenizer,
            callbacks=session.callbacks(*own),
            neftune=self.neftune,
            micro_batch_tokens=config.micro_batch_tokens,
            adapter_learning_rate=config.hybrid_lora_learning_rate,
            row_training=rows,
        )

    def report(self) -> dict[str, Any]:
        return self.data.to_dict()

    def describe(self, session: Session, trainer: Any) -> None:
        config, report, out = session.config, self.data, session.out
        mixture = mixture_summary(report, _sources(config.datasets))
        if mixture:
            log.info("%s", mixture)
        log.info(
            "training %s (%s, %s, lr %g) on %d %s (%d trained tokens), %s",
            config.model or DEFAULT_MODEL, config.method, "bf16" if session.bf16 else "fp32",
            config.learning_rate, len(trainer.train_dataset), "packed rows" if config.packing else "examples",
            report.trained_tokens, session.device,
        )
        losses = data_losses(report.to_dict())
        if losses:
            log.info("data: %s; every row is listed in %s", losses, out / "data_report.json")

    def save(self, session: Session, trainer: Any, is_main: bool) -> None:
        """The finished run's model (hybrid's adapters merged, FSDP2's shards gathered; an adapter naming its base
        as the user did) and generation config."""
        from sftlab.training.methods import merge_adapters

        config, out = session.config, session.out
        if self.neftune is not None:
            self.neftune.remove()
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
            _adapter_files(out, config, session.bf16)
        if is_main:
            save_generation_config(final, session.tokenizer, session.chat, out)


@dataclass
class PreparedRun:
    """Everything a run needs before its first step (the benchmark's plain loop reuses it, too)."""

    session: Session
    trainer: Any  # SftTrainer
    report: DataReport

    @property
    def config(self) -> TrainConfig:
        return self.session.config

    @property
    def bf16(self) -> bool:
        return self.session.bf16


def prepare_run(config: TrainConfig, *, callbacks: Sequence[Any] = (), quiet: bool = False) -> PreparedRun:
    """Data, model with its method, and the Trainer of the run `config` describes; nothing trained yet."""
    sft = SftRun()
    session, trainer = prepare(config, sft, callbacks=callbacks, quiet=quiet)
    return PreparedRun(session, trainer, sft.data)


def train_one(config: TrainConfig, *, callbacks: Sequence[Any] = (), quiet: bool = False) -> TrainResult:
    """Run the training that `config` describes (one run: a staged config goes through sftlab.train, which
    calls this once per stage); returns where everything was written."""
    if config.stages:
        raise SftlabError("a staged config (stages:) is trained by sftlab.train (from sftlab import train), stage by stage")
    sft = SftRun()
    result = run(config, sft, callbacks=callbacks, quiet=quiet)
    result.report = sft.data
    return result


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


def _adapter_files(out: Path, config: TrainConfig, bf16: bool) -> None:
    """An adapter folder's base named as the user did, sftlab's card, and a QLoRA base's quantization.json."""
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
        quantize.write(out, prior or quantize.settings(bf16))


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
