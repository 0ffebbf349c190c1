"""The quantisations `sftlab export` writes, one record each and in one list: the command line's --quant, the
UI's choices and the GGUF writer read it (no torch or gguf here: the command line reads it before its arguments)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Quant:
    name: str
    file_type: str  # gguf's LlamaFileType (and llama.cpp's LLAMA_FTYPE_) name
    # The GGML type the matrices are written in by sftlab; None: a K-quant, made by llama.cpp's own quantiser from
    # an F32 file (llama-cpp-python).
    tensor_type: str | None


QUANTS: dict[str, Quant] = {q.name: q for q in (
    Quant("q8_0", "MOSTLY_Q8_0", "Q8_0"),  # the default
    Quant("f16", "MOSTLY_F16", "F16"),
    Quant("bf16", "MOSTLY_BF16", "BF16"),
    Quant("f32", "ALL_F32", "F32"),
    Quant("q4_0", "MOSTLY_Q4_0", "Q4_0"),
    Quant("q4_k_m", "MOSTLY_Q4_K_M", None),
    Quant("q5_k_m", "MOSTLY_Q5_K_M", None),
    Quant("q6_k", "MOSTLY_Q6_K", None),
)}
QUANT_NAMES = tuple(QUANTS)
DEFAULT_QUANT = QUANT_NAMES[0]
K_QUANTS = tuple(q.name for q in QUANTS.values() if q.tensor_type is None)
