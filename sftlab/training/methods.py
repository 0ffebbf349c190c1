"""Which parameters a method trains: full, freeze (top layers), LoRA, DoRA, and hybrid (full, then LoRA).

Hybrid: full fine-tuning moves the whole model toward the new data early, when the updates are
largest; LoRA then continues at a fraction of the optimizer memory and with less drift from what the
model already knew. The LoRA layers are injected at the start (with B = 0 they change nothing) and
switched off until the switch step, so one optimizer and one learning-rate schedule cover the run:
parameters that get no gradient are skipped by the optimizer.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from sftlab.config import TrainConfig
from sftlab.errors import SftlabError, first_line
from sftlab.training.tokens import RowTraining

# A method's setup: (model, config, new chat token ids) → (the model to train, the row training of the new tokens
# or None), with exactly the method's parameters trainable.
Setup = Callable[[torch.nn.Module, TrainConfig, list[int]], tuple[torch.nn.Module, Any]]
SETUPS: dict[str, Setup] = {}


def setup_for(*methods: str) -> Callable[[Setup], Setup]:
    """Registers a function as the setup of the named methods (records of sftlab/config/methods.py)."""

    def register(setup: Setup) -> Setup:
        for name in methods:
            SETUPS[name] = setup
        return setup

    return register

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
        **config.method_spec.peft_options,  # (DoRA: use_dora)
    )


def apply_method(model: torch.nn.Module, config: TrainConfig,
                 new_token_ids: Sequence[int] = ()) -> tuple[torch.nn.Module, RowTraining | None]:
    """The model to hand to the Trainer, with exactly the method's parameters trainable, and the row training of new
    chat tokens (sftlab/training/tokens.py) where the method trains only their rows of the embeddings (None otherwise).
    Each method's setup is the function below registered for its name (SETUPS)."""
    spec = config.method_spec
    if new_token_ids and not spec.trains_new_tokens:
        raise SftlabError(f"method {spec.name} cannot train new chat tokens (the template's markers are not tokens "
                          "of this model); use a method that can (full, freeze, lora, dora, hybrid), or a template "
                          "the model knows")
    return SETUPS[spec.name](model, config, list(new_token_ids))


@setup_for("full")
def apply_full(model: torch.nn.Module, config: TrainConfig, new_ids: list[int]) -> tuple[torch.nn.Module, None]:
    model.requires_grad_(True)
    return model, None


@setup_for("freeze")
def apply_freeze(model: torch.nn.Module, config: TrainConfig, new_ids: list[int]) -> tuple[torch.nn.Module, Any]:
    decoder = model.get_decoder()
    train_top_layers(model, config.freeze_trainable_layers,
                     getattr(decoder, "norm", None) or getattr(decoder, "final_layernorm", None))
    if config.freeze_train_embeddings:  # the whole embedding and head train: new rows included
        model.get_input_embeddings().requires_grad_(True)
        model.get_output_embeddings().requires_grad_(True)
        return model, None
    return model, RowTraining(model, new_ids) if new_ids else None


def train_top_layers(model: torch.nn.Module, n: int, norm: torch.nn.Module | None) -> None:
    """Everything frozen but the top `n` decoder layers and the final `norm` (it sits between them and the head)."""
    model.requires_grad_(False)
    layers = decoder_layers(model)
    if n > len(layers):
        raise SftlabError(f"freeze_trainable_layers={n}, but the model has only {len(layers)} layers")
    for layer in layers[len(layers) - n :]:
        layer.requires_grad_(True)
    if norm is not None:
        norm.requires_grad_(True)


@setup_for("lora", "dora", "qlora")
def apply_lora(model: torch.nn.Module, config: TrainConfig, new_ids: list[int]) -> tuple[torch.nn.Module, None]:
    """LoRA, or DoRA (lora_config reads the method), or QLoRA (LoRA over the 4-bit layers of the base the run loaded:
    sftlab/models/quantize.py): new chat tokens' rows as peft's trainable tokens."""
    from peft import get_peft_model

    if hasattr(model, "peft_config"):
        # The model is a LoRA/DoRA run's output (a staged run's previous stage, not merged): train that same
        # adapter on (its r, alpha and targets), the base frozen.
        for name, p in model.named_parameters():
            p.requires_grad_(is_adapter_param(name))
        return model, None
    return _with_targets(config, lambda: get_peft_model(model, lora_config(config, new_ids))), None


@setup_for("hybrid")
def apply_hybrid(model: torch.nn.Module, config: TrainConfig, new_ids: list[int]) -> tuple[torch.nn.Module, Any]:
    from peft import inject_adapter_in_model

    model = _with_targets(config, lambda: inject_adapter_in_model(lora_config(config), model))
    # Everything trainable while the optimizer is built; HybridSwitch decides per phase.
    model.requires_grad_(True)
    rows = RowTraining(model, new_ids) if new_ids else None
    if rows is not None:
        rows.active = False  # every row trains in the full phase; only the new ones in the LoRA phase
    return model, rows


# The prompt-based methods (peft): each builds its peft config; _prompt_model wraps the model in it.

@setup_for("prompt_tuning")
def apply_prompt_tuning(model: torch.nn.Module, config: TrainConfig, new_ids: list[int]) -> tuple[torch.nn.Module, None]:
    """Trained virtual token embeddings, optionally started from a text's."""
    from peft import PromptTuningConfig, PromptTuningInit

    options: dict[str, Any] = {}
    if config.prompt_init_text:
        from sftlab.models import model_path

        options = {"prompt_tuning_init": PromptTuningInit.TEXT, "prompt_tuning_init_text": config.prompt_init_text,
                   "tokenizer_name_or_path": model_path(config.model)}
    return _prompt_model(model, config, lambda: PromptTuningConfig(**_virtual_tokens(config), **options))


@setup_for("prefix_tuning")
def apply_prefix_tuning(model: torch.nn.Module, config: TrainConfig, new_ids: list[int]) -> tuple[torch.nn.Module, None]:
    """Virtual keys and values in every layer."""
    from peft import PrefixTuningConfig

    return _prompt_model(model, config, lambda: PrefixTuningConfig(**_virtual_tokens(config)))


@setup_for("p_tuning")
def apply_p_tuning(model: torch.nn.Module, config: TrainConfig, new_ids: list[int]) -> tuple[torch.nn.Module, None]:
    """Virtual tokens from a small prompt encoder."""
    from peft import PromptEncoderConfig

    return _prompt_model(model, config, lambda: PromptEncoderConfig(
        **_virtual_tokens(config), encoder_hidden_size=model.config.hidden_size))


@setup_for("adaption_prompt")
def apply_adaption_prompt(model: torch.nn.Module, config: TrainConfig, new_ids: list[int]) -> tuple[torch.nn.Module, None]:
    """LLaMA-Adapter: adaption prompts, through a zero-initialised gate, in the top layers."""
    from peft import AdaptionPromptConfig, TaskType

    layers = min(config.adaption_layers, len(decoder_layers(model)))
    return _prompt_model(model, config, lambda: AdaptionPromptConfig(
        task_type=TaskType.CAUSAL_LM, adapter_layers=layers, adapter_len=config.num_virtual_tokens))


def _virtual_tokens(config: TrainConfig) -> dict[str, Any]:
    from peft import TaskType

    return {"task_type": TaskType.CAUSAL_LM, "num_virtual_tokens": config.num_virtual_tokens}


def _prompt_model(model: torch.nn.Module, config: TrainConfig, peft_config: Callable[[], Any]) -> tuple[torch.nn.Module, None]:
    """The model in the method's peft wrapper, or one sentence when the method does not fit the model."""
    from peft import get_peft_model

    try:
        return get_peft_model(model, peft_config()), None
    except (ValueError, KeyError) as e:
        raise SftlabError(f"method {config.method} does not support this model "
                          f"({getattr(model.config, 'model_type', '?')}): {first_line(e)}") from None


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


def set_hybrid_phase(model: torch.nn.Module, lora: bool, rows: RowTraining | None = None) -> None:
    """hybrid's phases: full (base weights train, adapters off), then LoRA (base frozen, adapters on; of the
    embeddings only the new chat tokens' rows go on training)."""
    for name, p in model.named_parameters():
        if is_adapter_param(name):
            p.requires_grad_(lora)
        else:
            p.requires_grad_(not lora)
            if lora:
                p.grad = None
    for layer in _adapter_layers(model):
        # enable_adapters() also flips requires_grad of the adapter weights; keep ours.
        layer._disable_adapters = not lora
    if rows is not None:
        rows.active = lora
        if lora:
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

