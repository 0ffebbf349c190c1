"""New chat tokens for a base model: a template's markers that the vocabulary spells as several pieces
(GPT-2 has no `<|im_start|>`) become special tokens, with embedding rows of their own that are trained.

The new rows start as the mean of the existing ones (a neutral point the model already maps to
ordinary text, unlike random rows whose norms are out of scale). `full` trains them with everything
else; `freeze` and `hybrid` (in its LoRA phase) train those rows and no other row of the embeddings
(the gradient of the other rows is zeroed, and the embeddings get no weight decay); `lora`/`dora` train
them through peft's trainable tokens, saved with the adapter and folded in by `sftlab merge`.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import torch

from sftlab.data.templates import ChatTemplate, mismatched_markers
from sftlab.models import resize_for_tokens

log = logging.getLogger("sftlab")

TEXT_MARKERS = ("<think>", "</think>", "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>")


def add_chat_tokens(tokenizer: Any, chat: ChatTemplate, extra: Sequence[str] = ()) -> list[str]:
    """Add the template's markers that are not one token of `tokenizer` (the `<|…|>` literals of its source,
    then `extra`) as new tokens, in the order the template first writes them; the ones added. Control markers
    become special tokens, reasoning and tool-call tags (TEXT_MARKERS) plain ones."""
    missing = list(mismatched_markers(chat, tokenizer, extra))
    # Reasoning and tool-call tags are text a model writes inside its answer (Qwen3's vocabulary has them as plain
    # added tokens): one token each, but not control tokens (not escaped in data, not end-of-turn, shown in chat).
    text = [m for m in missing if m in TEXT_MARKERS]
    if text:
        tokenizer.add_tokens(text, special_tokens=False)
    if len(text) < len(missing):
        tokenizer.add_tokens([m for m in missing if m not in TEXT_MARKERS], special_tokens=True)
    return missing


def init_new_rows(model: Any, tokenizer: Any, new_ids: Sequence[int]) -> None:
    """Resize for `tokenizer` and set the rows of the new ids (and any padding rows the resize added) to
    the mean of the model's original rows, in the input embeddings and in an untied output head."""
    old = model.get_input_embeddings().weight.shape[0]
    resize_for_tokens(model, tokenizer)
    target = model.get_input_embeddings().weight.shape[0]
    index = torch.tensor(sorted(set(new_ids) | set(range(old, target))), dtype=torch.long)
    for weight in _embedding_weights(model):
        with torch.no_grad():
            weight[index] = weight[:old].float().mean(dim=0).to(weight.dtype)


def _embedding_weights(model: Any) -> list[torch.nn.Parameter]:
    weights = [model.get_input_embeddings().weight]
    head = model.get_output_embeddings()
    if head is not None and head.weight is not weights[0]:
        weights.append(head.weight)
    return weights


class RowTraining:
    """Train only some rows of the embeddings (and of an untied head): other rows get a zero gradient.
    With `active` False the mask is off (hybrid's full phase trains every row)."""

    def __init__(self, model: Any, ids: Sequence[int]):
        self.ids = sorted(set(ids))
        self.weights = _embedding_weights(model)
        self.active = True
        self._masks = {}
        for weight in self.weights:
            mask = torch.zeros(weight.shape[0], 1, dtype=weight.dtype, device=weight.device)
            mask[self.ids] = 1
            self._masks[id(weight)] = mask
            weight.requires_grad_(True)
            weight.register_hook(self._hook(mask))  # (and no weight decay: SftTrainer.get_decay_parameter_names)

    def _hook(self, mask: torch.Tensor) -> Any:
        def hook(grad: torch.Tensor) -> torch.Tensor:
            return grad * mask.to(grad.dtype) if self.active else grad

        return hook

    def enable(self) -> None:
        for weight in self.weights:
            weight.requires_grad_(True)

    def clear_optimizer_rows(self, optimizer: Any) -> None:
        """Zero the first moments of the rows that must not move (after a phase that trained them): with a
        zero gradient and a zero moment, Adam leaves a row exactly where it is."""
        inner = getattr(optimizer, "optimizer", optimizer)
        for weight in self.weights:
            state = inner.state.get(weight)
            if state and "exp_avg" in state:
                keep = self._masks[id(weight)].to(state["exp_avg"].dtype)
                state["exp_avg"].mul_(keep)


def token_ids(added: list[str], tokenizer: Any) -> dict[str, int]:
    """token → id of the tokens added (data_report.json's added_tokens)."""
    return {token: tokenizer.convert_tokens_to_ids(token) for token in added}
