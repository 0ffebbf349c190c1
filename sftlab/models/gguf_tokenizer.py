"""GGUF tokenizers made the original model's own.

A GGUF file carries a vocabulary, its merges and the name of the original tokenizer's pre-tokenizer
(`tokenizer.ggml.pre`), not the tokenizer itself. transformers' conversion rebuilds one from that, and for several
vocabularies the rebuilt one splits text differently from the original: ids the model never saw in pre-training.
`repair` sets, per pre-tokenizer type, what the original tokenizer.json does; llama.cpp's own test vectors
(tests/fixtures/vocab/, produced by each model's original Hugging Face tokenizer) say which are exact.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sftlab.errors import shown

_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_CJK = "[一-龥ࠀ-一가-퟿]+"

# The splits the original tokenizers make before byte-level BPE, applied in turn (each regex splits the pieces the
# one before it left, matches and the text between them alike), per `tokenizer.ggml.pre`. Pre-tokenizer types that
# transformers' conversion already splits right (llama-bpe, qwen2, qwen35, gpt-2 …) are not listed.
_DIGITS_THEN_GPT2 = (r"\p{N}", _GPT2)  # StarCoder's tokenizer and the ones derived from it: one digit per token
_SPLITS: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(("starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva"), _DIGITS_THEN_GPT2),
    "falcon": (r"[\p{P}\$\+<=>\^~\|`]+", _GPT2, r"[0-9][0-9][0-9]"),
    "deepseek-coder": (r"[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", _CJK, r"\p{N}"),
    # (the letter class is DeepSeek LLM's own, as its tokenizer.json spells it)
    "deepseek-llm": (r"[\r\n]", r"\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-ώᾀ-ᾴᾶ-ᾼιῂ-ῄῆ-ῌῐ-ΐῖ-Ίῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤΩℨK-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+", r"\s?[!-/:-~！-／：-～‘-‟　-。]+", r"\s+$", _CJK, r"\p{N}+"),
}

# Byte-level vocabularies whose original BPE takes a word that is in the vocabulary whole instead of merging it
# (the llama 3 family's `ignore_merges`): without it 'Cửa Việt' comes out as five tokens where Llama 3 writes three.
_IGNORE_MERGES = frozenset(("llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0",
                            "lfm2", "jina-v5-nano", "minicpm5", "youtu"))

# Pre-tokenizer types checked against the original tokenizer's ids (llama.cpp's 46 test texts, docs/data.md), with the
# figure after repair: these are exact. "spm" stands for a sentencepiece vocabulary (`tokenizer.ggml.model` llama).
CHECKED = {
    "gpt-2": (46, 46), "qwen2": (46, 46), "qwen35": (50, 50), "llama-bpe": (46, 46), "deepseek-coder": (46, 46),
    "deepseek-llm": (46, 46), "starcoder": (46, 46), "smollm": (46, 46), "falcon": (46, 46), "spm": (46, 46),
}

log = logging.getLogger("sftlab")


@dataclass(frozen=True)
class GgufVocab:
    """What a GGUF file says about its tokenizer."""

    model: str  # tokenizer.ggml.model: gpt2 (byte-level BPE), llama (sentencepiece), …
    pre: str  # tokenizer.ggml.pre ("" where the file does not say)
    architecture: str
    add_space_prefix: bool

    @property
    def kind(self) -> str:
        """The name CHECKED knows this vocabulary by."""
        return "spm" if self.model == "llama" else self.pre


def read_vocab(path: Path) -> GgufVocab:
    from sftlab.models.gguf_meta import read_meta

    meta = read_meta(path)
    return GgufVocab(str(meta.get("tokenizer.ggml.model", "")), str(meta.get("tokenizer.ggml.pre", "")),
                     str(meta.get("general.architecture", "")), bool(meta.get("tokenizer.ggml.add_space_prefix", True)))


def repair(tokenizer: Any, vocab: GgufVocab) -> Any:
    """`tokenizer` (transformers' conversion of the GGUF) with the original's pre-tokenization, changed in place."""
    from tokenizers import Regex, normalizers, pre_tokenizers

    backend = tokenizer.backend_tokenizer
    if vocab.model == "gpt2":
        splits = _SPLITS.get(vocab.pre)
        if splits:
            backend.pre_tokenizer = pre_tokenizers.Sequence(
                [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in splits]
                + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        if vocab.pre in _IGNORE_MERGES:
            backend.model.ignore_merges = True
    elif vocab.model == "llama" and vocab.architecture not in ("gemma", "gemma2", "gemma3") and vocab.add_space_prefix:
        # Llama 2's tokenizer.json (the "legacy" one every sentencepiece model of its line ships) prepends '▁' to the
        # whole text and turns every space into '▁'; the Metaspace pre-tokenizer of the conversion prepends only where
        # the text does not start with a space already, so ' Hello' lost a token.
        backend.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
        backend.pre_tokenizer = None
    return tokenizer


def fidelity_note(vocab: GgufVocab) -> str | None:
    """One sentence where this vocabulary's ids are not known to be the original tokenizer's, None where they are."""
    figure = CHECKED.get(vocab.kind)
    if figure and figure[0] == figure[1]:
        return None
    if figure:
        return (f"its tokenizer (pre-tokenizer '{vocab.kind}') gives the original model's token ids for {figure[0]} of "
                f"{figure[1]} of llama.cpp's test texts; the others differ slightly (docs/data.md, tokenizer fidelity)")
    name = shown(vocab.pre) if vocab.pre else "none stated"
    return (f"its tokenizer (tokenizer.ggml.model '{shown(vocab.model)}', pre-tokenizer '{name}') is not one sftlab "
            "has checked against the original model's; token ids may differ slightly from the original's (docs/data.md, "
            "tokenizer fidelity). A model folder with the original tokenizer.json is used as it is")


_said: set[str] = set()


def say_once(display: str, vocab: GgufVocab) -> None:
    """Log the fidelity note for a GGUF tokenizer once per process (inspect, train and the rest all load it)."""
    note = fidelity_note(vocab)
    if note and display not in _said:
        _said.add(display)
        log.warning("%s: %s", display, note)
