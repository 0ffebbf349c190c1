"""The fast tokenizer path (sftlab/data/fastbpe.py) gives exactly what `tokenizers` gives.

`tokenizers` is the reference here: an independent implementation of the same tokenizer. Every
text the fast path returns must have the same token ids and the same token start characters as
`tokenizers`' ids and offsets; texts it cannot vouch for must come back as None.
"""

from __future__ import annotations

import json

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from conftest import SHARED_DATA, tokenizer
from sftlab.data.conversation import Conversation, Message
from sftlab.data.encode import Encoder
from sftlab.data.fastbpe import FastBPE
from sftlab.data.load import load_conversations
from sftlab.data.templates import resolve_template


def reference(tok, texts):
    encs = tok.backend_tokenizer.encode_batch(texts, add_special_tokens=False)
    return [(e.ids, [o[0] for o in e.offsets]) for e in encs]


def check_agrees(tok, texts):
    """Encode with the fast path; every text it returns equals `tokenizers`. Returns how many it did."""
    fast, why = FastBPE.for_tokenizer(tok)
    assert fast is not None, why
    got = fast.encode(texts)
    done = 0
    for text, g, (ids, starts) in zip(texts, got, reference(tok, texts)):
        if g is None:
            continue
        done += 1
        assert g.ids.tolist() == ids, text
        assert g.starts.tolist() == starts, text
    return done


def rendered(tok, template):
    """Every conversation of the shipped data files, rendered with the template."""
    encoder = Encoder(tok, resolve_template(template, tok))
    texts = []
    for name in ("alpaca_en_demo.json", "alpaca_zh_demo.json", "glaive_toolcall_en_demo.json", "identity.json"):
        for conv in load_conversations(SHARED_DATA / name).conversations:
            texts += [p.text for p in encoder._render(conv)[0]]
    texts += [json.loads(line)["text"] for line in (SHARED_DATA / "c4_demo.jsonl").read_text().splitlines()]
    return texts


@pytest.mark.parametrize(("name", "template"), [("qwen2", "chatml"), ("gpt2", "alpaca")])
def test_agrees_with_tokenizers_on_all_shipped_data(name, template):
    tok = tokenizer(name)
    texts = rendered(tok, template)
    done = check_agrees(tok, texts)
    # English, Chinese, tool calls and web text: nearly every text is done by the fast path.
    assert done >= 0.98 * len(texts), (done, len(texts))


def test_default_model_agrees_with_tokenizers():
    from sftlab.models import load_tokenizer

    tok = load_tokenizer(None)  # SmolLM2's own tokenizer and template
    texts = rendered(tok, None)[:1500]
    assert check_agrees(tok, texts) >= 0.98 * len(texts)


TRICKY = [
    "Hi  there,\n  world 你好",
    "I'M HERE. DON'T! It's 'quoted' and they'LL go; we'd've",
    "numbers 1234567 3.14159 -42 1,000,000 ２０２４年",
    "    four spaces\n\n\n\nnewlines\t\ttabs \u3000ideographic space\u00a0nbsp",
    " " * 37 + "x" + " " * 80,
    "\n" * 12 + "end",
    "emoji 😀🤖👋🏽 and a family 👨\u200d👩\u200d👧 ❤️",
    "中文标点：“你好”，（测试）。《书名》——破折号……省略号",
    "混合English和中文mixed😀text123数字",
    "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<|im_end|><|endoftext|>x<|im_start|>",
    "tail spaces   ",
    "café naïve résumé Ωμέγα Привет мир",
    "code:\n```python\ndef f(x):\n    return x ** 2  # square\n```\n",
    "",
]


@pytest.mark.parametrize("name", ["qwen2", "gpt2"])
def test_agrees_on_tricky_text(name):
    check_agrees(tokenizer(name), TRICKY)


def test_characters_outside_the_checked_blocks_go_to_tokenizers():
    fast, _ = FastBPE.for_tokenizer(tokenizer("qwen2"))
    # U+20000 (CJK extension B) and U+017F (long s, which case-insensitive patterns fold to "s").
    got = fast.encode(["plain text", "rare 𠀀 ideograph", "long ſ here", "ok 中文"])
    assert [g is not None for g in got] == [True, False, False, True]


def test_text_not_in_nfc_goes_to_tokenizers_when_the_tokenizer_normalizes():
    decomposed = "cafe\u0301"  # é as e + combining accent: Qwen2 normalizes to NFC first
    fast, _ = FastBPE.for_tokenizer(tokenizer("qwen2"))
    assert fast.encode([decomposed]) == [None]
    gpt2, _ = FastBPE.for_tokenizer(tokenizer("gpt2"))  # no normalizer: nothing to disagree on
    assert check_agrees(tokenizer("gpt2"), [decomposed]) == 1
    assert gpt2.encode([decomposed])[0] is not None


def tiny_bpe():
    """A byte-level BPE whose merges tiktoken's rule would not follow: merges are b+c, then a+b,
    then ab+c. `tokenizers` turns "abc" into a|bc (a+bc is not a merge); tiktoken would take the
    whole piece "abc", a vocabulary token."""
    from sftlab.data.fastbpe import _byte_decoder

    alphabet = sorted(_byte_decoder(), key=lambda c: _byte_decoder()[c])
    vocab = {c: i for i, c in enumerate(alphabet)}
    vocab.update({"bc": 256, "ab": 257, "abc": 258})
    bpe = models.BPE(vocab=vocab, merges=[("b", "c"), ("a", "b"), ("ab", "c")])
    backend = Tokenizer(bpe)
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    return PreTrainedTokenizerFast(tokenizer_object=backend)


def test_a_token_tiktoken_would_make_differently_goes_to_tokenizers():
    tok = tiny_bpe()
    a, b, c = ord("a"), ord("b"), ord("c")  # byte values: printable bytes keep their ids here
    assert tok("abc", add_special_tokens=False)["input_ids"] == [a, 256]  # a | bc
    assert tok("ab", add_special_tokens=False)["input_ids"] == [257]
    fast, why = FastBPE.for_tokenizer(tok)
    assert fast is not None, why
    got = fast.encode(["abc", "ab", "xab c"])
    assert got[0] is None  # tiktoken says [abc]: not vouched for
    assert got[1].ids.tolist() == [257]
    assert got[2].ids.tolist() == [ord("x"), 257, ord(" "), c]
    assert got[2].starts.tolist() == [0, 1, 3, 4]
    assert b == 98


def test_encoder_uses_the_fast_path_and_gives_the_same_examples():
    tok = tokenizer("qwen2")
    chat = resolve_template("chatml", tok)
    convs = [
        Conversation([Message("system", "You are 小助手. "), Message("user", t), Message("assistant", t[::-1] + " ok")])
        for t in TRICKY
    ] + [Conversation([Message("user", "abc"), Message("assistant", "  spaced  answer  ")])]
    fast = Encoder(tok, chat, fast=True).encode(convs)
    plain = Encoder(tok, chat, fast=False).encode(convs)
    assert [e.to_dict() for e in fast.examples] == [e.to_dict() for e in plain.examples]
    assert [d.to_dict() for d in fast.dropped] == [d.to_dict() for d in plain.dropped]
    # The conversation of the literal token-for-token tests is done by the fast path.
    from test_encode import conversation

    fast_path, _ = FastBPE.for_tokenizer(tok)
    text = Encoder(tok, chat)._render(conversation())[0][0].text
    assert fast_path.encode([text])[0] is not None


def test_tokenizers_the_fast_path_does_not_reproduce_are_left_alone():
    # Llama 2: SentencePiece-style BPE with byte fallback; Llama 3: converted from tiktoken, with
    # competing merges for most tokens.
    assert FastBPE.for_tokenizer(tokenizer("llama2")) == (None, "BPE with dropout, byte fallback or word affixes")
    assert FastBPE.for_tokenizer(tokenizer("llama3")) == (None, "many tokens are made by several merges")


@pytest.mark.parametrize("name", ["qwen2", "gpt2"])
def test_every_character_of_the_checked_blocks_splits_alike(name):
    # Each character between letters, digits and spaces, one text per character, so a letter /
    # number / space class that differed between the two regex engines would move a boundary.
    import re

    from sftlab.data.fastbpe import _SAFE

    chars = [chr(c) for c in range(0x110000) if re.fullmatch(f"[{_SAFE}]", chr(c))]
    texts = [f"a{c}b 1{c}2 {c} {c}{c}x\n" for c in chars if c not in "\r\n"]
    assert len(texts) > 25000
    assert check_agrees(tokenizer(name), texts) >= 0.99 * len(texts)
