"""GGUF tokenizers against the original models' tokenizers: llama.cpp's test vectors (tests/fixtures/vocab/README.md),
ids produced by each model's own Hugging Face tokenizer, compared with what sftlab's load_tokenizer gives."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from sftlab.models import gguf_tokenizer
from sftlab.models import load_tokenizer

VECTORS = Path(__file__).parent / "fixtures" / "vocab"
ROOT = Path(__file__).parent.parent
PLACES = [Path(p) for p in [os.environ.get("SFTLAB_VOCAB_DIR", "")] if p] + [
    VECTORS, ROOT.parent / "shared" / "tokenizers", ROOT / "build" / "vocab"]
SEPARATOR = "\n__ggml_vocab_test__\n"


def vectors(name: str) -> list[tuple[str, list[int]]]:
    texts = (VECTORS / f"ggml-vocab-{name}.gguf.inp").read_text(encoding="utf-8").split(SEPARATOR)
    if texts[-1] == "":  # (the file ends with a separator)
        texts.pop()
    lines = (VECTORS / f"ggml-vocab-{name}.gguf.out").read_text(encoding="utf-8").split("\n")
    return [(text, [int(t) for t in line.split()]) for text, line in zip(texts, lines)]


def vocab_file(name: str) -> Path:
    for place in PLACES:
        if (place / f"ggml-vocab-{name}.gguf").is_file():
            return place / f"ggml-vocab-{name}.gguf"
    pytest.skip(f"ggml-vocab-{name}.gguf is in none of {', '.join(map(str, PLACES))} (run `make vocab`)")


def test_the_vectors_are_read_whole():
    # 46 texts per vocabulary (50 for qwen35), the first one and an empty one among them.
    for name in ("llama-spm", "falcon", "qwen35"):
        cases = vectors(name)
        assert len(cases) == (50 if name == "qwen35" else 46)
        assert cases[0][0] == "ied 4 ½ months"
        assert ("", []) in cases


# One parameter per vocabulary sftlab can read; the big ones take 10-60 s to convert.
FAST = ["llama-spm", "phi-3"]
SLOW = ["gpt-2", "qwen2", "qwen35", "llama-bpe", "deepseek-coder", "deepseek-llm", "starcoder", "falcon"]


@pytest.mark.parametrize("name", FAST + [pytest.param(n, marks=pytest.mark.slow) for n in SLOW])
def test_gguf_tokenizer_gives_the_original_ids(name):
    tok = load_tokenizer(str(vocab_file(name)))
    wrong = [(text, tok.encode(text, add_special_tokens=False), ids) for text, ids in vectors(name)
             if tok.encode(text, add_special_tokens=False) != ids]
    assert not wrong, f"{len(wrong)} of {len(vectors(name))} texts differ, the first: {wrong[0]}"


def test_the_default_model_tokenizes_as_llama_cpp_does():
    # SmolLM2 (pre-tokenizer smollm): one digit per token ('4' apart from ' ½' in the first text; transformers'
    # conversion alone wrote ' ½' as other tokens), ids from llama.cpp itself (tests/fixtures/vocab/README.md).
    texts = [text for text, _ in vectors("gpt-2")]
    lines = (VECTORS / "smollm2-135m-instruct.llama-cpp.out").read_text(encoding="utf-8").split("\n")
    tok = load_tokenizer(None)
    wrong = [(t, tok.encode(t, add_special_tokens=False), line) for t, line in zip(texts, lines)
             if tok.encode(t, add_special_tokens=False) != [int(x) for x in line.split()]]
    assert not wrong, wrong[0]
    assert tok.encode("3333", add_special_tokens=False) == [[int(x) for x in line.split()]
                                                             for t, line in zip(texts, lines) if t == "3333"][0]
    assert len(tok.encode("3333", add_special_tokens=False)) == 4


def test_the_repairs_the_vectors_needed(tmp_path):
    """The differences the repairs remove, literal: Llama 2 keeps '▁' for a leading space (29871 is '▁', 15043
    '▁Hello'); the cache of an older conversion is not used."""
    tok = load_tokenizer(str(vocab_file("llama-spm")))
    assert tok.encode(" Hello world", add_special_tokens=False) == [29871, 15043, 3186]
    assert tok.encode("Hello world", add_special_tokens=False) == [15043, 3186]
    assert tok.decode([29871, 15043, 3186]) == " Hello world"


def test_every_vocabulary_named_exact_has_vectors():
    # CHECKED (what the docs call exact) names only vocabularies whose vectors are shipped and pass; smollm's are
    # llama.cpp's own ids (test_the_default_model_tokenizes_as_llama_cpp_does).
    shipped = {p.name.removeprefix("ggml-vocab-").removesuffix(".gguf.inp") for p in VECTORS.glob("*.inp")}
    named = {"spm": "llama-spm", "gpt-2": "gpt-2"}
    for kind, (good, total) in gguf_tokenizer.CHECKED.items():
        assert good == total
        assert named.get(kind, kind) in shipped or (kind == "smollm" and (VECTORS / "smollm2-135m-instruct.llama-cpp.out").is_file())
    assert gguf_tokenizer._SPLITS["smollm"] == gguf_tokenizer._SPLITS["starcoder"]


def test_an_unchecked_vocabulary_is_said_once(caplog):
    vocab = gguf_tokenizer.GgufVocab(model="gpt2", pre="made-up", architecture="llama", add_space_prefix=False)
    exact = gguf_tokenizer.GgufVocab(model="gpt2", pre="qwen2", architecture="qwen2", add_space_prefix=False)
    with caplog.at_level(logging.WARNING, logger="sftlab"):
        gguf_tokenizer.say_once("x.gguf", vocab)
        gguf_tokenizer.say_once("x.gguf", vocab)
        gguf_tokenizer.say_once("y.gguf", exact)
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1
    assert said[0].startswith("x.gguf: its tokenizer (tokenizer.ggml.model 'gpt2', pre-tokenizer 'made-up') is not one")


def test_a_model_folder_tokenizer_json_is_used_as_it_is(tmp_path):
    # A folder's tokenizer.json is never repaired: its Metaspace (the conversion's old Llama 2 shape) stays.
    import shutil

    shutil.copytree(Path(__file__).parent / "fixtures" / "tokenizers" / "llama2", tmp_path / "m")
    tok = load_tokenizer(str(tmp_path / "m"))
    assert type(tok.backend_tokenizer.pre_tokenizer).__name__ == "Metaspace"
    assert tok.encode(" Hello world", add_special_tokens=False) == [15043, 3186]


def test_names_from_the_file_are_shown_short_and_on_one_line():
    # tokenizer.ggml.model / .pre are whatever the file says: a line break would forge a log line, a long one flood it
    vocab = gguf_tokenizer.GgufVocab(model="gpt2\nWARNING forged", pre="p" * 500, architecture="llama",
                                     add_space_prefix=False)
    assert gguf_tokenizer.fidelity_note(vocab) == (
        "its tokenizer (tokenizer.ggml.model 'gpt2\\nWARNING forged', pre-tokenizer '" + "p" * 60 + "…') is not one "
        "sftlab has checked against the original model's; token ids may differ slightly from the original's "
        "(docs/data.md, tokenizer fidelity). A model folder with the original tokenizer.json is used as it is")


def test_read_vocab_refuses_arrays_nested_too_deeply(tmp_path):
    import struct

    from sftlab.models.gguf_meta import GgufError

    def s(text):
        return struct.pack("<Q", len(text)) + text.encode()

    deep = struct.pack("<I", 9) + struct.pack("<IQ", 9, 1) * 19_999 + struct.pack("<IQ", 4, 0)
    path = tmp_path / "deep.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 2) + s("tokenizer.ggml.model") + struct.pack("<I", 8)
                     + s("gpt2") + s("tokenizer.ggml.merges") + deep)
    with pytest.raises(GgufError, match=r"^the array 'tokenizer.ggml.merges' nests arrays more than 8 deep$"):
        gguf_tokenizer.read_vocab(path)
