"""`sftlab export`: a model sftlab trained or loads, written where llama.cpp, Ollama, LM Studio (GGUF) or vLLM, TGI
and `from_pretrained` (safetensors) run it, then checked against the model it came from.

Everything is written into a temporary folder beside --out and moved in only when written and verified, so a
refusal, a failed check or an interrupt leaves nothing half-written."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from sftlab.errors import SftlabError
from sftlab.export.arch import Architecture, check_architecture
from sftlab.export.result import REPORT, ExportResult, verdict
from sftlab.export.gguf_file import check_quant, llama_cpp_available, write_gguf
from sftlab.export.quants import K_QUANTS
from sftlab.export.source import load_source, model_config, model_task
from sftlab.files import require_apart, require_output_dir
from sftlab.training.merge import model_reads

log = logging.getLogger("sftlab")

FORMATS = ("gguf", "safetensors")
def export_model(model: str, out: str | Path, fmt: str = "gguf", quant: str = "q8_0", verify: bool = True,
                 max_new_tokens: int = 128) -> ExportResult:
    """Export `model` into the folder `out`: one .gguf file (with a Modelfile) or a safetensors model folder, and
    export_report.json; verified unless `verify` is False."""
    if fmt not in FORMATS:
        raise SftlabError(f"--format must be gguf or safetensors, got '{fmt}'")
    out = Path(out)
    if out.is_file():
        raise SftlabError(f"--out {out}: a file of that name exists; give a folder for the export")
    if fmt == "gguf":
        check_quant(quant)
    # --out apart from the model and writable, said before anything loads (a GGUF model is converted to read it)
    require_apart(out, "--out", model_reads(model))
    require_output_dir(out, "--out", keep=False)
    config = model_config(model)  # (refuses a prompt-tuning adapter before anything is loaded)
    task = model_task(model, config)
    if task and fmt == "gguf":
        raise SftlabError(f"{model}: a {task} head model has no GGUF form (llama.cpp runs no sequence-classification "
                          "head, so the file would be a plain language model without it); export it with "
                          "--format safetensors")
    arch = check_architecture(config, str(model)) if fmt == "gguf" else None
    stem = f"{_slug(out, model)}-{quant}" if fmt == "gguf" else None
    planned = [REPORT] + ([f"{stem}.gguf", "Modelfile"] if fmt == "gguf" else ["config.json"])
    clash = [n for n in planned if (out / n).exists()]
    if clash:
        raise SftlabError(f"--out {out}: {clash[0]} exists already; export into a new folder (or remove the old export)")

    started = time.time()
    source = load_source(model, task)
    if fmt == "safetensors":
        from sftlab.export.safetensors import export_safetensors

        return export_safetensors(source, out, verify=verify, started=started)
    return _export_gguf(source, arch, out, stem, quant, verify, max_new_tokens, started)


def _export_gguf(source: Any, arch: Architecture, out: Path, stem: str, quant: str, verify: bool, max_new_tokens: int,
                 started: float) -> ExportResult:
    from sftlab.export.modelfile import modelfile
    from sftlab.export.vocab import build_vocab
    from sftlab.files import write_text

    vocab = build_vocab(source.tokenizer, source.rows, source.end_of_turn_id, source.chat)
    template = source.chat.source if source.chat is not None else None
    tok = source.tokenizer
    report: dict[str, Any] = {
        "format": "gguf", "quant": quant, "source": source.name, "architecture": arch.name,
        "merged_adapter": source.merged_adapter, "template": source.chat.name if source.chat else None,
        "end_of_turn": source.end_of_turn, "eos_token_id": vocab.special.get("eos"),
        "eot_token_id": vocab.special.get("eot"), "tokenizer_eos": tok.eos_token,
        "stop_ids": source.stop_ids, "stop_tokens": tok.convert_ids_to_tokens(source.stop_ids),
        "bos_token_id": vocab.special.get("bos"), "add_bos_token": vocab.add_bos, "add_eos_token": vocab.add_eos,
        "tokenizer_model": vocab.model, "pre_tokenizer": vocab.pre, "vocabulary": len(vocab.tokens),
        "add_space_prefix": vocab.add_space_prefix, "padded_rows": vocab.padded_rows,
        "prompts": [c[-1]["content"] for c in _conversations()],
    }
    from sftlab.files import atomic_folder

    # (the Modelfile first: a value it cannot quote is refused before the GGUF is written)
    modelfile_text, report["modelfile_family"] = modelfile(f"{stem}.gguf", source, vocab)
    with atomic_folder(out, "--out") as tmp:
        gguf_path = tmp / f"{stem}.gguf"
        log.info("writing %s (%s, %s)", gguf_path.name, arch.name, quant)
        fallbacks = write_gguf(gguf_path, arch, source.model, vocab, template, quant, source.name)
        from sftlab.export.verify import k_fallbacks, read_back

        back = read_back(gguf_path, arch, source, vocab, template)
        report["file"] = gguf_path.name
        report["file_size"] = gguf_path.stat().st_size
        report["tensors"] = back["tensors"]
        report["tensors_by_type"] = back["tensors_by_type"]
        report["tensor_fallbacks"] = k_fallbacks(back["types"]) if quant in K_QUANTS else fallbacks
        report["verification"] = _verify(gguf_path, arch, source, vocab, quant, back["context_length"],
                                         max_new_tokens) \
            if verify else {"skipped": "--no-verify"}
        write_text(tmp / "Modelfile", modelfile_text)
        report["verdict"] = verdict(report)
        report["seconds"] = round(time.time() - started, 1)
        write_text(tmp / REPORT, json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return ExportResult(out, [out / f"{stem}.gguf", out / "Modelfile", out / REPORT], report)


def _verify(path: Path, arch: Architecture, source: Any, vocab: Any, quant: str, context: int,
            max_new_tokens: int) -> dict[str, Any]:
    from sftlab.export.verify import llama_cpp_check, reference_answers, transformers_check
    from sftlab.inference.generate import Generator

    exact = quant in ("f32", "f16")  # (bf16 and the integer quants change answers; their agreement is reported)
    generator = Generator(source.model, source.tokenizer, source.chat) if source.chat is not None else None
    convs = _conversations()
    if generator is not None:
        prompts = [generator.prompt_ids(c) for c in convs]
    else:
        prompts = [source.tokenizer.encode(c[-1]["content"]) for c in convs]
    stop_ids = source.stop_ids
    pad = source.tokenizer.pad_token_id if source.tokenizer.pad_token_id is not None else stop_ids[0]
    if generator is None:
        from types import SimpleNamespace

        generator = SimpleNamespace(model=source.model, kwargs=lambda **o: {"eos_token_id": stop_ids,
                                                                            "pad_token_id": pad, **o})
    log.info("verifying: sftlab's greedy answers to %d prompts", len(prompts))
    expected = reference_answers(generator, prompts, max_new_tokens)
    result: dict[str, Any] = {}
    log.info("verifying: transformers reads %s back", path.name)
    result["transformers"] = transformers_check(path, arch, context, prompts, expected, exact, max_new_tokens,
                                                stop_ids, pad)
    if llama_cpp_available():
        log.info("verifying: llama.cpp tokenizes, renders and answers")
        result["llama_cpp"] = llama_cpp_check(path, source, vocab, generator, prompts, expected, exact, max_new_tokens)
    else:
        result["llama_cpp_skipped"] = "llama-cpp-python is not installed (make gguf)"
    return result


def _conversations() -> list[list[dict[str, str]]]:
    from sftlab.export.verify import conversations

    return conversations()


def _slug(out: Path, model: str) -> str:
    """The GGUF's file name stem: the model folder's name (the run's name for runs/x/model)."""
    path = Path(str(model).rstrip("/"))
    name = path.parent.name if path.name in ("model", "final") and path.parent.name else path.stem
    name = "".join(c if c.isalnum() or c in "-_." else "-" for c in name).strip("-.") or "model"
    return name
