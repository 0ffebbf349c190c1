"""Cross-entropy over trained tokens only, without evaluating the output head anywhere else.

The model's forward pass is run with `logits_to_keep=1` (so the head sees one position per row),
the decoder's final hidden states are captured with a hook, the positions whose next token is
trained are selected, and the head + cross-entropy run on those rows in chunks. Gradients of a
chunk are computed as soon as its logits exist, so at most one chunk of logits (about 32 M floats)
is alive at a time, whatever the batch — the full [tokens × vocabulary] logits never exist.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.nn.functional as F

from sftlab.data.example import IGNORE_INDEX

# Logit elements per chunk (fp32): 2**25 floats = 128 MiB.
CHUNK_ELEMENTS = 2**25


def base_model(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model under DDP / accelerate / peft wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
            model = model.module
        elif hasattr(model, "get_base_model"):
            model = model.get_base_model()
        else:
            return model


def _prompt_learning(model: torch.nn.Module) -> bool:
    """Whether a peft prompt-based method (virtual tokens in front of the row) is on the model."""
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    config = getattr(model, "active_peft_config", None)
    return bool(getattr(config, "is_prompt_learning", False))


def _softcap(model: torch.nn.Module) -> float | None:
    return getattr(getattr(model, "config", None), "final_logit_softcapping", None)


# Reused buffers for the head's large temporaries (a chunk of logits, the weight in the compute dtype,
# the weight gradient of a chunk). Allocated anew each step, every one of them (tens to hundreds of MB)
# is handed out by the system page by page and given back when freed: on CPU that was 1.1 M page
# faults and ~14 % of the step time for the default model. Kept, they cost their size once.
# They are kept by the run (training/run.py), for its steps only, where that was measured to pay (the CPU), and
# released when it ends; outside a workspace each buffer is allocated as needed.
_WORKSPACE: contextvars.ContextVar[dict[tuple[str, torch.device, torch.dtype], torch.Tensor] | None] = \
    contextvars.ContextVar("sftlab_head_workspace", default=None)


@contextlib.contextmanager
def head_workspace() -> Iterator[None]:
    """The head's loss buffers kept from one step to the next inside the block, and released at its end."""
    token = _WORKSPACE.set({})
    try:
        yield
    finally:
        _WORKSPACE.reset(token)


def _buffer(name: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    size = math.prod(shape)
    kept = _WORKSPACE.get()
    if kept is None:
        return torch.empty(shape, dtype=dtype, device=device)
    key = (name, device, dtype)
    buf = kept.get(key)
    if buf is None or buf.numel() < size:
        buf = kept[key] = torch.empty(size, dtype=dtype, device=device)
    return buf[:size].view(shape)


class _LinearCrossEntropy(torch.autograd.Function):
    """sum_i w_i · CE(h_i · Wᵀ, y_i) · scale, with the gradients of each chunk computed in forward."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, token_weights, scale, softcap, need_h, need_w):  # type: ignore[override]
        n, vocab = hidden.shape[0], weight.shape[0]
        chunk = max(1, CHUNK_ELEMENTS // vocab)
        # The matmuls run in autocast's dtype when it is on (the weight cast once, not once per chunk);
        # logits, softmax and the loss are always fp32.
        device = hidden.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else hidden.dtype
        at = hidden.device
        w_c = weight if weight.dtype == dtype else _buffer("weight", tuple(weight.shape), dtype, at).copy_(weight)
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        with torch.autocast(device, enabled=False):
            for s in range(0, n, chunk):
                h, y = hidden[s : s + chunk].to(dtype), targets[s : s + chunk]
                rows = h.shape[0]
                z = _buffer("logits", (rows, vocab), torch.float32, at)
                if dtype == torch.float32:
                    torch.matmul(h, w_c.t(), out=z)
                else:
                    z.copy_(torch.matmul(h, w_c.t(), out=_buffer("low", (rows, vocab), dtype, at)))
                if softcap:
                    t = torch.tanh(z / softcap)
                    z = z.copy_(t).mul_(softcap)
                # One pass of exp serves the loss and the gradient: z becomes exp(z - max), then softmax.
                picked = z.gather(1, y[:, None]).squeeze(1)
                top = z.amax(dim=-1, keepdim=True)
                probs = z.sub_(top).exp_()
                norm = probs.sum(dim=-1)
                per_token = norm.log() + top.squeeze(1) - picked
                w = token_weights[s : s + chunk] * scale
                total += (per_token * w).sum()
                if need_h or need_w:
                    d = probs.div_(norm[:, None])
                    d[torch.arange(rows, device=d.device), y] -= 1
                    d *= w[:, None]
                    if softcap:
                        d *= 1 - t * t
                    if dtype != torch.float32:
                        d = _buffer("low", (rows, vocab), dtype, at).copy_(d)
                    if need_h:
                        grad_h[s : s + chunk] = torch.matmul(d, w_c)
                    if need_w:
                        if dtype == torch.float32:
                            grad_w.addmm_(d.t(), h)
                        else:
                            grad_w += torch.matmul(d.t(), h, out=_buffer("grad_w", tuple(weight.shape), dtype, at))
        ctx.save_for_backward(grad_h, grad_w)
        ctx.weight_dtype = weight.dtype
        return total

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        grad_h, grad_w = ctx.saved_tensors
        gh = grad_h * grad_out if grad_h is not None else None
        gw = (grad_w * grad_out).to(ctx.weight_dtype) if grad_w is not None else None
        return gh, gw, None, None, None, None, None, None


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    token_weights: torch.Tensor | None = None,
    scale: float = 1.0,
    softcap: float | None = None,
) -> torch.Tensor:
    """Weighted sum of token cross-entropies of `hidden @ weight.T` against `targets`, times `scale`."""
    if token_weights is None:
        token_weights = torch.ones(targets.shape, dtype=torch.float32, device=targets.device)
    need_h = torch.is_grad_enabled() and hidden.requires_grad
    need_w = torch.is_grad_enabled() and weight.requires_grad
    return _LinearCrossEntropy.apply(hidden, weight, targets, token_weights.float(), scale, softcap, need_h, need_w)


@contextlib.contextmanager
def _capture_final_hidden(model: torch.nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """Captures the decoder's last hidden state (what the head would see) during a forward pass."""
    decoder = base_model(model).get_decoder()
    box: dict[str, torch.Tensor] = {}

    def hook(_module: Any, _args: Any, output: Any) -> None:
        box["hidden"] = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]

    handle = decoder.register_forward_hook(hook)
    try:
        yield box
    finally:
        handle.remove()


@dataclass
class LossParts:
    loss: torch.Tensor  # weighted CE sum × scale (what backward runs on)
    summed: torch.Tensor  # unscaled weighted CE sum (detached), for reporting
    tokens: torch.Tensor  # trained targets in this batch


def trained_token_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], scale: float | torch.Tensor = 1.0) -> LossParts:
    """Forward pass through `model` (DDP/peft wrappers included) and cross-entropy over trained targets.

    Labels are unshifted (label t is the token at t, predicted from position t-1), as transformers expects.
    """
    labels = batch["labels"]
    inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "position_ids")}
    if _prompt_learning(model):
        inputs.pop("position_ids", None)  # peft numbers the virtual tokens and the row itself
    targets = labels[:, 1:]
    keep = targets != IGNORE_INDEX
    y = targets[keep]
    weights = batch["weights"][:, 1:][keep] if "weights" in batch else torch.ones(y.shape, device=y.device)
    base = base_model(model)
    if torch.is_tensor(scale):
        scale = float(scale)
    if hasattr(base.get_output_embeddings().weight, "ds_id"):
        # DeepSpeed ZeRO-3 gathers the head only inside the forward pass: there the plain way, full logits.
        logits = model(**inputs, use_cache=False).logits
        z = logits[:, logits.shape[1] - labels.shape[1] : -1][keep].float()
        loss = (F.cross_entropy(z, y, reduction="none") * weights).sum() * scale
    else:
        with _capture_final_hidden(model) as box:
            model(**inputs, use_cache=False, logits_to_keep=1)
        hidden = box["hidden"]
        # Prompt tuning and P-tuning put their virtual tokens in front of each row; they are never targets.
        h = hidden[:, hidden.shape[1] - labels.shape[1] : -1][keep]
        head = base.get_output_embeddings().weight
        if type(head).__name__ == "DTensor":
            # Under FSDP2 the head is used here, after the forward pass: accelerate's wrapping keeps its group
            # (final norm, head, tied embeddings) gathered from the forward to the backward, which this relies on.
            raise RuntimeError("the output head is sharded again after the forward pass; wrap the model with "
                               "accelerate's FSDP2 (distributed.strategy: fsdp2), which keeps it gathered")
        loss = linear_cross_entropy(h, head, y, weights, scale, _softcap(base))
    summed = loss.detach() / scale if scale else loss.detach()
    return LossParts(loss=loss, summed=summed, tokens=keep.sum())


@torch.no_grad()
def evaluate_loss(model: torch.nn.Module, batches: Any, *, device: Any = None, autocast_dtype: Any = None) -> tuple[float, int]:
    """Mean cross-entropy over every trained token of the batches (token-weighted, not batch-averaged)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for batch in batches:
            if device is not None:
                batch = {k: v.to(device) for k, v in batch.items()}
            dev = next(iter(batch.values())).device.type
            with torch.autocast(dev, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                parts = trained_token_loss(model, batch)
            total += float(parts.summed)
            count += int(parts.tokens)
    finally:
        model.train(was_training)
    return (total / count if count else float("nan")), count
