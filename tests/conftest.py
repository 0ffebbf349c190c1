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
