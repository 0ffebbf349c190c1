"""The Data page's work in the UI's own process, through the functions the command line uses: the preview
(`inspect --html`'s token view and the data report of the first rows) and the data check (`data check --html`'s
report), with the last few tokenizers kept loaded."""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

# The preview reads the first rows only, so it answers in seconds on any file.
PREVIEW_ROWS = 1000
PREVIEW_EXAMPLES = 5

_tokenizers: "OrderedDict[str, Any]" = OrderedDict()
_tokenizer_lock = threading.Lock()


def tokenizer_for(model: str | None) -> Any:
    """The tokenizer of a model, the last few kept (a preview after a preview loads nothing again)."""
    from sftlab.models import load_tokenizer

    key = model or ""
    with _tokenizer_lock:
        if key in _tokenizers:
            _tokenizers.move_to_end(key)
            return _tokenizers[key]
    tokenizer = load_tokenizer(model)
    with _tokenizer_lock:
        _tokenizers[key] = tokenizer
        while len(_tokenizers) > 4:
            _tokenizers.popitem(last=False)
    return tokenizer


def preview(config: Any) -> dict[str, Any]:
    """POST /api/preview: the first examples with their trained tokens coloured (inspect --html's page) and the data
    report of the first PREVIEW_ROWS rows (every rejected and dropped row with its reason), without training.
    Rows a run with `on_error: raise` would stop at are listed as rejected here, so all of them show."""
    from sftlab.data.inspect import render_html
    from sftlab.data.pipeline import Source, build_examples

    tokenizer = tokenizer_for(config.model)
    limit = min(config.limit or PREVIEW_ROWS, PREVIEW_ROWS)
    # (the first rows as they are: no mixture's total, no cleaning; build_examples never packs)
    settings = config.data.model_copy(update={"on_error": "skip", "limit": limit, "mixture_examples": None,
                                              "clean": None})
    examples, report = build_examples([Source.of(d) for d in config.datasets], tokenizer,
                                      settings, say_system=False, parts=True)
    summary = report.summary(limit)
    return {
        "html": render_html(examples[:PREVIEW_EXAMPLES], tokenizer, summary=summary),
        "summary": {str(k): v for k, v in summary.items()},
        "report": report.to_dict(),
        "rows_previewed": limit,
        "yaml": config.to_yaml(),
    }


def data_check(path: Path, model: str | None, template: str | None, fmt: str | None, max_length: int,
               clusters: bool = False) -> dict[str, Any]:
    """The Data page: `sftlab data check`'s report (its HTML, trained-token view included) and its counts."""
    from sftlab.config import DataSettings
    from sftlab.quality.html import render_report
    from sftlab.quality.run import check_data

    settings = DataSettings(template=template or None, max_length=max_length)
    result = check_data([str(path)], settings, fmt=fmt or None, tokenizer=tokenizer_for(model), clusters=clusters)
    data = result.to_dict()
    return {"html": render_report(result), "rows": data["rows"], "findings": data["findings"]}
