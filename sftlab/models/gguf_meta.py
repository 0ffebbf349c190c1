"""A GGUF file's metadata read straight from its header: the scalar keys, the length of each array and the tensors'
table, checked to fit inside the file.

gguf's GGUFReader builds a numpy view of every element of every array: 6 s for SmolLM2's 49k tokens, 17 s for
Qwen2's 151k tokens and merges. sftlab asks a GGUF file for a few scalars (its tokenizer's kind, whether it holds
weights) on every load, a cached tokenizer's included, so it reads them here: arrays are stepped over (a string
array's lengths read, nothing built), in well under a second for any vocabulary.

Format (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md): "GGUF", version (2 or 3), tensor count and
key/value count (u64 each), the key/value pairs, the tensor infos, then the tensor data at the next multiple of
`general.alignment` (default 32). Little-endian; a big-endian file is read as one.
"""

from __future__ import annotations

import mmap
import os
import stat
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# value types: the fixed-size ones with their struct format, then string (8) and array (9)
_FIXED = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
_VERSIONS = (2, 3)
_DEFAULT_ALIGNMENT = 32
# Arrays of arrays deeper than this are refused: llama.cpp writes none, and gguf's GGUFReader (transformers' loader
# behind train, chat and export) recurses once per level, so 20,000 levels were a RecursionError there.
MAX_ARRAY_DEPTH = 8
_SHOWN = 60  # a key or tensor name in a message, at most (a file may hold names of any length)


def _shown(name: str) -> str:
    return repr(name if len(name) <= _SHOWN else name[:_SHOWN] + "…")


class GgufError(ValueError):
    """The file is not a whole GGUF file (the reason in one phrase)."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # in GGUF's order (fastest-varying dimension first)
    ggml_type: int
    offset: int  # from the start of the data section


@dataclass(frozen=True)
class GgufMeta:
    version: int
    values: dict[str, Any]  # every scalar and string key
    arrays: dict[str, int] = field(default_factory=dict)  # every array key: its length
    tensors: tuple[TensorInfo, ...] = ()

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)


class _Cursor:
    def __init__(self, buf: mmap.mmap, order: str):
        self.buf, self.order, self.pos = buf, order, 0

    def take(self, fmt: str) -> Any:
        fmt = self.order + fmt
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.buf):
            raise GgufError(f"it ends inside its header (at byte {self.pos} of {len(self.buf)})")
        value = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return value[0] if len(value) == 1 else value

    def string(self) -> str:
        n = self.take("Q")
        if self.pos + n > len(self.buf):
            raise GgufError(f"a string of {n} bytes at byte {self.pos} runs past the end of the file")
        raw = self.buf[self.pos:self.pos + n]
        self.pos += n
        return raw.decode("utf-8", errors="replace")

    def skip_strings(self, count: int) -> None:
        buf, pos, end, fmt = self.buf, self.pos, len(self.buf), self.order + "Q"
        unpack = struct.Struct(fmt).unpack_from
        for _ in range(count):
            if pos + 8 > end:
                raise GgufError(f"a string array runs past the end of the file (at byte {pos})")
            pos += 8 + unpack(buf, pos)[0]
        if pos > end:
            raise GgufError("a string array runs past the end of the file")
        self.pos = pos

    def skip_array(self, key: str, item: int, count: int, depth: int = 1) -> None:
        if item in _FIXED:
            width = struct.calcsize("<" + _FIXED[item])  # (standard sizes, not the platform's)
        elif item in (_STRING, _ARRAY):
            width = 8 if item == _STRING else 12  # (the least an item takes: a length; a type and a length)
        else:
            raise GgufError(f"the array {_shown(key)} holds values of the unknown type {item}")
        left = len(self.buf) - self.pos
        if count * width > left:  # (said at once, before stepping through a length the file cannot hold)
            raise GgufError(f"the array {_shown(key)} claims {count} items, more than the {left} bytes left")
        if item in _FIXED:
            self.pos += count * width
        elif item == _STRING:
            self.skip_strings(count)
        else:  # arrays of arrays: each with its own type and length
            if depth >= MAX_ARRAY_DEPTH:
                raise GgufError(f"the array {_shown(key)} nests arrays more than {MAX_ARRAY_DEPTH} deep")
            for _ in range(count):
                self.skip_array(key, self.take("I"), self.take("Q"), depth + 1)

    def value(self, kind: int) -> Any:
        if kind in _FIXED:
            return self.take(_FIXED[kind])
        if kind == _STRING:
            return self.string()
        raise GgufError(f"unknown value type {kind} at byte {self.pos}")


def read_meta(path: str | Path) -> GgufMeta:
    """The metadata of the GGUF file at `path`, or GgufError (OSError where it cannot be opened)."""
    # Opened without blocking and checked on the open file (a FIFO would block a plain open, a device has no end;
    # checking the path first would leave a moment to swap it).
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise GgufError("it is not a regular file")
    with open(fd, "rb") as f:
        size = f.seek(0, 2)
        if size < 24:
            raise GgufError(f"it is {size} bytes, shorter than a GGUF header")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return _read(buf)


def _read(buf: mmap.mmap) -> GgufMeta:
    if buf[:4] != b"GGUF":
        raise GgufError("it does not start with the GGUF magic")
    order = "<"
    version = struct.unpack_from("<I", buf, 4)[0]
    if version not in _VERSIONS and struct.unpack_from(">I", buf, 4)[0] in _VERSIONS:
        order, version = ">", struct.unpack_from(">I", buf, 4)[0]
    if version not in _VERSIONS:
        raise GgufError(f"GGUF version {version} is not one sftlab reads (2 or 3)")
    cur = _Cursor(buf, order)
    cur.pos = 8
    tensor_count, kv_count = cur.take("Q"), cur.take("Q")
    values: dict[str, Any] = {}
    arrays: dict[str, int] = {}
    for _ in range(kv_count):
        key, kind = cur.string(), cur.take("I")
        if kind != _ARRAY:
            values[key] = cur.value(kind)
            continue
        item, count = cur.take("I"), cur.take("Q")
        arrays[key] = count
        cur.skip_array(key, item, count)
    tensors = []
    for _ in range(tensor_count):
        name = cur.string()
        dims = cur.take("I")
        if dims > 8:
            raise GgufError(f"tensor {_shown(name)} has {dims} dimensions")
        shape = tuple(cur.take("Q") for _ in range(dims))
        tensors.append(TensorInfo(name, shape, cur.take("I"), cur.take("Q")))
    meta = GgufMeta(version, values, arrays, tuple(tensors))
    _check_data(meta, cur.pos, len(buf))
    return meta


def _check_data(meta: GgufMeta, header_end: int, size: int) -> None:
    """Every tensor's bytes lie inside the file (a file cut short while copying is said here, not on loading)."""
    if not meta.tensors:
        return
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    alignment = meta.get("general.alignment", _DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0:
        raise GgufError(f"general.alignment is {repr(alignment)[:_SHOWN]}")
    start = -(-header_end // alignment) * alignment
    for t in meta.tensors:
        try:
            block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(t.ggml_type)]
        except (ValueError, KeyError):
            raise GgufError(f"tensor {_shown(t.name)} has the unknown type {t.ggml_type}") from None
        elements = 1
        for d in t.shape:
            elements *= d
        end = start + t.offset + elements // block * type_size
        if end > size:
            raise GgufError(f"the file ends before the data of tensor {_shown(t.name)} ({end - size} bytes short): "
                            "it was cut short")
