"""A task head on a language model: `task: classification` (a softmax layer over the labels of the data) and
`task: reward` (one scalar, trained on preference pairs with the pairwise Bradley–Terry loss).

The head reads the hidden state of the last real token (transformers' `…ForSequenceClassification`, which finds
it from `pad_token_id`), so the saved folder loads with `AutoModelForSequenceClassification.from_pretrained`; its
config.json names the labels (`id2label`) and `sftlab_task`. Methods: full, freeze (the top layers and the head) and
LoRA/DoRA (the head trained in full, the adapter merged into the saved model).
"""

from __future__ import annotations

import logging
import signal
import time
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from sftlab.config import TrainConfig
from sftlab.data.labels import (HeadData, HeadEncoder, encode_classification, encode_pairs, label_names,
                                read_task_rows)
from sftlab.errors import SftlabError
from sftlab.files import require_output_dir, write_text
from sftlab.hardware import choose_precision, pick_device
from sftlab.models import DEFAULT_MODEL, adapter_base, load_tokenizer, model_path, require_model
from sftlab.runs import settle_checkpoints
from sftlab.training.arguments import training_arguments
from sftlab.training.interrupt import GracefulStop
from sftlab.training.resume import resume_checkpoint
from sftlab.training.trainer import LogLastStep, MetricsLog, PatchedTrainer, Progress, ZeroLearningRate

log = logging.getLogger("sftlab")

# The methods that train a head (LoRA's adapters are merged into the saved model, so it loads as one model).
HEAD_METHODS = ("full", "freeze", "lora", "dora")


def class_weight_vector(spec: Any, names: Sequence[str], counts: dict[str, int]) -> list[float] | None:
    """Per-label loss weights: None, "balanced" (n / (classes × count), scikit-learn's rule) or {label: weight}
    (labels not named weigh 1)."""
    if spec is None:
        return None
    if spec == "balanced":
        total = sum(counts.values())
        return [total / (len(names) * counts[n]) if counts.get(n) else 1.0 for n in names]
    unknown = sorted(set(map(str, spec)) - set(names))
    if unknown:
        raise SftlabError(f"class_weights names {', '.join(map(repr, unknown))}, which the training data has no "
                          f"rows of (its labels: {', '.join(names)})")
    given = {str(k): float(v) for k, v in spec.items()}
    return [given.get(n, 1.0) for n in names]


class HeadCollator:
    """Right-padded batches; a reward batch holds the chosen answers first, then the rejected ones."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def _pad(self, seqs: list[list[int]]) -> dict[str, torch.Tensor]:
        width = max(map(len, seqs))
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
            mask[i, : len(s)] = 1
        return {"input_ids": ids, "attention_mask": mask}

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if "chosen_ids" in rows[0]:
            return {**self._pad([r["chosen_ids"] for r in rows] + [r["rejected_ids"] for r in rows]), "pairs": len(rows)}
        return {**self._pad([r["input_ids"] for r in rows]), "labels": torch.tensor([r["labels"] for r in rows])}


def head_scores(model: Any, batch: dict[str, Any]) -> torch.Tensor:
    """The head's output for each row of a batch: (rows, labels) logits, or (rows,) rewards."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return logits.squeeze(-1) if logits.shape[-1] == 1 else logits


def pairwise_loss(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """Bradley–Terry: -log σ(r_chosen − r_rejected), averaged over the pairs."""
    return -F.logsigmoid(chosen.float() - rejected.float()).mean()


class HeadTrainer(PatchedTrainer):
    def __init__(self, *args: Any, class_weights: list[float] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.class_weights = torch.tensor(class_weights) if class_weights else None
        self.tokens_seen = 0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # type: ignore[override]
        scores = head_scores(model, inputs)
        if model.training:
            self.tokens_seen += int(inputs["attention_mask"].sum())
        if "pairs" in inputs:
            n = int(inputs["pairs"])
            loss = pairwise_loss(scores[:n], scores[n:])
        else:
            weight = self.class_weights.to(scores.device) if self.class_weights is not None else None
            loss = F.cross_entropy(scores.float(), inputs["labels"], weight=weight)
        return (loss, scores) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):  # type: ignore[override]
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None


def _rows(config: TrainConfig, specs: Sequence[Any]) -> tuple[list[Any], int]:
    rows, read = [], 0
    for spec in specs:
        got, n = read_task_rows(spec.path, config.task)
        rows += got
        read += n
    return rows[: config.limit] if config.limit else rows, read


def prepare_head_data(config: TrainConfig, tokenizer: Any, chat: Any) -> tuple[HeadData, HeadData | None, list[str]]:
    """Training and held-out data of a head run, and the label names (classification; [] for reward)."""
    rows, read = _rows(config, config.datasets)
    if not rows:
        raise SftlabError(f"{config.datasets[0].path}: no rows to train on")
    held: list[Any] = []
    eval_read = 0
    if config.eval_split:
        from sftlab.training.run import held_out

        rows, held = held_out(rows, config.eval_split, config.seed, "rows")
        eval_read = len(held)
    elif config.eval_datasets:
        held, eval_read = _rows(config, config.eval_datasets)
    encoder = HeadEncoder(tokenizer, chat, escape=config.escape_special_tokens, max_length=config.max_length)
    if config.task == "reward":
        train = encode_pairs(rows, encoder, read)
        return train, encode_pairs(held, encoder, eval_read) if held else None, []
    names = label_names(rows)
    if len(names) < 2:
        raise SftlabError(f"{config.datasets[0].path}: every row has the label '{names[0]}'; a classifier needs rows of "
                          "two labels or more")
    ids = {n: i for i, n in enumerate(names)}
    train = encode_classification(rows, encoder, ids, read)
    evaluation = encode_classification(held, encoder, ids, eval_read) if held else None
    return train, evaluation, names


def load_head_model(config: TrainConfig, names: Sequence[str], pad_id: int) -> Any:
    """The base model with a new head: one output per label, or one for a reward."""
    from transformers import AutoModelForSequenceClassification

    if adapter_base(config.model):
        raise SftlabError(f"{config.model} is an adapter; a task head starts from a whole model: fold it in first with "
                          f"`sftlab merge --model {config.model} --out MERGED`")
    path = model_path(config.model)
    labels = {"num_labels": len(names), "id2label": dict(enumerate(names)),
              "label2id": {n: i for i, n in enumerate(names)}} if names else {"num_labels": 1}
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # (its load report lists the new head as missing weights: it is meant to be)
    try:
        model = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32, **labels)
    except (OSError, ValueError) as e:
        raise SftlabError(f"{config.model or DEFAULT_MODEL}: cannot load it with a {config.task} head ({e})") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    log.info("a new %s head (%s) on %s, its weights initialised at random", config.task,
             f"{len(names)} labels" if names else "one score", config.model or DEFAULT_MODEL)
    model.config.pad_token_id = pad_id
    model.config.sftlab_task = config.task
    return model


def head_module_name(model: Any) -> str:
    """The head's attribute (`score` for the Llama, Qwen2 and GPT-2 families)."""
    for name in ("score", "classifier"):
        if isinstance(getattr(model, name, None), torch.nn.Module):
            return name
    raise SftlabError(f"{type(model).__name__}: cannot find its classification head")


def apply_head_method(model: Any, config: TrainConfig) -> Any:
    """The model with exactly the method's parameters trainable; the head trains in full with every method."""
    from sftlab.training.methods import lora_config, train_top_layers

    head = head_module_name(model)
    if config.method == "full":
        model.requires_grad_(True)
        return model
    if config.method == "freeze":
        base = model.base_model
        train_top_layers(model, config.freeze_trainable_layers, getattr(base, "norm", None) or getattr(base, "ln_f", None))
        getattr(model, head).requires_grad_(True)
        return model
    from peft import TaskType, get_peft_model

    lora = lora_config(config)
    lora.task_type = TaskType.SEQ_CLS
    lora.modules_to_save = [head]
    try:
        return get_peft_model(model, lora)
    except ValueError as e:
        raise SftlabError(f"lora_targets={config.lora_targets!r}: {e}") from None


def train_head(config: TrainConfig, *, callbacks: Sequence[Any] = (), quiet: bool = False) -> Any:
    """Train the head `config.task` names; the TrainResult of sftlab.training.run."""
    from transformers import PrinterCallback, set_seed

    from sftlab.training.run import TrainResult, _chat_tokens

    started = time.perf_counter()
    out = Path(config.output_dir)
    require_model(config.model)
    checkpoint = resume_checkpoint(config)
    require_output_dir(out, "output_dir")
    set_seed(config.seed)
    device = pick_device()
    precision = choose_precision(config.precision, device)
    tokenizer = load_tokenizer(config.model)
    chat, added = _chat_tokens(config, tokenizer)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    train, held, names = prepare_head_data(config, tokenizer, chat)
    if not train.examples:
        raise SftlabError(f"no example left to train on: {train.report()['drop_reasons']}")
    model = load_head_model(config, names, tokenizer.pad_token_id)
    if added:
        from sftlab.training.tokens import init_new_rows

        init_new_rows(model, tokenizer, [tokenizer.convert_tokens_to_ids(t) for t in added])
    model.config.use_cache = False
    model = apply_head_method(model, config)
    weights = class_weight_vector(config.class_weights, names, train.labels) if names else None

    report = {**train.report(), "eval_examples": len(held.examples) if held else 0,
              "class_weights": dict(zip(names, weights)) if weights else None}
    if held is not None and held.dropped:
        report["eval_dropped"] = len(held.dropped)
    args = training_arguments(config, bf16=precision.bf16, device=device, has_eval=held is not None, quiet=quiet)
    metrics_log = MetricsLog(out / "metrics.jsonl")
    trainer_callbacks: list[Any] = [LogLastStep(), metrics_log, ZeroLearningRate(), *callbacks]
    if not quiet:
        trainer_callbacks.append(Progress())
    trainer = HeadTrainer(model=model, args=args, train_dataset=train.examples,
                          eval_dataset=held.examples if held else None, data_collator=HeadCollator(tokenizer.pad_token_id),
                          processing_class=tokenizer, callbacks=trainer_callbacks, class_weights=weights)
    trainer.remove_callback(PrinterCallback)
    write_text(out / "config.yaml", config.for_rerun().to_yaml())
    from sftlab.jsonsafe import dumps

    write_text(out / "data_report.json", dumps(report, indent=2, ensure_ascii=False) + "\n")  # (NaN-free)
    log.info("training a %s head on %s (%s, %s) on %d %s, %s", config.task, config.model or DEFAULT_MODEL,
             config.method, "bf16" if precision.bf16 else "fp32", len(train.examples),
             "pairs" if config.task == "reward" else f"rows of {len(names)} labels", device)
    log.info("%s", precision.note)
    stop = GracefulStop()
    trainer.add_callback(stop)
    with stop:
        try:
            outcome = trainer.train(resume_from_checkpoint=checkpoint)
        except KeyboardInterrupt:
            from sftlab.training.run import _interrupted

            raise _interrupted(stop.signum or signal.SIGINT, out, trainer) from None
        if stop.signum is not None and trainer.state.global_step < trainer.state.max_steps:
            from sftlab.training.run import _interrupted

            raise _interrupted(stop.signum, out, trainer)
        _save_head(trainer, tokenizer, chat, config, out, metrics_log)
    return TrainResult(out, metrics_log.records, None, True, steps=outcome.global_step,
                       trained_tokens=trainer.tokens_seen, train_seconds=outcome.metrics["train_runtime"],
                       wall_seconds=time.perf_counter() - started)


def _save_head(trainer: Any, tokenizer: Any, chat: Any, config: TrainConfig, out: Path, metrics_log: Any) -> None:
    from sftlab.training.plot import plot_metrics

    model = trainer.model
    if hasattr(model, "merge_and_unload"):  # LoRA/DoRA: one model that from_pretrained loads, head included
        model = model.merge_and_unload()
    model.config.use_cache = True
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    plot_metrics(metrics_log.records, out / "loss.png")
    settle_checkpoints(out, config.keep_checkpoints)
