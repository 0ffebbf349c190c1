"""Write a GGUF file with the `gguf` package: metadata, vocabulary and tensors, each tensor in the type the quant
asks for (norms, biases and position embeddings stay F32, as llama.cpp's converter keeps them). K-quants come from
llama.cpp's own quantiser (llama-cpp-python), run on an F32 file written first."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from sftlab.errors import SftlabError
from sftlab.export.arch import Architecture, gguf_tensors
from sftlab.export.quants import K_QUANTS, QUANTS
from sftlab.export.vocab import GgufVocab



def check_quant(quant: str) -> None:
    """The quant is one sftlab writes, and a K-quant only where llama.cpp's quantiser can be imported."""
    if quant not in QUANTS:
        raise SftlabError(f"--quant must be one of {', '.join(QUANTS)}, got '{quant}'")
    if quant in K_QUANTS and not llama_cpp_available():
        raise SftlabError(f"--quant {quant} needs llama.cpp's quantiser, and llama-cpp-python is not installed; "
                          "install it with `make gguf` (or pip install -e '.[gguf]' with the flags in docs/export.md), "
                          f"or choose {', '.join(q for q in QUANTS if q not in K_QUANTS)}")


def llama_cpp_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


def tensor_type(name: str, data: np.ndarray, quant: str) -> Any:
    """The GGML type a tensor is written in for `quant` (f32/f16/bf16/q8_0/q4_0), before any fallback."""
    from gguf import GGMLQuantizationType as T

    if data.ndim <= 1 or name.endswith("_norm.weight") or name.startswith("position_embd."):
        return T.F32
    if quant == "q4_0" and name in ("token_embd.weight", "output.weight"):
        return T.Q8_0  # (llama.cpp's own Q4_0 keeps the output head at a higher precision too)
    return getattr(T, QUANTS[quant].tensor_type)


def write_gguf(path: Path, arch: Architecture, model: Any, vocab: GgufVocab, chat_template: str | None, quant: str,
               name: str) -> list[dict[str, str]]:
    """Write the model as GGUF at `path`; the tensors that could not take the quant's type and the type they got."""
    if quant in K_QUANTS:
        base = path.with_name(path.name + ".f32.tmp")
        try:
            _write(base, arch, model, vocab, chat_template, "f32", name)
            quantize_k(base, path, quant)
        finally:
            base.unlink(missing_ok=True)
        return []  # (which tensors fell back is read from the file: report.tensor_fallbacks)
    return _write(path, arch, model, vocab, chat_template, quant, name)


def _write(path: Path, arch: Architecture, model: Any, vocab: GgufVocab, chat_template: str | None, quant: str,
           name: str) -> list[dict[str, str]]:
    import gguf
    from gguf import GGMLQuantizationType as T

    config = model.config.to_dict()
    writer = gguf.GGUFWriter(str(path), arch.name)
    writer.add_name(name)
    writer.add_file_type(getattr(gguf.LlamaFileType, QUANTS[quant].file_type))
    if quant in ("q8_0", "q4_0"):
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for method, value in arch.hyperparameters(config, len(vocab.tokens)):
        getattr(writer, method)(value)
    _write_vocab(writer, vocab)
    if chat_template:
        writer.add_chat_template(chat_template)
    fallbacks = []
    for tensor in gguf_tensors(arch, model):
        qtype = tensor_type(tensor.name, tensor.data, quant)
        block = gguf.GGML_QUANT_SIZES[qtype][0]
        if tensor.data.shape[-1] % block:
            fallbacks.append({"tensor": tensor.name, "wanted": qtype.name, "got": "F16"})
            qtype = T.F16
        data = gguf.quants.quantize(tensor.data.astype(np.float32), qtype)
        writer.add_tensor(tensor.name, data, raw_dtype=qtype)
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    return fallbacks


def _write_vocab(writer: Any, vocab: GgufVocab) -> None:
    writer.add_tokenizer_model(vocab.model)
    if vocab.pre:
        writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.types)
    if vocab.scores is not None:
        writer.add_token_scores(vocab.scores)
    if vocab.merges:
        writer.add_token_merges(vocab.merges)
    for kind, token_id in vocab.special.items():
        getattr(writer, f"add_{kind}_token_id")(token_id)
    writer.add_add_bos_token(vocab.add_bos)
    writer.add_add_eos_token(vocab.add_eos)
    if vocab.add_space_prefix is not None:
        writer.add_add_space_prefix(vocab.add_space_prefix)


def quantize_k(source: Path, target: Path, quant: str) -> None:
    """llama.cpp's quantiser (llama_model_quantize) from an F32 GGUF to a K-quant."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_{QUANTS[quant].file_type}")
    params.nthread = os.cpu_count() or 1
    with quiet_native():
        status = llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), params)
    if status != 0:
        target.unlink(missing_ok=True)
        raise SftlabError(f"llama.cpp's quantiser failed to make {quant} from {source.name} (status {status})")


class quiet_native:
    """llama.cpp logs to the process's stderr from C; its lines are not the user's business unless it fails."""

    def __enter__(self) -> "quiet_native":
        import sys

        sys.stderr.flush()
        self._saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        return self

    def __exit__(self, *exc: Any) -> None:
        os.dup2(self._saved, 2)
        os.close(self._saved)
