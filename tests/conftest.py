from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
# Real instruction data, copied from shared/data so a fresh clone tests on its own.
SHARED_DATA = FIXTURES / "data"


@lru_cache(maxsize=None)
def tokenizer(name: str):
    """Real tokenizers (Qwen2, Llama 3, Llama 2, GPT-2), converted once from the vocabulary-only GGUF files."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(FIXTURES / "tokenizers" / name))


@pytest.fixture
def tok():
    return tokenizer


def make_tiny_model(path: Path, tokenizer_name: str = "llama2", layers: int = 2, seed: int = 0) -> Path:
    """A tiny randomly initialised Llama with a real tokenizer, saved like any model directory."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tokenizer(tokenizer_name)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def tiny_chat_model(tmp_path_factory) -> Path:
    """A tiny random model with the Qwen2 tokenizer and its chat template (for chat, serve, eval)."""
    return make_tiny_model(tmp_path_factory.mktemp("tinychat") / "model", tokenizer_name="qwen2")
