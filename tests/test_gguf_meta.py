"""sftlab.models.gguf_meta against bytes written by hand (the GGUF layout spelled out here) and against gguf's own
GGUFReader on every real GGUF file at hand (the default model, llama.cpp's vocabulary files)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from sftlab.models.gguf_meta import GgufError, read_meta

ROOT = Path(__file__).parent.parent


def s(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def kv_string(key: str, value: str) -> bytes:
    return s(key) + struct.pack("<I", 8) + s(value)


def handmade(tensor_data: int = 64, version: int = 3) -> bytes:
    """A GGUF of 4 keys (a string, a u32, a bool, a string array of 3, an i32 array of 2) and one F32 tensor of
    shape (4, 2): 32 bytes of data after the header, aligned to 32."""
    kvs = [
        kv_string("general.architecture", "llama"),
        s("llama.block_count") + struct.pack("<II", 4, 7),
        s("tokenizer.ggml.add_space_prefix") + struct.pack("<I?", 7, False),
        s("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 3) + s("a") + s("你好") + s(""),
        s("tokenizer.ggml.token_type") + struct.pack("<IIQ", 9, 5, 2) + struct.pack("<ii", 1, -1),
    ]
    tensor = s("w") + struct.pack("<I", 2) + struct.pack("<QQ", 4, 2) + struct.pack("<IQ", 0, 0)
    header = b"GGUF" + struct.pack("<IQQ", version, 1, len(kvs)) + b"".join(kvs) + tensor
    padding = -len(header) % 32
    return header + b"\0" * padding + b"\1" * tensor_data


def test_a_handmade_file_reads_as_written(tmp_path):
    path = tmp_path / "m.gguf"
    path.write_bytes(handmade(32))
    meta = read_meta(path)
    assert meta.version == 3
    assert meta.values == {"general.architecture": "llama", "llama.block_count": 7,
                           "tokenizer.ggml.add_space_prefix": False}
    assert meta.arrays == {"tokenizer.ggml.tokens": 3, "tokenizer.ggml.token_type": 2}
    (t,) = meta.tensors
    assert (t.name, t.shape, t.ggml_type, t.offset) == ("w", (4, 2), 0, 0)


def test_big_endian_files_are_read_too(tmp_path):
    raw = b"GGUF" + struct.pack(">IQQ", 3, 0, 1) + struct.pack(">Q", 4) + b"name" + struct.pack(">IQ", 8, 2) + b"ab"
    (tmp_path / "be.gguf").write_bytes(raw)
    meta = read_meta(tmp_path / "be.gguf")
    assert meta.values == {"name": "ab"} and meta.tensors == ()


@pytest.mark.parametrize("damage, reason", [
    (lambda b: b[:20], "shorter than a GGUF header"),
    (lambda b: b"GGUG" + b[4:], "does not start with the GGUF magic"),
    (lambda b: b[:4] + struct.pack("<I", 1) + b[8:], "GGUF version 1 is not one sftlab reads"),
    (lambda b: b[:60], "ends inside its header"),
    (lambda b: b[:-1], "the file ends before the data of tensor 'w' (1 bytes short): it was cut short"),
    (lambda b: b[:24] + struct.pack("<Q", 10**12) + b[32:], "runs past the end of the file"),
])
def test_a_damaged_file_is_one_reason(tmp_path, damage, reason):
    path = tmp_path / "bad.gguf"
    path.write_bytes(damage(handmade(32)))
    with pytest.raises(GgufError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        read_meta(path)


def real_files() -> list[Path]:
    """The default model and the two smallest of llama.cpp's vocabularies (`make vocab`): GGUFReader takes seconds
    on each; all 19 of llama.cpp's files read the same (checked by hand, docs/layout.md)."""
    from sftlab.models import resolve_model

    small = [ROOT / "build" / "vocab" / f"ggml-vocab-{n}.gguf" for n in ("llama-spm", "phi-3")]
    return [resolve_model(None).path, *(p for p in small if p.is_file())]


def test_real_files_read_as_gguf_reads_them():
    from gguf import GGUFReader

    for path in real_files():
        meta, reader = read_meta(path), GGUFReader(str(path))
        arrays = {k: len(f.data) for k, f in reader.fields.items() if f.types and f.types[0].name == "ARRAY"}
        scalars = {k: f.contents() for k, f in reader.fields.items()
                   if not k.startswith("GGUF.") and k not in arrays}
        assert meta.values == scalars, path.name
        assert meta.arrays == arrays, path.name
        assert [(t.name, t.shape, t.ggml_type, t.offset) for t in meta.tensors] == [
            (t.name, tuple(int(d) for d in t.shape), int(t.tensor_type), int(t.data_offset) - reader.data_offset)
            for t in reader.tensors], path.name


def nested(depth: int) -> bytes:
    """A GGUF with no tensors and one key, 'deep': an array holding one array holding one array … `depth` arrays in
    all, the innermost an empty u32 array."""
    value = struct.pack("<I", 9) + struct.pack("<IQ", 9, 1) * (depth - 1) + struct.pack("<IQ", 4, 0)
    return b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + s("deep") + value


def test_arrays_nested_past_the_bound_are_one_reason_not_a_recursion_error(tmp_path):
    # (20,000 deep ran into Python's recursion limit here, and in gguf's GGUFReader behind train, chat and export)
    path = tmp_path / "deep.gguf"
    path.write_bytes(nested(20_000))
    with pytest.raises(GgufError) as e:
        read_meta(path)
    assert str(e.value) == "the array 'deep' nests arrays more than 8 deep"
    path.write_bytes(nested(8))
    assert read_meta(path).arrays == {"deep": 1}


def test_require_model_names_the_file_of_deeply_nested_arrays(tmp_path):
    from sftlab.errors import SftlabError
    from sftlab.models import require_model

    path = tmp_path / "deep.gguf"
    path.write_bytes(nested(20_000))
    with pytest.raises(SftlabError) as e:
        require_model(str(path))
    assert str(e.value) == (f"{path}: cannot be read as a GGUF file (the array 'deep' nests arrays more than 8 deep)")


@pytest.mark.parametrize("array, reason", [
    (struct.pack("<IIQ", 9, 9, 2**62), "the array 'k' claims 4611686018427387904 items, more than the 12 bytes left"),
    (struct.pack("<IIQ", 9, 8, 2**62), "the array 'k' claims 4611686018427387904 items, more than the 12 bytes left"),
    (struct.pack("<IIQ", 9, 10, 2**61), "the array 'k' claims 2305843009213693952 items, more than the 12 bytes left"),
])
def test_an_array_longer_than_the_file_is_refused_at_once(tmp_path, array, reason):
    path = tmp_path / "long.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + s("k") + array + b"\0" * 12)
    with pytest.raises(GgufError) as e:
        read_meta(path)
    assert str(e.value) == reason


def test_a_huge_key_is_shown_cut_short(tmp_path):
    key = "k" * 10_000
    path = tmp_path / "key.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + s(key) + struct.pack("<IIQ", 9, 99, 0))
    with pytest.raises(GgufError) as e:
        read_meta(path)
    assert str(e.value) == "the array '" + "k" * 60 + "…' holds values of the unknown type 99"


def test_a_fifo_is_refused_without_opening_it(tmp_path):
    import os

    path = tmp_path / "pipe.gguf"
    os.mkfifo(path)
    with pytest.raises(GgufError) as e:
        read_meta(path)  # (an open would wait for a writer forever)
    assert str(e.value) == "it is not a regular file"
