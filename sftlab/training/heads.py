"""A task head on a language model: `task: classification` (a softmax layer over the labels of the data) and
`task: reward` (one scalar, trained on preference pairs with the pairwise Bradley–Terry loss).

The head reads the hidden state of the last real token (transformers' `…ForSequenceClassification`, which finds
it from `pad_token_id`), so the saved folder loads with `AutoModelForSequenceClassification.from_pretrained`; its
config.json names the labels (`id2label`) and `sftlab_task`. Methods: full, freeze (the top layers and the head) and
LoRA/DoRA (the head trained in full, the adapter merged into the saved model).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from sftlab import jsonsafe
from sftlab.config import TrainConfig
from sftlab.data.heads import (HeadData, HeadEncoder, encode_classification, encode_pairs, label_names,
                               read_task_rows)
from sftlab.errors import SftlabError
from sftlab.files import write_text
from sftlab.models import DEFAULT_MODEL, adapter_base, model_path
from sftlab.training.resume import STATE_FILE
from sftlab.training.session import Session, TrainResult, held_out, run
from sftlab.training.trainer import PatchedTrainer

log = logging.getLogger("sftlab")


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
    def __init__(self, *args: Any, class_weights: list[float] | None = None, trained_tokens: int = 0, **kwargs: Any):
        """`trained_tokens`: those of the steps before the checkpoint a resumed run starts from."""
        super().__init__(*args, **kwargs)
        self.class_weights = torch.tensor(class_weights) if class_weights else None
        self.trained_tokens = trained_tokens  # the tokens of the rows trained on (the run's result reads it)

    def write_checkpoint_extras(self, checkpoint: Path) -> None:
        """sftlab_state.json, which resuming needs of every checkpoint (training/resume.py): the trained tokens, the
        processes and the global batch."""
        processes = self.accelerator.num_processes
        global_batch = self.args.per_device_train_batch_size * self.args.gradient_accumulation_steps * processes
        write_text(checkpoint / STATE_FILE, jsonsafe.dumps(
            {"trained_tokens": self.trained_tokens, "processes": processes, "global_batch": global_batch}))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # type: ignore[override]
        scores = head_scores(model, inputs)
        if model.training:
            self.trained_tokens += int(inputs["attention_mask"].sum())
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
    """The model with exactly the method's parameters trainable (read from its record: an adapter is LoRA-type,
    a method owning freeze_trainable_layers trains the top layers); the head trains in full with every method."""
    from sftlab.training.methods import train_top_layers

    head = head_module_name(model)
    spec = config.method_spec
    if spec.adapter:
        return _head_adapter(model, config, head)
    if "freeze_trainable_layers" in spec.own_keys:
        base = model.base_model
        train_top_layers(model, config.freeze_trainable_layers, getattr(base, "norm", None) or getattr(base, "ln_f", None))
        getattr(model, head).requires_grad_(True)
        return model
    model.requires_grad_(True)
    return model


def _head_adapter(model: Any, config: TrainConfig, head: str) -> Any:
    """LoRA/DoRA layers for a sequence classifier, the head saved (and trained) in full beside them."""
    from peft import TaskType, get_peft_model

    from sftlab.training.methods import lora_config

    lora = lora_config(config)
    lora.task_type = TaskType.SEQ_CLS
    lora.modules_to_save = [head]
    try:
        return get_peft_model(model, lora)
    except ValueError as e:
        raise SftlabError(f"lora_targets={config.lora_targets!r}: {e}") from None


class HeadRun:
    """A head run's part of the session (training/session.py): labelled rows or preference pairs, the model with a
    new head and the method applied, HeadTrainer, and the saved model (LoRA merged: one folder from_pretrained loads)."""

    def build(self, session: Session) -> Any:
        config, tokenizer = session.config, session.tokenizer
        train, held, names = prepare_head_data(config, tokenizer, session.chat)
        if not train.examples:
            raise SftlabError(f"no example left to train on: {train.report()['drop_reasons']}")
        model = session.fit_model(load_head_model(config, names, tokenizer.pad_token_id))
        model = apply_head_method(model, config)
        weights = class_weight_vector(config.class_weights, names, train.labels) if names else None
        self.data = {**train.report(), "eval_examples": len(held.examples) if held else 0,
                     "class_weights": dict(zip(names, weights)) if weights else None}
        if held is not None and held.dropped:
            self.data["eval_dropped"] = len(held.dropped)
        self.names = names
        return HeadTrainer(model=model, args=session.arguments(has_eval=held is not None), train_dataset=train.examples,
                           eval_dataset=held.examples if held else None, data_collator=HeadCollator(tokenizer.pad_token_id),
                           processing_class=tokenizer, callbacks=session.callbacks(), class_weights=weights,
                           trained_tokens=session.resumed[1])

    def report(self) -> dict[str, Any]:
        return self.data

    def describe(self, session: Session, trainer: Any) -> None:
        config = session.config
        log.info("training a %s head on %s (%s, %s) on %d %s, %s", config.task, config.model or DEFAULT_MODEL,
                 config.method, "bf16" if session.bf16 else "fp32", len(trainer.train_dataset),
                 "pairs" if config.task == "reward" else f"rows of {len(self.names)} labels", session.device)

    def save(self, session: Session, trainer: Any, is_main: bool) -> None:
        model = trainer.model
        if hasattr(model, "merge_and_unload"):  # LoRA/DoRA: one model that from_pretrained loads, head included
            model = model.merge_and_unload()
        model.config.use_cache = True
        if is_main:
            model.save_pretrained(str(session.out))


def train_head(config: TrainConfig, *, callbacks: Sequence[Any] = (), quiet: bool = False) -> TrainResult:
    """Train the head `config.task` names."""
    return run(config, HeadRun(), callbacks=callbacks, quiet=quiet)
