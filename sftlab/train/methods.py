"""Which parameters a method trains: full, freeze (top layers), LoRA, DoRA, and hybrid (full, then LoRA).

Hybrid: full fine-tuning moves the whole model toward the new data early, when the updates are
largest; LoRA then continues at a fraction of the optimizer memory and with less drift from what the
model already knew. The LoRA layers are injected at the start (with B = 0 they change nothing) and
switched off until the switch step, so one optimizer and one learning-rate schedule cover the run:
parameters that get no gradient are skipped by the optimizer.
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import torch

from sftlab.config import PROMPT_METHODS, TrainConfig
from sftlab.errors import SftlabError, first_line
from sftlab.train.tokens import RowTraining

# peft 0.21 calls a transformers 5 method that warns of its removal in v6 on every LoRA model: noise to a
# user, who can do nothing about it (transformers is pinned below 6).
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The stack of decoder blocks (the longest ModuleList in the model)."""
    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList)]
    if not lists:
        raise SftlabError(f"{type(model).__name__}: cannot find its decoder layers for method=freeze")
    return max(lists, key=len)


def lora_config(config: TrainConfig, new_token_ids: Sequence[int] = ()) -> Any:
    """LoRA/DoRA as configured; new chat tokens' embedding rows trained as peft's trainable tokens."""
    from peft import LoraConfig, TaskType

    return LoraConfig(
        trainable_token_indices=list(new_token_ids) or None,
        task_type=TaskType.CAUSAL_LM,
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.lora_targets,
        use_dora=config.method == "dora",
    )


def prompt_config(config: TrainConfig, model: torch.nn.Module) -> Any:
    """peft's prompt tuning (virtual token embeddings, optionally started from a text), prefix tuning
    (virtual keys and values in every layer), P-tuning (virtual tokens from a small prompt encoder) or LLaMA-Adapter
    (adaption prompts, through a zero-initialised gate, in the top layers)."""
    from peft import (AdaptionPromptConfig, PrefixTuningConfig, PromptEncoderConfig, PromptTuningConfig,
                      PromptTuningInit, TaskType)

    if config.method == "adaption_prompt":
        layers = min(config.adaption_layers, len(decoder_layers(model)))
        return AdaptionPromptConfig(task_type=TaskType.CAUSAL_LM, adapter_layers=layers,
                                    adapter_len=config.num_virtual_tokens)
    common = {"task_type": TaskType.CAUSAL_LM, "num_virtual_tokens": config.num_virtual_tokens}
    if config.method == "prompt_tuning":
        if config.prompt_init_text:
            from sftlab.models import model_path

            return PromptTuningConfig(**common, prompt_tuning_init=PromptTuningInit.TEXT,
                                      prompt_tuning_init_text=config.prompt_init_text,
                                      tokenizer_name_or_path=model_path(config.model))
        return PromptTuningConfig(**common)
    if config.method == "prefix_tuning":
        return PrefixTuningConfig(**common)
    return PromptEncoderConfig(**common, encoder_hidden_size=model.config.hidden_size)


def apply_method(model: torch.nn.Module, config: TrainConfig, new_token_ids: Sequence[int] = ()) -> torch.nn.Module:
    """The model to hand to the Trainer, with exactly the method's parameters trainable (and the embedding
    rows of new chat tokens, sftlab/train/tokens.py)."""
    model = _apply(model, config, new_token_ids)
    if new_token_ids and config.method in ("freeze", "hybrid") and not (
            config.method == "freeze" and config.freeze_train_embeddings):
        rows = RowTraining(model, new_token_ids)
        rows.active = config.method == "freeze"  # hybrid: every row trains in the full phase
        model._sftlab_row_training = rows
    return model


def _apply(model: torch.nn.Module, config: TrainConfig, new_token_ids: Sequence[int]) -> torch.nn.Module:
    method = config.method
    if method == "full":
        model.requires_grad_(True)
        return model
    if method == "freeze":
        model.requires_grad_(False)
        layers = decoder_layers(model)
        n = config.freeze_trainable_layers
        if n > len(layers):
            raise SftlabError(f"freeze_trainable_layers={n}, but the model has only {len(layers)} layers")
        for layer in layers[len(layers) - n :]:
            layer.requires_grad_(True)
        decoder = model.get_decoder()
        norm = getattr(decoder, "norm", None) or getattr(decoder, "final_layernorm", None)
        if norm is not None:  # the final norm sits between the top layer and the head
            norm.requires_grad_(True)
        if config.freeze_train_embeddings:
            model.get_input_embeddings().requires_grad_(True)
            model.get_output_embeddings().requires_grad_(True)
        return model
    from peft import get_peft_model, inject_adapter_in_model

    if method in ("lora", "dora"):
        if hasattr(model, "peft_config"):
            # The model is a LoRA/DoRA run's output (a staged run's previous stage, not merged): train that same
            # adapter on (its r, alpha and targets), the base frozen.
            for name, p in model.named_parameters():
                p.requires_grad_(is_adapter_param(name))
            return model
        return _with_targets(config, lambda: get_peft_model(model, lora_config(config, new_token_ids)))
    if method in (*PROMPT_METHODS, "adaption_prompt"):
        if new_token_ids:
            raise SftlabError(f"method {method} cannot train new chat tokens (the template's markers are not tokens of "
                              "this model); use full, freeze, lora, dora or hybrid, or a template the model knows")
        try:
            return get_peft_model(model, prompt_config(config, model))
        except (ValueError, KeyError) as e:
            raise SftlabError(f"method {method} does not support this model "
                              f"({getattr(model.config, 'model_type', '?')}): {first_line(e)}") from None
    if method == "hybrid":
        model = _with_targets(config, lambda: inject_adapter_in_model(lora_config(config), model))
        # Everything trainable while the optimizer is built; HybridSwitch decides per phase.
        model.requires_grad_(True)
        return model
    raise SftlabError(f"unknown method {method!r}")


def _with_targets(config: TrainConfig, make: Any) -> Any:
    """peft's LoRA layers made by `make()`, or one sentence naming lora_targets when they do not fit the model."""
    try:
        return make()
    except ValueError as e:
        raise SftlabError(f"lora_targets={config.lora_targets!r}: {first_line(e)}") from None


def _adapter_layers(model: torch.nn.Module) -> list[Any]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [m for m in model.modules() if isinstance(m, BaseTunerLayer)]


def is_adapter_param(name: str) -> bool:
    return "lora_" in name


def set_hybrid_phase(model: torch.nn.Module, phase: str) -> None:
    """phase "full": base weights train, adapters off. phase "lora": base frozen, adapters on."""
    full = phase == "full"
    for name, p in model.named_parameters():
        if is_adapter_param(name):
            p.requires_grad_(not full)
        else:
            p.requires_grad_(full)
            if not full:
                p.grad = None
    for layer in _adapter_layers(model):
        # enable_adapters() also flips requires_grad of the adapter weights; keep ours.
        layer._disable_adapters = full
    rows = getattr(model, "_sftlab_row_training", None)
    if rows is not None:  # new chat tokens: their rows go on training in the LoRA phase, no other row
        rows.active = not full
        if not full:
            rows.enable()


def merge_adapters(model: torch.nn.Module) -> torch.nn.Module:
    """Fold injected LoRA/DoRA layers into their base weights and put the plain layers back."""
    adapters = {id(m) for m in _adapter_layers(model)}
    for name, module in list(model.named_modules()):
        if id(module) in adapters and hasattr(module, "get_base_layer"):
            if not module.disable_adapters:
                module.merge()
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, module.get_base_layer())
    return model

