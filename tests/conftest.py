from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DATA = FIXTURES / "data"


@lru_cache(maxsize=None)
def tokenizer(name: str):
    """Real tokenizers (Qwen2, Llama 3, Llama 2, GPT-2), converted once from the vocabulary-only GGUF files."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(FIXTURES / "tokenizers" / name))


@pytest.fixture
def tok():
    return tokenizer
