"""The encode cache: a run's encoded examples and data report kept in $SFTLAB_HOME/encoded under a key made of
everything that determines them, so a re-run or a resumed run reads them back instead of encoding again."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
from pathlib import Path
from typing import Any, Sequence

from sftlab.data.templates import ChatTemplate

log = logging.getLogger("sftlab")


def cache_key(sources: Sequence[Any], tokenizer: Any, template: Any, settings: dict[str, Any]) -> str:
    """sha256 of what determines a run's examples: each file's content, format, weight and mapping, the tokenizer (its
    whole definition, added tokens included, and its chat template), the template, the settings (DataSettings.cache_key()), and
    the code that encodes (a changed sftlab may encode differently)."""
    digest = hashlib.sha256()
    package = Path(__file__).resolve().parents[1]
    for code in sorted([*(package / "data").glob("*.py"), *(package / "templates").glob("*.jinja")]):
        digest.update(code.read_bytes())

    def add(value: Any) -> None:
        digest.update(json.dumps(value, sort_keys=True, default=str).encode() + b"\0")

    from sftlab.models import fingerprint

    for src in sources:
        path = Path(src.path)
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        mapping = getattr(src, "mapping", None)
        add([src.format, src.weight, fingerprint(files), mapping.to_dict() if mapping else None])
    digest.update(tokenizer.backend_tokenizer.to_str().encode())
    add([getattr(tokenizer, "chat_template", None), str(tokenizer.bos_token), str(tokenizer.eos_token)])
    source = template.source if isinstance(template, ChatTemplate) else template
    if isinstance(source, str) and source.endswith(".jinja") and Path(source).is_file():
        source = Path(source).read_text(encoding="utf-8")
    add([source, settings])
    return digest.hexdigest()[:32]


def read_cached(path: Path) -> Any:
    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError):
        return None


def write_cached(path: Path, value: Any) -> None:
    """Written whole or not at all (a temporary file renamed into place)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
        with open(tmp, "wb") as f:
            pickle.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    except OSError as e:
        log.warning("could not keep the encoded examples in %s (%s); the next run encodes again", path.parent, e)
