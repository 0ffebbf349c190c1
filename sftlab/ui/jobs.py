"""A run's eval and export as child processes (`sftlab eval`, `sftlab export` under the runner, into the run's
folder), started one at a time per run, and read back from the folder: state, results, the log's tail."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any, Iterator

from sftlab.errors import SftlabError
from sftlab.export.quants import QUANT_NAMES
from sftlab.files import inside
from sftlab.runs.folder import (EVAL_DIR, EVAL_LOG, EVAL_RESPONSES, EVAL_STATE, EVAL_SUMMARY, EXPORT_DIR, EXPORT_LOG,
                                EXPORT_STATE, Unreadable, read_jsonl)
from sftlab.ui.manager import (MAX_NESTING, Damaged, load_state, locked, log_tail, nested_deeper, read_json,
                               runner_alive, runner_record, shown, spawn, update_state)

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
