"""What the pages do besides training, each through the function the command line uses: the data preview
(`inspect --html`'s token view and the data report), the data check (`data check --html`'s report), chat (the one
generation helper, sftlab.inference.generate) and eval (`sftlab eval` as a child process into the run folder)."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterator

from sftlab.defaults import DEFAULT_MODEL
from sftlab.errors import SftlabError
from sftlab.export.quants import QUANT_NAMES
from sftlab.files import inside
from sftlab.runs.folder import (CHECKPOINT_PREFIX, DATA_REPORT, EVAL_DIR, EVAL_LOG, EVAL_PROBE, EVAL_RESPONSES,
                                EVAL_STATE, EVAL_SUMMARY, EXPORT_DIR, EXPORT_LOG, EXPORT_STATE, METRICS,
                                PROCESS_RECORD, REJECTS, SFTLAB_STATE, STAGE_DONE, TRAINER_STATE, UI_STATE,
                                Unreadable, read_jsonl)
from sftlab.ui.manager import (MAX_NESTING, Damaged, load_state, locked, log_tail, nested_deeper, not_regular,
                               read_json, runner_alive, runner_record, shown, spawn, update_state)

# The preview reads the first rows only, so it answers in seconds on any file.
PREVIEW_ROWS = 1000
PREVIEW_EXAMPLES = 5
DATA_FILE_SUFFIXES = (".json", ".jsonl", ".csv", ".parquet")
SKIP_FOLDERS = {".git", ".venv", "venv", "node_modules", "__pycache__", ".cache"}

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


def data_files(roots: list[Path], limit: int = 500, depth: int = 4) -> list[str]:
    """Files under the UI's folders that read as training data (reads_as_data), as paths relative to the first
    folder where they lie inside it: what the New run and Eval pages offer."""
    found: list[str] = []
    base = roots[0].resolve()

    def walk(folder: Path, level: int) -> None:
        try:
            entries = sorted(folder.iterdir())
        except OSError:
            return
        for entry in entries:
            if len(found) >= limit:
                return
            if entry.name.startswith("."):
                continue
            kind = not_regular(entry)
            if kind == "a folder":
                if level < depth and entry.name not in SKIP_FOLDERS and not os.path.isfile(entry / "config.json"):
                    walk(entry, level + 1)
            elif (kind is None and entry.suffix.lower() in DATA_FILE_SUFFIXES and entry.name not in RUN_FILES
                  and reads_as_data(entry)):
                path = entry.resolve()
                found.append(path.relative_to(base).as_posix() if path.is_relative_to(base) else str(path))

    for root in roots:
        if root.resolve() == base or not root.resolve().is_relative_to(base):
            walk(root.resolve(), 0)
    return sorted(set(found))


# Files sftlab writes into run folders, never training data: its own (sftlab.runs.folder names them) and the
# model's, the tokenizer's and an export's.
RUN_FILES = (METRICS, REJECTS, EVAL_RESPONSES, EVAL_PROBE, DATA_REPORT, EVAL_SUMMARY, TRAINER_STATE, SFTLAB_STATE,
             STAGE_DONE, PROCESS_RECORD, UI_STATE, EVAL_STATE, EXPORT_STATE,
             "config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json",
             "special_tokens_map.json", "adapter_config.json", "export_report.json", "vocab.json")
# Files larger than this are offered on their first row alone (reading a whole large file for a list costs too much).
WHOLE_READ_BYTES = 8 * 1024**2
_data_cache: dict[tuple[str, int, int], bool] = {}


def reads_as_data(path: Path) -> bool:
    """Whether sftlab's reader takes `path` as training data: its rows are objects whose keys name one of the
    formats (alpaca, sharegpt, messages, prompt-completion, text). A DeepSpeed config, a package.json or a
    tokenizer's JSON is not. Remembered by size and modification time."""
    try:
        st = path.stat()
    except OSError:
        return False
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _data_cache:
        _data_cache[key] = _first_row_format(path, st.st_size) is not None
    return _data_cache[key]


def _first_row_format(path: Path, size: int) -> str | None:
    """The format of a data file's first row, as sftlab's reader detects it, or None."""
    from sftlab.data.formats import detect_format

    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            import csv

            with open(path, encoding="utf-8-sig", newline="") as f:
                return detect_format(next(csv.reader(f), []))
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return detect_format(pq.read_schema(path).names)
        if suffix == ".jsonl" or size > WHOLE_READ_BYTES:
            with open(path, encoding="utf-8-sig") as f:
                line = next((line for line in f if line.strip()), "")
            if suffix == ".jsonl":
                row = json.loads(line)
            else:  # a large .json array: its first object, from the head of the file
                head = path.open(encoding="utf-8-sig").read(64_000).lstrip()
                row = json.JSONDecoder().raw_decode(head[1:].lstrip())[0] if head.startswith("[") else None
        else:
            from sftlab.data.load import read_rows

            rows, _ = read_rows(path)
            row = next((r for r in rows if isinstance(r, dict)), None) if isinstance(rows, list) else None
    except (OSError, ValueError, UnicodeDecodeError, SftlabError, ImportError, RecursionError):
        return None
    if not isinstance(row, dict):
        return None
    return detect_format([k for k, v in row.items() if v is not None])


def model_choices(runs: list[dict[str, Any]], roots: list[Path] | None = None) -> list[dict[str, str]]:
    """The models chat, eval, export and the New run form offer: the default model, every finished run, and the
    model folders (a config.json beside weights) and .gguf files under the UI's folders."""
    out = [{"value": DEFAULT_MODEL, "label": f"{DEFAULT_MODEL} (default)"}]
    out += [{"value": r["output_dir"], "label": f"run {r['id']} ({r['method']})"} for r in runs
            if r["status"] == "finished"]
    seen = {o["value"] for o in out}
    for root in roots or []:
        for path in _model_folders(root.resolve()):
            if str(path) not in seen and not any(str(path).startswith(s + "/") for s in seen if s.startswith("/")):
                seen.add(str(path))
                out.append({"value": str(path), "label": f"folder {path.relative_to(root.resolve()).as_posix()}"})
    return out


def _model_folders(root: Path, depth: int = 3, limit: int = 100) -> list[Path]:
    found: list[Path] = []

    def walk(folder: Path, level: int) -> None:
        try:
            entries = sorted(folder.iterdir())
        except OSError:
            return
        for entry in entries:
            if len(found) >= limit or entry.name.startswith("."):
                continue
            kind = not_regular(entry)  # (never through a link; a folder that may not be read is passed by)
            if kind == "a folder" and entry.name not in SKIP_FOLDERS:
                try:
                    model = ((entry / "config.json").is_file() and any(entry.glob("*.safetensors"))
                             or (entry / "adapter_config.json").is_file())
                except OSError:
                    continue
                if model:
                    found.append(entry)
                elif level < depth and not entry.name.startswith(CHECKPOINT_PREFIX):
                    walk(entry, level + 1)
            elif entry.suffix == ".gguf" and kind is None:
                found.append(entry)

    walk(root, 0)
    return found


# ---- preview --------------------------------------------------------------------------------------------------

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


# ---- chat -----------------------------------------------------------------------------------------------------

class ChatModels:
    """Loaded generators, the last two kept (the base and the fine-tuned run side by side); one generation per model
    at a time."""

    def __init__(self, keep: int = 2):
        self.keep = keep
        self.loaded: "OrderedDict[str, tuple[Any, threading.Lock]]" = OrderedDict()
        self.lock = threading.Lock()

    def get(self, model: str) -> tuple[Any, threading.Lock]:
        from sftlab.inference.generate import load_generator

        with self.lock:
            if model in self.loaded:
                self.loaded.move_to_end(model)
                return self.loaded[model]
            generator = load_generator(model)
            self.loaded[model] = (generator, threading.Lock())
            while len(self.loaded) > self.keep:
                self.loaded.popitem(last=False)
            return self.loaded[model]

    def stream(self, model: str, messages: list[dict[str, str]], temperature: float | None,
               max_new_tokens: int) -> Iterator[str]:
        """`temperature` None: the model's own generation_config, else greedy with the repetition guard (as chat)."""
        from sftlab.inference.generate import check_options

        check_options(max_new_tokens, temperature)
        generator, lock = self.get(model)
        ids = generator.prompt_ids(messages)
        max_new = min(max_new_tokens, max(1, generator.context - len(ids)))
        generator.check_room(len(ids), 1, "max_new_tokens")
        options: dict[str, Any] = {"max_new_tokens": max_new, **generator.sampling(temperature)}
        yield from generator.stream(ids, lock=lock, **options)


# ---- eval ------------------------------------------------------------------------------------------------------



def start_eval(run_dir: Path, work_dir: Path, data: Path, baseline: str | None, limit: int | None,
               max_new_tokens: int, judge_url: str | None, judge_model: str | None) -> dict[str, Any]:
    """`sftlab eval --model RUN --data DATA --out RUN/eval` as a child process (its log in RUN/eval/eval.log)."""
    if (judge_url is None) != (judge_model is None):
        raise SftlabError("the judge needs both its endpoint URL and its model name")
    out = run_dir / EVAL_DIR
    args = ["eval", "--model", str(run_dir), "--data", str(data), "--out", str(out),
            "--max-new-tokens", str(max_new_tokens)]
    args += ["--baseline", baseline] if baseline else []
    args += ["--limit", str(limit)] if limit else []
    args += ["--judge-url", judge_url, "--judge-model", judge_model] if judge_url and judge_model else []
    with child_start(run_dir, out, EVAL_STATE, "an eval"):
        start_child(out, EVAL_STATE, EVAL_LOG, args, work_dir, data=str(data), baseline=baseline)
    return {"status": "running"}


@contextlib.contextmanager
def child_start(run_dir: Path, root: Path, state_name: str, what: str) -> Iterator[None]:
    """Where one child command (an eval, an export) of a run starts: refused while the last one runs, the check and
    the start under one lock (two requests at once start one child, the other is told why)."""
    if root.is_symlink():
        raise SftlabError(f"{root} is a link: {what} of {run_dir.name} writes only into a real folder of the run")
    with locked(root / f".{state_name}.start"):
        if runner_alive(root / state_name):
            raise SftlabError(f"{what} of {run_dir.name} is running already")
        yield


def start_child(root: Path, state_name: str, log_name: str, args: list[str], work_dir: Path, **state: Any) -> None:
    """`sftlab ARGS` under its runner, its log in ROOT/LOG_NAME (the last one's removed) and its state file (with
    `state`) in ROOT/STATE_NAME."""
    root.mkdir(parents=True, exist_ok=True)
    (root / log_name).unlink(missing_ok=True)
    update_state(root / state_name, status="running", started=time.time(), exit_code=None, error=None, **state)
    pid = spawn(root / state_name, root / log_name, args, work_dir)
    update_state(root / state_name, **runner_record(pid))


def _jsonl(path: Path, limit: int = 500, max_bytes: int = 64 * 1024**2) -> list[dict[str, Any]]:
    """The first `limit` records of a JSONL file sftlab wrote (sftlab.runs.folder.read_jsonl of its first
    `max_bytes`); a line that is no JSON object, or one nested deeper than the UI serves, is left out."""
    found = read_jsonl(path, path.name, lambda r: not nested_deeper(r, MAX_NESTING), head=max_bytes)
    return [] if isinstance(found, Unreadable) else found.records[:limit]


def _child_state(run_dir: Path, folder: str, state_name: str) -> tuple[Path | None, dict[str, Any]]:
    """The folder of a run's eval or export (None when it leads out of the run: a planted link) and its state
    (load_state): a running child whose runner is gone failed; a state that is not ours is `unreadable`, its
    `error` saying why, and nothing else of it is used."""
    root = _ours(run_dir, run_dir / folder)
    if root is None:
        return None, {"status": "unreadable", "error": f"{shown(run_dir / folder)} leads out of the run's folder (a "
                                                       "link sftlab ui never makes); remove it"}
    state, problem = load_state(root / state_name)
    if problem:
        return root, {"status": "unreadable", "error": problem}
    if state.get("status") == "running" and not runner_alive(root / state_name, state):
        state["status"] = "failed"
    return root, state


def _ours(root: Path, path: Path) -> Path | None:
    """`path` when it lies inside `root` once links are followed (the UI's one path rule), else None."""
    try:
        return inside([root], str(path), "file")
    except SftlabError:
        return None


def read_eval(run_dir: Path) -> dict[str, Any]:
    """The eval of a run as its folder holds it: status, summary, responses (and the baseline's), the log's tail."""
    out, state = _child_state(run_dir, EVAL_DIR, EVAL_STATE)
    summary, error = None, state.get("error")
    if out is not None and state.get("status") != "unreadable":
        try:
            summary = read_json(out / EVAL_SUMMARY)
        except Damaged as e:
            error = str(e)
    return {
        "status": state.get("status") or ("finished" if summary is not None else "none"), "error": error,
        "data": state.get("data"), "summary": summary,
        "responses": _jsonl(out / EVAL_RESPONSES) if out else [],
        "baseline_responses": _jsonl(out / "baseline" / EVAL_RESPONSES) if out else [],
        "log": log_tail(out / EVAL_LOG, 30) if out else "",
    }


# ---- export --------------------------------------------------------------------------------------------

EXPORT_FORMATS = ("gguf", "safetensors")
EXPORT_QUANTS = QUANT_NAMES  # (sftlab/export/quants.py; the first is the default)
REPORT_BYTES = 4 * 1024**2  # export_report.json: figures and a few answers, some kilobytes


def start_export(run_dir: Path, work_dir: Path, fmt: str, quant: str, verify: bool) -> dict[str, Any]:
    """`sftlab export --model RUN --out RUN/export/FORMAT-QUANT` as a child process (its log in RUN/export/)."""
    if fmt not in EXPORT_FORMATS:
        raise SftlabError(f"format must be one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")
    if fmt == "gguf" and quant not in EXPORT_QUANTS:
        raise SftlabError(f"quant must be one of {', '.join(EXPORT_QUANTS)}, got {quant!r}")
    root = run_dir / EXPORT_DIR
    name = fmt if fmt == "safetensors" else f"gguf-{quant}"
    with child_start(run_dir, root, EXPORT_STATE, "an export"):
        out, k = root / name, 2
        while out.exists() or out.is_symlink():  # an earlier export stays as it was
            out, k = root / f"{name}-{k}", k + 1
        args = ["export", "--model", str(run_dir), "--out", str(out), "--format", fmt]
        args += ["--quant", quant] if fmt == "gguf" else []
        args += [] if verify else ["--no-verify"]
        start_child(root, EXPORT_STATE, EXPORT_LOG, args, work_dir, out=str(out), format=fmt,
                    quant=quant if fmt == "gguf" else None, verify=verify)
    return {"status": "running", "out": str(out)}


def read_export(run_dir: Path) -> dict[str, Any]:
    """The latest export of a run as its folder holds it: status, where, export_report.json's figures as the lines
    `sftlab export` prints them, the log's tail. The folder its state names is read only when it lies inside the
    run's export/ folder: a state naming any other is not ours (`unreadable`)."""
    from sftlab.export.result import REPORT, ExportResult

    root, state = _child_state(run_dir, EXPORT_DIR, EXPORT_STATE)
    out = None
    if root is not None and state.get("out"):
        out = _ours(root, Path(state["out"]))
        if out is None or out == root:
            state = {"status": "unreadable", "error": f"{shown(run_dir / EXPORT_DIR / EXPORT_STATE)}: `out` "
                     f"{state['out'][:100]!r} is not a folder inside {shown(run_dir / EXPORT_DIR)}; sftlab ui did not "
                     "write this, remove it"}
            out = None
    report, lines = None, []
    if out is not None:
        try:
            report = read_json(out / REPORT, REPORT_BYTES)
            if report is not None and not isinstance(report, dict):
                raise Damaged(f"{shown(out / REPORT)}: {type(report).__name__}, not the object sftlab export writes; "
                              "remove it")
            if report is not None:
                lines = ExportResult(out, sorted([*out.glob("*.gguf"), *out.glob("*.safetensors")]),
                                     report).summary_lines()
        except Damaged as e:
            state, report = {**state, "error": str(e)}, None
        except (OSError, ValueError, KeyError, TypeError, AttributeError, ArithmeticError, IndexError):
            lines = []  # a report this sftlab cannot word (another version's): its figures alone
    return {"status": state.get("status") or "none", "error": state.get("error"),
            "out": state.get("out") if out else None, "format": state.get("format"), "quant": state.get("quant"),
            "report": report, "lines": lines, "log": log_tail(root / EXPORT_LOG, 30) if root else ""}
