"""Run folders as the UI shows them, and the queue that starts `sftlab train` in them one after another.

What the UI adds to a run folder: ui_state.json (queued / running / finished / failed / stopped, the process ids,
the exit code and its reason) and train.log (what `sftlab train` printed). Everything else is what `sftlab train`
writes, read through sftlab.runs (its folder's readers and its listing), so a run started from the command line
shows up alike: whether a run is running is its run lock (sftlab.runs.lock, held by the training process itself),
and a signal only ever goes to the process that holds it and is still the one it recorded. A pid read from
ui_state.json is never trusted alone. The queue lives in those files too: whoever sees no run running starts the
oldest queued one (the UI when a run is queued, the runner of a run when it ends), under a lock, so runs go on one
after another with the UI closed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator


from sftlab import jsonsafe
from sftlab.defaults import DEFAULT_MODEL
from sftlab.errors import SftlabError, first_line, one_line
from sftlab.files import child, require_output_dir, run_name_problem, write_text
from sftlab.runs import lock as runlock
from sftlab.runs.folder import (CONFIG, DATA_REPORT, METRICS, QUEUE_LOCK, TRAIN_LOG, UI_STATE, Unreadable, entries,
                                is_run, read_config, read_metrics, run_folders)
from sftlab.runs.listing import Run, read_any, read_run

STATE = UI_STATE
LOG = TRAIN_LOG
STATUSES = ("queued", "running", "finished", "failed", "stopped")
STEP_LINE = re.compile(r"step (\d+)/(\d+)")


class RunError(SftlabError):
    """A request the run's state does not allow (stop a finished run …): HTTP 409."""


class RunNameProblem(SftlabError):
    """A run name that cannot name a new run folder (its rule, or taken): HTTP 400 beside the name field."""


class RunNotFound(SftlabError):
    """No run of that id under the runs folder: HTTP 404."""


# ---- reading what sftlab wrote, as a hostile user may have left it ------------------------------------------
# A run folder's files are read back by the UI, but anyone who can write the folder can plant anything under
# their names: a link (followed, it reads a file elsewhere), a FIFO (opened, it waits for a writer forever), a
# folder, a file of gigabytes, a state file naming someone else's process. So every file the UI reads back is
# opened without following a link and without blocking, taken only when it is a regular file, read up to a bound;
# and every field of a state file is checked before it is used (Damaged: a sentence, never an exception).

STATE_BYTES = 1024**2  # ui_state.json & co. are a few hundred bytes
JSON_BYTES = 64 * 1024**2  # a data report, an eval summary, an export report
PID_MAX = 2**22  # Linux's largest pid_max
MAX_NESTING = 100  # lists and mappings in what the UI reads back (a data report nests 4 deep)
MAX_VALUES = 1_000_000  # values in a config.yaml as written out (a config sftlab writes holds some hundreds)


class Damaged(ValueError):
    """A file sftlab writes that is not what sftlab writes; its message names the file and says why."""


def shown(path: Path | str) -> str:
    """A path (or a run id) as a sentence names it: relative to the working folder when inside it, characters that
    would break the sentence's line (newlines, escapes, U+2028) as their escapes."""
    try:
        text = Path(path).relative_to(Path.cwd()).as_posix() if Path(path).is_absolute() else str(path)
    except (ValueError, OSError):
        text = str(path)
    return one_line(text)


def not_regular(path: Path) -> str | None:
    """What is at `path` when it is no regular file ("a folder", "a FIFO", "a symbolic link" …: lstat only,
    nothing opened), None when it is one or nothing is there."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    except OSError as e:
        return f"unreadable ({e.strerror or e})"
    return None if stat.S_ISREG(mode) else jsonsafe.kind(mode)


@contextlib.contextmanager
def open_regular(path: Path) -> Iterator[Any]:
    """`path` opened for reading in binary if it is a regular file (never through a link, never waiting on a FIFO),
    None when there is none; Damaged when something else is there. (jsonsafe.read_text reads a file from its
    start; a log is read from its end.)"""
    try:
        fd = jsonsafe.open_own(path, os.O_RDONLY)
    except (FileNotFoundError, NotADirectoryError):
        yield None
        return
    except OSError as e:
        what = e.kind if isinstance(e, jsonsafe.NotAFile) else not_regular(path) or f"unreadable ({e.strerror or e})"
        raise Damaged(f"{shown(path)} is {what}, not a file sftlab writes; remove it") from None
    with os.fdopen(fd, "rb") as f:
        yield f


def read_json(path: Path, max_bytes: int = JSON_BYTES) -> Any:
    """The JSON sftlab wrote at `path` (jsonsafe.load: a regular file, of bounded size; nested at most
    MAX_NESTING deep), None when there is none; Damaged saying why it cannot be read."""
    try:
        data = jsonsafe.load(path, max_bytes)
    except FileNotFoundError:
        return None
    except jsonsafe.NotAFile as e:
        raise Damaged(f"{shown(path)} {e.what}; remove it") from None
    except OSError as e:
        raise Damaged(f"{shown(path)} cannot be read ({e.strerror or e})") from None
    except ValueError as e:
        raise Damaged(f"{shown(path)}: not JSON ({first_line(e)[:100]}); remove it") from None
    return bounded(data, path)


# ---- ui_state.json (and an eval's, an export's state) ---------------------------------------------------------

def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and 0 <= v < 1e15


def _count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**63


def _text(v: Any) -> bool:
    return v is None or (isinstance(v, str) and len(v) <= 100_000)


# Every field sftlab ui writes into a state file, and what its value must be (None: not recorded yet).
STATE_FIELDS: dict[str, tuple[Any, str]] = {
    "status": (lambda v: v in STATUSES, f"one of {', '.join(STATUSES)}"),
    "runner_pid": (lambda v: v is None or (_count(v) and 0 < v <= PID_MAX), "a process id"),
    "pid": (lambda v: v is None or (_count(v) and 0 < v <= PID_MAX), "a process id"),
    "runner_start": (lambda v: v is None or _count(v), "a process start time"),
    "exit_code": (lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool) and -256 < v < 256),
                  "an exit code"),
    **{k: (lambda v: v is None or _number(v), "a time") for k in ("started", "queued_at", "ended", "stop_requested")},
    "start_step": (lambda v: v is None or _count(v), "a step"),
    **{k: (lambda v: isinstance(v, bool), "true or false") for k in ("resume", "verify")},
    **{k: (_text, "text") for k in ("error", "data", "baseline", "out", "format", "quant")},
}


def load_state(path: Path) -> tuple[dict[str, Any], str | None]:
    """A state file and None; ({}, None) when there is none; ({}, why) when it is not one sftlab ui wrote (a
    field of the wrong type, a pid no process can have, a link, a FIFO …): such a file is not ours, and nothing
    in it is used."""
    try:
        data = read_json(path, STATE_BYTES)
    except Damaged as e:
        return {}, str(e)
    if data is None:
        return {}, None
    if not isinstance(data, dict):
        return {}, f"{shown(path)}: {type(data).__name__}, not the object sftlab ui writes; remove it"
    for key, value in data.items():
        check, what = STATE_FIELDS.get(key, (lambda v: True, ""))
        if not check(value):
            got = type(value).__name__ if isinstance(value, (list, dict)) else json.dumps(value)[:60]
            return {}, f"{shown(path)}: `{shown(key[:40])}` must be {what}, got {got}; sftlab ui did not write this, remove it"
    return data, None


def read_state(path: Path) -> dict[str, Any]:
    """A state file, {} when there is none or it is not ours (load_state)."""
    return load_state(path)[0]


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock on the file `path` (created) while the block runs; RunError when something other than
    a regular file is there: a link is never followed (O_NOFOLLOW), a FIFO never waited on (O_NONBLOCK)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = jsonsafe.open_own(path, os.O_RDWR | os.O_CREAT)
    except OSError as e:
        kind = e.kind if isinstance(e, jsonsafe.NotAFile) else not_regular(path)
        raise RunError(f"{shown(path)} is {kind}, not a lock file sftlab ui made; remove it" if kind
                       else f"{shown(path)}: cannot make a lock file there ({e.strerror or e})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def update_state(path: Path, **changes: Any) -> dict[str, Any]:
    """Merge `changes` into a state file, under a lock: the UI and a runner write the same file."""
    with locked(path.with_name(f".{path.name}.lock")):
        state = {**read_state(path), **changes}
        write_text(path, json.dumps(state, indent=1) + "\n", "ui state")
    return state


def runner_record(pid: int) -> dict[str, Any]:
    """What a state file records of a runner just spawned, for runner_alive to know it again: its pid and its start
    time."""
    return {"runner_pid": pid, "runner_start": runlock.process_start(pid)}


def runner_alive(state_file: Path, state: dict[str, Any] | None = None) -> int | None:
    """The pid of the runner (sftlab.ui.runner) started for `state_file`, while it lives: the process of the
    recorded pid must have the recorded start time and a command line naming that state file. None otherwise
    (a state file copied from elsewhere names someone else's process)."""
    state = read_state(state_file) if state is None else state
    pid, start = state.get("runner_pid"), state.get("runner_start")
    if not isinstance(pid, int) or not isinstance(start, int) or runlock.process_start(pid) != start:
        return None
    cmdline = runlock.process_cmdline(pid) or []
    if "sftlab.ui.runner" not in cmdline or str(state_file) not in cmdline:
        return None
    return pid


# ---- what the UI shows of a run -----------------------------------------------------------------------------

def log_tail(path: Path, lines: int = 40, max_bytes: int = 64_000) -> str:
    """The last `lines` lines of a log ("" when there is none; why, when something other than a file is there)."""
    try:
        with open_regular(path) as f:
            if f is None:
                return ""
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - max_bytes))
            data = f.read(max_bytes)
    except Damaged as e:
        return str(e)
    except OSError:
        return ""
    # (rich pads its log lines to the width it was given)
    return "\n".join(line.rstrip() for line in data.decode("utf-8", errors="replace").splitlines()[-lines:])


def run_log(folder: Path, lines: int = 40) -> str:
    """What the UI shows as a run's log: train.log's tail for a run the UI started; for a run started from the
    command line (no train.log: what it printed went to that terminal) a sentence saying so, then metrics.jsonl's
    last records as log lines; never an empty box."""
    if os.path.lexists(folder / LOG):
        return log_tail(folder / LOG, lines)
    if os.path.lexists(folder / STATE):  # (queued by the UI, not started yet)
        return "queued: the log starts when the run does"
    try:
        records = _metrics(folder)
    except Damaged as e:
        return str(e)
    head = ("This run was started from the command line (sftlab train): what it printed went to that terminal, "
            f"not to a file here. Its logged steps (metrics.jsonl, {len(records)}):")
    return "\n".join([head, *(_step_line(r) for r in records[-(lines - 1):])] if records else [head, "none yet"])


def _step_line(record: dict[str, Any]) -> str:
    """A metrics.jsonl record as a log line: `step 5: loss 0.4, learning_rate 0.0001`."""
    def text(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        if v is None:  # (a NaN or infinite figure, as sftlab.runs reads it)
            return "-"
        return one_line(str(v))[:60]  # (a forged record's text: one line, short)

    return f"step {text(record.get('step'))}: " + ", ".join(f"{text(k)} {text(v)}" for k, v in record.items()
                                                           if k != "step")


def failure_reason(log: Path) -> str | None:
    """The sentence a failed `sftlab` command ended with: its `error:` line, else the log's last line (a bug's
    traceback ends with the exception)."""
    lines = log_tail(log, 400).splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("$ sftlab")]  # this attempt's lines only
    tail = [line.strip() for line in lines[starts[-1] + 1 if starts else 0:]
            if line.strip() and not line.startswith("[exit code")]
    for line in reversed(tail):
        for mark in ("error:", "stopped:"):
            if line.startswith(mark):
                return line[len(mark):].strip()
    return tail[-1] if tail else None


def status_of(folder: Path, run: Run) -> tuple[str, str | None]:
    """(status, reason) of a run folder: one of STATUSES, and for failed/stopped runs why. `running` is what the
    run lock says (`run` read it), whoever started the run; or, for a run the UI started, that its runner is up
    and its `sftlab train` has not taken the lock yet."""
    if run.status == "running":
        return "running", None
    state = read_state(folder / STATE)
    recorded = state.get("status")
    if recorded == "queued":
        return "queued", None
    if recorded == "running":
        if runner_alive(folder / STATE, state):
            return "running", None
        if run.status == "finished":
            return "finished", None
        return "failed", "the training process ended without recording how (killed, or the machine restarted)"
    if recorded in ("finished", "failed", "stopped"):
        return recorded, state.get("error")
    if run.status == "finished":
        return "finished", None
    how = "Resume continues it from its last checkpoint" if run.checkpoints else "Resume starts it again"
    return "stopped", f"unfinished (started outside the UI, not running now); {how}"


def _eta(folder: Path, run: Run, state: dict[str, Any], total: int) -> dict[str, float]:
    """{"eta_seconds": …} from the pace since training began: the run lock's record says when and from which
    step (any run, however started); a UI run's state file, when the record does not say yet."""
    live = runlock.holder(folder)
    progress = live.progress if live else {}
    since, step = progress.get("train_started"), progress.get("start_step")
    if not isinstance(since, (int, float)) or not isinstance(step, int):
        since, step = state.get("started"), int(state.get("start_step") or 0)
    done = (run.steps or 0) - step
    if not since or done <= 0:
        return {}
    return {"eta_seconds": (time.time() - since) / done * max(0, total - (run.steps or 0))}


def _total_steps(folder: Path, run: Run) -> int | None:
    if run.total_steps is not None:
        return run.total_steps
    found = STEP_LINE.findall(log_tail(folder / LOG, 400))
    return int(found[-1][1]) if found else None


def _too_big(value: Any, limit: int, most: int | None = None) -> str | None:
    """What makes `value` too big to serve: nesting lists and dicts more than `limit` deep (an alias of YAML that
    holds itself nests forever: serving it would exhaust Python's recursion), or more than `most` values as they
    are written out (YAML aliases sharing one list again and again: a few lines that write out as billions);
    None when neither. Iterative, and it stops at the first of them."""
    stack, seen = [(value, 0)], 0
    while stack:
        item, depth = stack.pop()
        seen += 1
        if most is not None and seen > most:
            return f"more than {most:,} values once written out"
        if isinstance(item, (list, dict)):
            if depth >= limit:
                return f"nested more than {limit} levels deep"
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
    return None


def nested_deeper(value: Any, limit: int) -> bool:
    """Whether `value` nests lists and dicts more than `limit` deep: it is refused when read (see _too_big)."""
    return _too_big(value, limit) is not None


def bounded(value: Any, path: Path, most: int | None = None) -> Any:
    """`value` read from `path`, or Damaged when it nests deeper than MAX_NESTING or holds more than `most` values
    (sftlab writes nothing so deep nor so large; JSON has no aliases, so its size is its file's, which is bounded)."""
    problem = _too_big(value, MAX_NESTING, most)
    if problem:
        raise Damaged(f"{shown(path)}: {problem}, which sftlab never writes; remove it")
    return value


def _config(folder: Path) -> dict[str, Any]:
    """config.yaml as sftlab.runs.folder reads it (a regular file, YAML, a mapping), nested at most MAX_NESTING
    deep and at most MAX_VALUES values once its aliases are written out; Damaged saying why not."""
    config = read_config(folder)
    if isinstance(config, Unreadable):
        raise Damaged(str(config))
    return bounded(config, folder / CONFIG, MAX_VALUES)


def _metrics(folder: Path) -> list[dict[str, Any]]:
    """metrics.jsonl's records as sftlab.runs.folder reads them (NaN and infinities as None), nested at most
    MAX_NESTING deep; Damaged saying why not."""
    metrics = read_metrics(folder)
    if isinstance(metrics, Unreadable):
        raise Damaged(str(metrics))
    return bounded(metrics.records, folder / METRICS)


def _last_step(folder: Path) -> int:
    """The last step metrics.jsonl logged (0 when it logged none or cannot be read): where a resumed run starts."""
    metrics = read_metrics(folder)
    return 0 if isinstance(metrics, Unreadable) else max((r["step"] for r in metrics.records), default=0)


# What this module opens in a run folder itself (sftlab.runs checks the files it reads, and says a run is
# `damaged`): each must be a regular file or absent, never followed through a link or opened as a FIFO.
UI_RECORDS = (LOG, STATE, DATA_REPORT, runlock.LOCK)


def planted(folder: Path) -> str | None:
    """Why a run folder holds what sftlab never writes under the name of a file the UI opens (a link, a FIFO, a
    folder), or a state file that is not ours (load_state); None when it is as sftlab leaves it."""
    for name in UI_RECORDS:
        try:
            problem = jsonsafe.not_a_file(folder / name)
        except OSError as e:
            return f"{shown(folder / name)} cannot be read ({e.strerror or e})"
        if problem:
            return f"{shown(folder / name)} {problem}; remove it"
    return load_state(folder / STATE)[1]


class Runs:
    """The run folders under `runs_dir`; `work_dir` is where `sftlab train` runs (relative paths resolve there)."""

    def __init__(self, runs_dir: str | Path, work_dir: str | Path):
        self.runs_dir = require_output_dir(Path(runs_dir), "--runs-dir").resolve()
        self.work_dir = Path(work_dir).resolve()

    # -- reading --

    def run_id(self, folder: Path) -> str:
        return folder.resolve().relative_to(self.runs_dir).as_posix() or "."

    def folder(self, run_id: str) -> Path:
        """The folder of a run id (its path under runs_dir), or a SftlabError: never a folder outside runs_dir."""
        if not run_id or "\0" in run_id or ".." in Path(run_id).parts or Path(run_id).is_absolute() or "\\" in run_id:
            raise RunNotFound(f"run {run_id[:80]!r}: not a run under {self.runs_dir}")
        folder = (self.runs_dir / run_id).resolve()
        if not folder.is_relative_to(self.runs_dir) or not is_run(folder):
            raise RunNotFound(f"run {run_id[:80]!r}: no such run under {self.runs_dir}")
        return folder

    def listing(self) -> list[dict[str, Any]]:
        """Every run under the runs folder (sftlab.runs.folder.run_folders: never inside a run, never through a
        link); one whose files cannot be read (a config.yaml that says `stages: 5`, a forged ui_state.json, a FIFO
        planted as a record, a folder that may not be read) is listed with status "unreadable" and why, the others
        as they are."""
        out = []
        for folder in run_folders(self.runs_dir):
            try:
                out.append(self._guarded(folder, lambda: self._summary(self._read(folder))))
            except RunError as e:
                out.append({"id": self.run_id(folder), "status": "unreadable", "error": str(e), "model": None,
                            "method": None, "steps": None, "total_steps": None, "last_loss": None, "started": None,
                            "queued_at": None, "started_by": None, "checkpoints": [], "bytes": None,
                            "output_dir": str(folder)})
        return out

    def read(self, run_id: str) -> Run:
        return self._read(self.folder(run_id))

    def _guarded(self, folder: Path, read: Any) -> Any:
        """`read()`, or RunError saying why the run's files cannot be read: never an exception of a run's
        malformed, unreadable or planted files escaping into a page as a 500."""
        try:
            return read()
        except RunError:
            raise
        except Damaged as e:  # (its sentence names the file and says why)
            raise RunError(f"run {shown(self.run_id(folder))}: {e}") from None
        except Exception as e:  # noqa: BLE001 - whatever a hand-edited or damaged run folder holds
            raise RunError(f"run {shown(self.run_id(folder))}: its files cannot be read ({first_line(e, with_type=True)[:200]})") from None

    def _read(self, folder: Path) -> Run:
        """The run in `folder`, or RunError saying why its files cannot be read: a folder that cannot be listed, a
        file the UI opens itself that is not one (a FIFO there would block the page forever), then what
        sftlab.runs reads."""
        listed = entries(folder)
        problem = str(listed) if isinstance(listed, Unreadable) else planted(folder)
        if problem:
            raise RunError(f"run {shown(self.run_id(folder))}: {problem}")
        run = self._guarded(folder, lambda: read_any(folder))
        if run.status == "damaged":  # (sftlab.runs: a file of the run's that cannot be read as sftlab wrote it)
            raise RunError(f"run {shown(self.run_id(folder))}: {run.problem}")
        return run

    def _summary(self, run: Run) -> dict[str, Any]:
        folder = run.path
        status, reason = status_of(folder, run)
        config = _config(folder)
        state = read_state(folder / STATE)
        started = state.get("started") or (folder / CONFIG).stat().st_mtime
        total = _total_steps(folder, run)
        out = {
            "id": self.run_id(folder), "status": status, "model": config.get("model") or DEFAULT_MODEL,
            "method": run.method, "steps": run.steps, "total_steps": total, "last_loss": run.final_loss,
            "started": started if status != "queued" else None, "queued_at": state.get("queued_at"),
            "started_by": "ui" if state else "cli", "checkpoints": run.checkpoints, "bytes": run.size,
            "output_dir": str(folder),
        }
        if reason:
            out["error"] = reason
        if run.pid is not None:
            out["pid"] = run.pid
        if status == "running" and total and run.steps:
            out.update(_eta(folder, run, state, total))
        return out

    def detail(self, run_id: str) -> dict[str, Any]:
        """GET /api/runs/{id}: the listing's fields, the config, every metrics record, the data report, the log's
        tail."""
        run = self.read(run_id)

        def read() -> dict[str, Any]:
            out = self._summary(run)
            out["config"] = _config(run.path)
            out["metrics"] = _metrics(run.path)
            out["data_report"] = read_json(run.path / DATA_REPORT)
            out["log"] = run_log(run.path)
            out["stages"] = [s.to_dict() for s in run.stages]
            return out

        return self._guarded(run.path, read)

    def metrics(self, run_id: str) -> list[dict[str, Any]]:
        folder = self.folder(run_id)
        return self._guarded(folder, lambda: _metrics(folder))

    # -- changing --

    def create(self, config: Any, name: str | None = None) -> dict[str, Any]:
        """A new run folder with the config (a validated TrainConfig whose output_dir is the folder), queued. The
        folder is claimed by creating it (os.mkdir is atomic): of any number of starts with one name, one wins."""
        queue = not_regular(self.runs_dir / QUEUE_LOCK)  # (said before a folder is made, not after it is queued)
        if queue:
            raise RunError(f"{shown(self.runs_dir / QUEUE_LOCK)} is {queue}, not a lock file sftlab ui made; remove it")
        if name:
            problem = run_name_problem(name)
            if problem:
                raise RunNameProblem(f"run name {name[:80]!r} {problem}")
            try:
                folder = child(self.runs_dir, name, "run name")
                folder.mkdir()
            except FileExistsError:
                raise RunNameProblem(f"run name {name!r}: {folder} exists already; choose another name") from None
            except SftlabError as e:
                raise RunNameProblem(str(e)) from None
        else:
            folder = self._fresh_name()
        config = config.model_copy(update={"output_dir": str(folder)})
        write_text(folder / CONFIG, config.to_yaml(), CONFIG)
        update_state(folder / STATE, status="queued", queued_at=time.time(), resume=False)
        self.start_next()
        return {"id": self.run_id(folder), "status": status_of(folder, read_run(folder))[0]}

    def _fresh_name(self) -> Path:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for k in range(1000):
            folder = self.runs_dir / (f"run-{stamp}" + (f"-{k}" if k else ""))
            try:
                folder.mkdir()
                return folder
            except FileExistsError:
                continue
        raise RunError("no free run name")

    def stop(self, run_id: str) -> dict[str, Any]:
        """A queued run leaves the queue; a running one (however started) gets SIGTERM: it finishes its step,
        saves a checkpoint and exits (143), and a UI run's runner records it as stopped. The signal goes only to
        the process holding the run's lock that is still the one it recorded (sftlab.runlock.signal_holder), or,
        before its `sftlab train` has taken the lock, to the run's own runner; to no pid read from a file alone."""
        run = self.read(run_id)
        status, _ = status_of(run.path, run)
        state_file = run.path / STATE
        if status == "queued":
            update_state(state_file, status="stopped", error="taken out of the queue before it started")
            return {"id": run_id, "status": "stopped"}
        if status != "running":
            raise RunError(f"run {shown(run_id)} is not running ({status}); only a queued or running run can be stopped")
        if state_file.is_file():
            update_state(state_file, stop_requested=time.time())
        try:
            signalled = runlock.signal_holder(run.path, signal.SIGTERM)
        except (OverflowError, ValueError, TypeError, OSError):  # a train_process.json naming no possible process
            signalled = None
        if signalled is None:
            # before its `sftlab train` holds the lock: the run's own runner, which passes the signal on to it
            runner = runner_alive(state_file) if not runlock.is_running(run.path) else None
            if runner is None or not runlock.signal_if(runner, lambda: runner_alive(state_file) == runner,
                                                       signal.SIGTERM):
                raise RunError(f"run {shown(run_id)} is not running (no process of sftlab's training holds it), so "
                               "there is nothing to stop")
        return {"id": run_id, "status": "stopping"}

    def resume(self, run_id: str) -> dict[str, Any]:
        """A stopped or failed run back into the queue; it starts as `sftlab train RUN/config.yaml --set resume=true`
        (from its newest checkpoint, or from the beginning when it has none)."""
        run = self.read(run_id)
        status, _ = status_of(run.path, run)
        if status == "running":
            who = f" (pid {run.pid})" if run.pid else ""
            raise RunError(f"run {shown(run_id)} is running{who}; stop it before resuming it, or a second training would "
                           "write into the same folder")
        if status not in ("stopped", "failed"):
            raise RunError(f"run {shown(run_id)} is {status}; only a stopped or failed run can be resumed")
        update_state(run.path / STATE, status="queued", queued_at=time.time(), resume=True, error=None,
                     exit_code=None)
        self.start_next()
        return {"id": run_id, "status": status_of(run.path, run)[0]}

    def start_next(self) -> Path | None:
        return start_next(self.runs_dir, self.work_dir)


# ---- the queue ---------------------------------------------------------------------------------------------

def _ui_runs(runs_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    """The runs the UI queued or started, with their states; one with planted files or a state that is not ours
    takes no part in the queue (its lock may be a FIFO, its state may name anyone)."""
    return [(p.parent, read_state(p)) for p in sorted(runs_dir.glob(f"*/{STATE}")) if not planted(p.parent)]


def train_command(folder: Path, resume: bool) -> list[str]:
    """The `sftlab` arguments of a run: its own config.yaml, into its own folder (a config written elsewhere may
    name another output_dir), resumed when asked."""
    args = ["train", str(folder / CONFIG), "--set", f"output_dir={json.dumps(str(folder))}"]
    return args + (["--set", "resume=true"] if resume else [])


def start_next(runs_dir: Path, work_dir: Path) -> Path | None:
    """Start the oldest queued run when none is running; the run folder started, or None."""
    with locked(runs_dir / QUEUE_LOCK):
        states = _ui_runs(runs_dir)
        if any(s.get("status") == "running" and (runner_alive(f / STATE, s) or runlock.is_running(f))
               for f, s in states):
            return None
        queued = sorted((s.get("queued_at") or 0, str(f), f, s) for f, s in states if s.get("status") == "queued")
        if not queued:
            return None
        _, _, folder, state = queued[0]
        step = _last_step(folder) if state.get("resume") else 0
        pid = spawn(folder / STATE, folder / LOG, train_command(folder, bool(state.get("resume"))), work_dir,
                    queue=runs_dir)
        update_state(folder / STATE, status="running", **runner_record(pid), started=time.time(), start_step=step, error=None, exit_code=None, stop_requested=None)
        return folder


def spawn(state: Path, log: Path, args: list[str], cwd: Path, queue: Path | None = None) -> int:
    """Start `sftlab ARGS` under its runner, in a session of its own (closing the UI or its terminal does not stop
    it); the runner's pid. No shell: the arguments go to the process as they are."""
    command = [sys.executable, "-m", "sftlab.ui.runner", "--state", str(state), "--log", str(log)]
    command += ["--queue", str(queue)] if queue is not None else []
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "400"}  # (rich wraps long lines at 80 in a file)
    process = subprocess.Popen([*command, "--", *args], cwd=cwd, env=env, start_new_session=True,
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return process.pid
