"""Prompt-based methods (peft): prompt tuning, prefix tuning, P-tuning. Each trains only its virtual
tokens, saves an adapter that chat/eval/serve load, is refused by merge, and needs one example per row."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from helpers import SHARED_DATA
from sftlab.config import load_config
from sftlab.errors import SftlabError
from sftlab.training import train

pytestmark = pytest.mark.slow  # real trainings

METHODS = ["prompt_tuning", "prefix_tuning", "p_tuning"]
ALL = [*METHODS, "adaption_prompt"]  # LLaMA-Adapter: attends to its prompt, works on padding-free rows


def config(tiny_model, out, method, **over):
    sets = {"model": str(tiny_model), "datasets": f"[{SHARED_DATA / 'identity.json'}]", "template": "llama2",
            "limit": 8, "max_length": 256, "batch_size": 4, "max_steps": 3, "output_dir": str(out), "method": method,
            "num_virtual_tokens": 4, "precision": "fp32", "seed": 3, "save_steps": 1000, **over}
    return load_config(None, [f"{k}={v}" for k, v in sets.items()])


@pytest.mark.parametrize("method", ALL)
def test_trains_only_its_virtual_tokens_saves_reloads_and_generates(tiny_model, tmp_path, method):
    from sftlab.inference.generate import Generator
    from sftlab.models import load_model, load_tokenizer
    from sftlab.training.merge import merge_adapter

    out = tmp_path / method
    cfg = config(tiny_model, out, method)
    # One example per row by default for those that put virtual tokens in front of the row.
    assert cfg.padding_free is (method == "adaption_prompt") and cfg.learning_rate > 0
    result = train(cfg, quiet=True)
    losses = [r["loss"] for r in result.metrics if "loss" in r]
    assert len(losses) == 2 and all(l == l for l in losses)  # first and last step logged, finite
    saved = json.loads((out / "adapter_config.json").read_text())
    assert saved["peft_type"] == method.upper()
    assert saved.get("num_virtual_tokens", saved.get("adapter_len")) == 4
    adapter = load_file(str(out / "adapter_model.safetensors"))
    assert adapter and all("prompt" in k or "prefix" in k or "adaption" in k for k in adapter)  # nothing else
    model = load_model(str(out)).eval()
    base = load_file(str(tiny_model / "model.safetensors"))
    now = {k.replace("base_model.model.", ""): v for k, v in model.state_dict().items()}
    assert all(torch.equal(now[k], v) for k, v in base.items() if k in now)  # the base model did not move
    gen = Generator(model, load_tokenizer(str(out)))
    ids = gen.prompt_ids([{"role": "user", "content": "Who are you?"}])
    got = {}
    list(gen.stream(ids, done=lambda new, e=None: got.update(new=new, error=e), max_new_tokens=4, min_new_tokens=4,
                    do_sample=False))
    assert got["error"] is None and len(got["new"]) == 4  # it generated, through the adapter
    with pytest.raises(SftlabError, match="there are no weights to merge it into"):
        merge_adapter(out, tmp_path / "merged")


@pytest.mark.parametrize("method", METHODS)
def test_the_trained_token_loss_equals_the_plain_loss_with_virtual_tokens(tiny_model, method):
    """sftlab's loss (trained positions only, virtual tokens cut off the front of the hidden states) equals a
    plain eager forward's cross-entropy through the same peft model."""
    from transformers import AutoModelForCausalLM

    from sftlab.data.collate import Collator
    from sftlab.training.loss import trained_token_loss
    from sftlab.training.methods import apply_method

    cfg = config(tiny_model, "unused", method)
    torch.manual_seed(0)
    model, _ = apply_method(AutoModelForCausalLM.from_pretrained(str(tiny_model), attn_implementation="eager"), cfg)
    model.eval()
    batch = Collator(0, padding_free=False)([
        {"input_ids": [1, 450, 4996, 17354, 1701, 2], "labels": [-100, -100, -100, 17354, 1701, 2]},
        {"input_ids": [1, 306, 626, 2], "labels": [-100, -100, 626, 2]},
    ])
    with torch.no_grad():
        ours = trained_token_loss(model, batch)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logits = logits[:, logits.shape[1] - batch["labels"].shape[1] :]  # the virtual tokens' logits go
    plain = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                              batch["labels"][:, 1:].reshape(-1), ignore_index=-100)
    assert torch.allclose(ours.summed / ours.tokens, plain, atol=1e-5)


def test_padding_free_or_packing_is_refused_with_one_sentence(tiny_model, tmp_path):
    for key in ("padding_free", "packing"):
        with pytest.raises(SftlabError, match="set padding_free: false and packing: false"):
            config(tiny_model, tmp_path / "x", "prompt_tuning", **{key: "true"})
