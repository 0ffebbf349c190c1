"""A base model tuned with a chat template its vocabulary lacks: the markers become new special tokens with
trained embedding rows, and the saved model stops at the end-of-turn token. A tiny random GPT-2-shaped
model with the real GPT-2 tokenizer (50,257 tokens, no ChatML markers) and `template: chatml`."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from helpers import FIXTURES, SHARED_DATA, tokenizer
from sftlab.config import load_config
from sftlab.training import train

pytestmark = pytest.mark.slow  # real trainings, models, servers and subprocess CLIs

IM_START, IM_END, EOS = 50257, 50258, 50256
ROWS = 50304  # 50,259 tokens rounded up to a multiple of 64


@pytest.fixture(scope="module")
def gpt2_base(tmp_path_factory):
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = tokenizer("gpt2")
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tok), n_positions=512, n_embd=32, n_layer=2, n_head=4,
                        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    path = tmp_path_factory.mktemp("gpt2") / "base"
    GPT2LMHeadModel(config).save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path


def run(base, out, method, **over):
    sets = dict(model=str(base), datasets=f"[{SHARED_DATA / 'identity.json'}]", template="chatml",
                output_dir=str(out), method=method, max_steps=4, batch_size=4, limit=16, max_length=256,
                learning_rate=5e-2, seed=0, precision="fp32",
                **{"save_steps": 1000, **({"lora_r": 4} if method in ("lora", "hybrid") else {}), **over})
    return train(load_config(None, [f"{k}={v}" for k, v in sets.items()]), quiet=True)


def original_mean(base) -> torch.Tensor:
    """The mean of the base model's embedding rows, computed here from the saved weights."""
    return AutoModelForCausalLM.from_pretrained(str(base)).get_input_embeddings().weight.detach().mean(dim=0)


def check_tokenizer_and_generation_config(out):
    tok = AutoTokenizer.from_pretrained(str(out))
    assert tok.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"]) == [IM_START, IM_END]
    assert tok("<|im_start|>user\nhi<|im_end|>", add_special_tokens=False)["input_ids"][0] == IM_START
    added = {t.content: t.special for t in tok.added_tokens_decoder.values()}
    assert added["<|im_start|>"] and added["<|im_end|>"]
    eos = GenerationConfig.from_pretrained(str(out)).eos_token_id
    assert IM_END in eos and EOS in eos


def test_full_adds_the_markers_and_trains_their_rows(gpt2_base, tmp_path):
    out = tmp_path / "full"
    result = run(gpt2_base, out, "full")
    assert result.report.added_tokens == {"<|im_start|>": IM_START, "<|im_end|>": IM_END}
    assert json.loads((out / "data_report.json").read_text())["added_tokens"] == {"<|im_start|>": IM_START,
                                                                                   "<|im_end|>": IM_END}
    check_tokenizer_and_generation_config(out)
    model = AutoModelForCausalLM.from_pretrained(str(out))
    weight = model.get_input_embeddings().weight.detach()
    assert weight.shape[0] == ROWS and model.config.vocab_size == ROWS
    mean = original_mean(gpt2_base)
    for row in (IM_START, IM_END):  # they start as the mean and are trained away from it
        assert not torch.allclose(weight[row], mean, atol=1e-4)
    # The examples use the new ids as single tokens.
    ids = AutoTokenizer.from_pretrained(str(out)).apply_chat_template([{"role": "user", "content": "hi"}],
                                                                       add_generation_prompt=True, return_dict=True)
    assert ids["input_ids"][0] == IM_START


def test_lora_trains_the_new_rows_only_and_merges(gpt2_base, tmp_path):
    from sftlab.models import load_model
    from sftlab.training.merge import merge_adapter

    out = tmp_path / "lora"
    run(gpt2_base, out, "lora")
    check_tokenizer_and_generation_config(out)
    adapter = load_model(str(out)).eval()
    merged_dir = merge_adapter(out, tmp_path / "merged")
    check_tokenizer_and_generation_config(merged_dir)
    merged = AutoModelForCausalLM.from_pretrained(str(merged_dir)).eval()
    base = AutoModelForCausalLM.from_pretrained(str(gpt2_base)).get_input_embeddings().weight.detach()
    weight = merged.get_input_embeddings().weight.detach()
    assert weight.shape[0] == ROWS
    assert torch.equal(weight[:EOS + 1], base)  # LoRA leaves every original row as it was
    mean = base.mean(dim=0)
    for row in (IM_START, IM_END):
        assert not torch.allclose(weight[row], mean, atol=1e-4)
    ids = torch.tensor([[IM_START, 7220, 198, 5303, IM_END, 198, IM_START]])
    with torch.no_grad():
        assert torch.allclose(adapter(ids).logits, merged(ids).logits, atol=1e-5)


@pytest.mark.parametrize("method", ["freeze", "hybrid"])
def test_freeze_and_hybrid_train_the_new_rows_and_no_other_row(gpt2_base, tmp_path, method):
    out = tmp_path / method
    own = {"freeze": {"freeze_trainable_layers": 1}, "hybrid": {"hybrid_full_fraction": 0.5}}[method]
    run(gpt2_base, out, method, weight_decay=0.1, save_steps=2, **own)
    check_tokenizer_and_generation_config(out)
    base = AutoModelForCausalLM.from_pretrained(str(gpt2_base)).get_input_embeddings().weight.detach()
    weight = AutoModelForCausalLM.from_pretrained(str(out)).get_input_embeddings().weight.detach()
    mean = base.mean(dim=0)
    for row in (IM_START, IM_END):
        assert not torch.allclose(weight[row], mean, atol=1e-4)
    if method == "freeze":
        assert torch.equal(weight[:EOS + 1], base)  # no other row moved (no weight decay on them either)
    else:
        assert not torch.equal(weight[:EOS + 1], base)  # the full phase trained every row
        # ... and the LoRA phase (steps 3-4) none but the new ones: the rows as the checkpoint at the switch
        # left them (the full phase's Adam momentum was cleared for them).
        from safetensors.torch import load_file

        at_switch = load_file(str(out / "checkpoint-2" / "model.safetensors"))["transformer.wte.weight"]
        assert torch.equal(weight[:EOS + 1], at_switch[:EOS + 1])
        assert not torch.equal(weight[IM_START], at_switch[IM_START])


def test_reasoning_and_tool_tags_become_plain_tokens_markers_special_ones():
    from transformers import AutoTokenizer

    from sftlab.data.templates import resolve_template
    from sftlab.data.tokenize import special_token_ids
    from sftlab.training.tokens import add_chat_tokens

    tok = AutoTokenizer.from_pretrained(str(FIXTURES / "tokenizers" / "gpt2"))
    added = add_chat_tokens(tok, resolve_template("chatml", tok, warn=False), ["<think>", "</think>", "<tool_call>"])
    assert sorted(added) == sorted(["<|im_start|>", "<|im_end|>", "<think>", "</think>", "<tool_call>"])
    ids = {t: tok.convert_tokens_to_ids(t) for t in added}
    assert tok("<think>a</think>", add_special_tokens=False)["input_ids"][0] == ids["<think>"]
    assert special_token_ids(tok) & set(ids.values()) == {ids["<|im_start|>"], ids["<|im_end|>"]}
