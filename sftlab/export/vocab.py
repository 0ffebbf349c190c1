"""The tokenizer as a GGUF file carries it: tokens and their types, BPE merges or SentencePiece scores, the
pre-tokenizer llama.cpp must split text with, the special ids and the BOS/EOS rule.

The pre-tokenizer is found the way llama.cpp's converter finds it: encode a fixed text and hash the ids. A hash
this module has not seen refused (the GGUF would load and tokenize differently, silently), never guessed. The
table below was built from the real tokenizers in tests/fixtures/tokenizers and the default model's, and each entry
is proven by tokenizing a text set in llama.cpp and in transformers (tests/test_export.py).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from sftlab.errors import SftlabError

# sftlab's own probe text (not llama.cpp's): runs of spaces, tabs and newlines, digit runs of 1 to 6 (Llama 3
# groups three, Qwen2 one at a time, GPT-2 all), contractions in both cases, CJK, emoji with joiners, code.
PROBE = ("Hello world! I'm here, you're there; THEY'LL see. We'Ve a'lL\n\n  Indented\ttab\t\tline\r\n   \n"
         "1 12 123 1234 12345 123456 3.14159 2024-06-01\n你好，世界！我想去北京工作。\nこんにちは 안녕하세요 "
         "Привет, мир! Ünïcödé café naïve\n🚀🦙 👩‍💻 ✅ 😶‍🌫️\ndef f(x):\n    return x**2  # ok\n"
         "''' \"\"\" ``` !!!??? ...... ------ =====")

# sha256 of the probe's ids (no special tokens added) → llama.cpp's `tokenizer.ggml.pre`.
KNOWN_PRE = {
    "92b40b95a12da50caae5f454efe52589652f87b216488d72f30537f1b32b5209": "qwen2",  # Qwen2, Qwen2.5
    "9082747c0e0249d65d76ae5a194d7fe658834db0f5a2dbbeca6706574bcebfe1": "llama-bpe",  # Llama 3, 3.1, 3.2
    "1cddd151628776eed60d261b8c9350aef4654051f9b17853e0f59012d4da0fd7": "gpt-2",  # GPT-2
    "b34bd4b87e5313b55b94410deacb96406008e819935e617cf3a12979bc4fbd49": "smollm",  # SmolLM2 (the default model)
}

# token types (gguf.TokenType values, spelled out so this module imports without gguf)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


@dataclass
class GgufVocab:
    model: str  # "gpt2" (byte-level BPE) | "llama" (SentencePiece)
    pre: str | None
    tokens: list[str]
    types: list[int]
    scores: list[float] | None = None
    merges: list[str] = field(default_factory=list)
    special: dict[str, int] = field(default_factory=dict)  # bos, eos, eot, unk, pad → id
    add_bos: bool = False
    add_eos: bool = False
    add_space_prefix: bool | None = None
    padded_rows: int = 0  # embedding rows past the tokenizer's vocabulary, named [PAD<i>]


def probe_hash(tokenizer: Any) -> str:
    ids = tokenizer.encode(PROBE, add_special_tokens=False)
    return hashlib.sha256(json.dumps(ids).encode()).hexdigest()


def tokenizer_json(tokenizer: Any) -> dict[str, Any]:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise SftlabError("the tokenizer has no tokenizer.json (a slow, Python-only tokenizer); GGUF export needs the "
                          "fast one that transformers saves as tokenizer.json")
    return json.loads(backend.to_str())


def tokenizer_kind(data: dict[str, Any]) -> str:
    """'gpt2' for byte-level BPE, 'llama' for a SentencePiece BPE (byte fallback, ▁ for spaces)."""
    model = data.get("model", {})
    if model.get("type") != "BPE":
        raise SftlabError(f"a {model.get('type')} tokenizer cannot be exported to GGUF by sftlab (it writes byte-level "
                          "BPE and SentencePiece-BPE vocabularies); use llama.cpp's convert_hf_to_gguf.py")
    return "llama" if model.get("byte_fallback") else "gpt2"


def pre_tokenizer(tokenizer: Any) -> str:
    digest = probe_hash(tokenizer)
    pre = KNOWN_PRE.get(digest)
    if pre is None:
        raise SftlabError(
            f"the tokenizer's pre-tokenizer is not one sftlab knows (probe hash {digest[:16]}…): llama.cpp would split "
            "text differently from the tokenizer the model was trained with. sftlab exports the Qwen2, Llama 3, "
            "GPT-2 and SmolLM2 tokenizers; for another, use llama.cpp's convert_hf_to_gguf.py")
    return pre


def bos_eos_rule(tokenizer: Any) -> tuple[bool, bool]:
    """Whether encoding text adds BOS at the start and EOS at the end, as the tokenizer really does it."""
    text = "sftlab"
    plain = tokenizer.encode(text, add_special_tokens=False)
    full = tokenizer.encode(text, add_special_tokens=True)
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    add_bos = bos is not None and full[:1] == [bos] and plain[:1] != [bos]
    rest = full[1:] if add_bos else full
    add_eos = eos is not None and rest[-1:] == [eos] and len(rest) == len(plain) + 1
    return add_bos, add_eos


def training_bos_rule(tokenizer: Any, chat: Any) -> bool:
    """add_bos_token as training had it: the tokenizer's rule, but for a chat template that writes no BOS, which
    trained none (sftlab inserts no BOS into a conversation): phi3 or alpaca on a Llama 2 tokenizer."""
    return bos_eos_rule(tokenizer)[0] and (chat is None or template_writes_bos(tokenizer, chat))


def template_writes_bos(tokenizer: Any, chat: Any) -> bool:
    """Whether the chat template's prompt starts with the BOS token's text."""
    bos = tokenizer.bos_token
    try:
        text = chat.render([{"role": "user", "content": "Hi"}], add_generation_prompt=True)
    except Exception:  # noqa: BLE001 - a template that cannot render a user turn: the tokenizer's own rule
        return bos_eos_rule(tokenizer)[0]
    return bool(bos) and text.startswith(bos)


def build_vocab(tokenizer: Any, rows: int, end_of_turn_id: int | None, chat: Any = None) -> GgufVocab:
    """The GGUF vocabulary of `tokenizer` for a model with `rows` embedding rows; `end_of_turn_id` becomes EOS and
    EOT (the token the model was taught to stop on); `chat`, the template, decides a SentencePiece vocabulary's
    space prefix (_space_prefix)."""
    data = tokenizer_json(tokenizer)
    kind = tokenizer_kind(data)
    size = len(tokenizer)
    if size > rows:
        raise SftlabError(f"the tokenizer has {size} tokens but the model only {rows} embedding rows; the added tokens "
                          "have no rows (was the model saved before its embeddings were resized?)")
    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    added = tokenizer.added_tokens_decoder
    special_ids = set(tokenizer.all_special_ids)
    tokens: list[str] = []
    types: list[int] = []
    for i in range(rows):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(UNUSED)
        elif i in added:
            tokens.append(added[i].content)
            if kind == "llama" and i == tokenizer.unk_token_id:
                types.append(UNKNOWN)
            else:
                types.append(CONTROL if added[i].special or i in special_ids else USER_DEFINED)
        else:
            text = by_id[i]
            tokens.append(text)
            types.append(BYTE if kind == "llama" and re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", text) else NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"].get("merges", [])]
    vocab = GgufVocab(model=kind, pre=None, tokens=tokens, types=types, padded_rows=rows - size)
    if kind == "gpt2":
        vocab.pre = pre_tokenizer(tokenizer)
        vocab.merges = merges
    else:
        vocab.scores = _spm_scores(tokens, merges)
        vocab.add_space_prefix = _space_prefix(tokenizer, chat)
    vocab.add_bos, vocab.add_eos = bos_eos_rule(tokenizer)
    vocab.add_bos = training_bos_rule(tokenizer, chat)
    ids = {"bos": tokenizer.bos_token_id, "unk": tokenizer.unk_token_id, "pad": tokenizer.pad_token_id,
           "eos": end_of_turn_id if end_of_turn_id is not None else tokenizer.eos_token_id, "eot": end_of_turn_id}
    vocab.special = {k: int(v) for k, v in ids.items() if v is not None}
    return vocab


def _spm_scores(tokens: list[str], merges: list[str]) -> list[float]:
    """SentencePiece scores for llama.cpp's SPM tokenizer, which merges the adjacent pair whose joined piece scores
    highest: a piece scores minus the rank of the first merge that makes it, so the order of merging is the BPE's
    merge order. Pieces no merge makes (characters, bytes, control tokens) score 0."""
    rank: dict[str, int] = {}
    for r, merge in enumerate(merges):
        rank.setdefault(merge.replace(" ", ""), r)
    return [-float(rank[t]) if t in rank else 0.0 for t in tokens]


def _space_prefix(tokenizer: Any, chat: Any) -> bool:
    """llama.cpp's SentencePiece tokenizer puts a space in front of the input and of every text after a special
    token (add_space_prefix), or nowhere; a Hugging Face Metaspace tokenizer (prepend_scheme "first") only in front
    of the input. Neither setting matches every text, so the one that matches the prompts the model's template
    renders is chosen: a template whose prompts start with a special token (Llama 2's <s>[INST]) needs none,
    one that starts with text (Alpaca) needs it."""
    pieces = tokenizer.convert_ids_to_tokens(tokenizer.encode("a", add_special_tokens=False))
    if not (pieces and pieces[0].startswith("\u2581")):
        return False
    if chat is None:
        return True
    try:
        prompt = chat.render([{"role": "user", "content": "hi"}], add_generation_prompt=True)
    except SftlabError:
        return True
    specials = [t for t in tokenizer.all_special_tokens if t]
    return not any(prompt.startswith(t) for t in specials)
