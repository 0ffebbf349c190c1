"""What an export starts from: the model as sftlab trained it (an adapter merged into its base first, chat-token
rows included), its tokenizer, the chat template it was trained with and the end-of-turn token that template
taught it to stop on."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sftlab.errors import SftlabError, first_line
from sftlab.config.methods import UNMERGEABLE_PEFT_TYPES
from sftlab.models import adapter_base, require_model, resolve_model



@dataclass
class Source:
    name: str  # what the user named (for messages and general.name)
    model: Any  # a plain transformers causal LM, float32, eval mode
    tokenizer: Any
    chat: Any  # ChatTemplate | None
    end_of_turn: str | None  # the template's end-of-turn token (<|im_end|>, <|eot_id|>, </s>), None for plain ones
    stop_ids: list[int]  # every id sftlab's generation stops on
    merged_adapter: bool = False
    task: str | None = None  # "classification" | "reward" for a head model (a …ForSequenceClassification), else None

    @property
    def end_of_turn_id(self) -> int | None:
        return None if self.end_of_turn is None else self.tokenizer.convert_tokens_to_ids(self.end_of_turn)

    @property
    def rows(self) -> int:
        return self.model.get_input_embeddings().weight.shape[0]


def model_config(model: str) -> dict[str, Any]:
    """config.json of the model a model argument names (for an adapter, its base's), read without loading weights."""
    ref = require_model(model)
    if ref.kind == "gguf":
        from sftlab.models import converted_checkpoint

        folder = converted_checkpoint(ref.path)
    elif ref.kind == "hub":
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(ref.name).to_dict()
    else:
        folder = ref.path
        base = adapter_base(folder)
        if base is not None:
            check_adapter(folder)
            return model_config(base)
    try:
        return json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise SftlabError(f"{folder / 'config.json'}: unreadable ({first_line(e)})") from None


def head_of(config: dict[str, Any]) -> str | None:
    """The task of a model whose config.json is `config` when it carries a task head ("classification" or
    "reward", as sftlab.models.head_task reads a folder), else None; a forged config.json counts as no head."""
    architectures = config.get("architectures") if isinstance(config, dict) else None
    if not isinstance(architectures, list) or not any(str(a).endswith("ForSequenceClassification")
                                                        for a in architectures):
        return None
    task = config.get("sftlab_task")
    return task if task in ("classification", "reward") else "reward" if config.get("num_labels") == 1 else "classification"


def model_task(model: str, config: dict[str, Any]) -> str | None:
    """head_of the model itself, `config` being model_config(model); None for an adapter: it is the language model
    it was trained as (a head run's own adapter is refused by check_adapter), whatever its base holds."""
    ref = resolve_model(model)
    return None if ref.kind == "dir" and adapter_base(ref.path) is not None else head_of(config)


def check_adapter(folder: Path) -> None:
    """Refuse a prompt-based adapter (it adds virtual tokens, so there are no weights to merge and export) and a head
    run's adapter (it lacks the head's labels)."""
    from sftlab.training.merge import adapter_settings, refuse_head_adapter

    settings = adapter_settings(folder)
    refuse_head_adapter(folder, settings)
    peft_type = settings.get("peft_type")
    if isinstance(peft_type, str) and peft_type in UNMERGEABLE_PEFT_TYPES:
        raise SftlabError(f"{folder}: a {peft_type.lower()} adapter adds virtual tokens to the input, so there are no "
                          "weights to merge into the model and nothing a GGUF file can hold; export a lora, dora or "
                          "full run instead")


def load_source(model: str, task: str | None = None) -> Source:
    """The model to export, merged and in float32, with its tokenizer, template and stop tokens; with `task` (a head
    model, head_of) loaded with its head, which writes no text and so has no stop tokens."""
    import torch

    from sftlab.data.templates import resolve_template
    from sftlab.data.tokenize import special_token_strings
    from sftlab.inference.generate import stop_token_ids
    from sftlab.models import load_model, load_tokenizer, model_path

    path = model_path(model)
    if task is not None:
        from transformers import AutoModelForSequenceClassification

        try:
            head = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32).eval()
        except (OSError, ValueError) as e:
            raise SftlabError(f"{model}: cannot load the {task} head model ({first_line(e)})") from None
        return Source(name=resolve_model(model).display, model=head, tokenizer=load_tokenizer(path), chat=None,
                      end_of_turn=None, stop_ids=[], task=task)
    is_adapter = (Path(path) / "adapter_config.json").is_file()
    loaded = load_model(path, dtype=torch.float32, dequantize=True)  # (a QLoRA base: dequantised)
    if is_adapter:
        loaded = loaded.merge_and_unload()  # (trainable token rows are folded in too)
    loaded.eval()
    tokenizer = load_tokenizer(path)
    chat = resolve_template(None, tokenizer, warn=False) if getattr(tokenizer, "chat_template", None) else None
    end = chat.end_of_turn(special_token_strings(tokenizer)) if chat is not None else None
    return Source(name=resolve_model(model).display, model=loaded, tokenizer=tokenizer, chat=chat, end_of_turn=end,
                  stop_ids=stop_token_ids(loaded, tokenizer, chat), merged_adapter=is_adapter)
