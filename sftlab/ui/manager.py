"""Run folders as the UI shows them, and the queue that starts `sftlab train` in them one after another.

What the UI adds to a run folder: ui_state.json (queued / running / finished / failed / stopped, the process ids,
the exit code and its reason) and train.log (what `sftlab train` printed). Everything else is what `sftlab train`
writes, read through sftlab.runs, so a run started from the command line shows up alike: whether a run is
running is its run lock (sftlab.runlock, held by the training process itself), and a signal only ever goes to
the process that holds it and is still the one it recorded. A pid read from ui_state.json is never trusted alone. The queue lives in those
files too: whoever sees no run running starts the oldest queued one (the UI when a run is queued, the runner of a
run when it ends), under a lock, so runs go on one after another with the UI closed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import yaml

from sftlab import runlock
from sftlab import runs as run_folders
from sftlab.defaults import DEFAULT_MODEL
from sftlab.errors import SftlabError, first_line
from sftlab.files import child, require_output_dir, run_name_problem, write_text

STATE = "ui_state.json"
LOG = "train.log"
QUEUE_LOCK = ".ui-queue.lock"
STATUSES = ("queued", "running", "finished", "failed", "stopped")
STEP_LINE = re.compile(r"step (\d+)/(\d+)")


class RunError(SftlabError):
    """A request the run's state does not allow (stop a finished run …): HTTP 409."""


class RunNotFound(SftlabError):
    """No run of that id under the runs folder: HTTP 404."""


# ---- ui_state.json -----------------------------------------------------------------------------------------

@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    # (O_NOFOLLOW: a link planted under the lock's name is refused, never followed to create a file elsewhere)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def read_state(path: Path) -> dict[str, Any]:
    """A state file (a run's ui_state.json, an eval's), {} when there is none or it cannot be read."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


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
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except OSError:
        return ""
    # (rich pads its log lines to the width it was given)
    return "\n".join(line.rstrip() for line in data.decode("utf-8", errors="replace").splitlines()[-lines:])


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


def status_of(folder: Path, run: run_folders.Run) -> tuple[str, str | None]:
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


def _eta(folder: Path, run: run_folders.Run, state: dict[str, Any], total: int) -> dict[str, float]:
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


def _total_steps(folder: Path, run: run_folders.Run) -> int | None:
    if run.total_steps is not None:
        return run.total_steps
    found = STEP_LINE.findall(log_tail(folder / LOG, 400))
    return int(found[-1][1]) if found else None


def _config(folder: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


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
        if not folder.is_relative_to(self.runs_dir) or not os.path.isfile(folder / "config.yaml"):
            # (os.path.isfile: a name too long for the file system is no run either, not an OSError)
            raise RunNotFound(f"run {run_id[:80]!r}: no such run under {self.runs_dir}")
        return folder

    def listing(self) -> list[dict[str, Any]]:
        """Every run under the runs folder; one whose files cannot be read (a config.yaml that says `stages: 5`,
        or cannot be read at all) is listed with status "unreadable" and why, the others as they are."""
        out = []
        for folder in run_folders._run_folders(self.runs_dir):
            try:
                out.append(self._summary(self._read(folder)))
            except RunError as e:
                out.append({"id": self.run_id(folder), "status": "unreadable", "error": str(e), "model": None,
                            "method": None, "steps": None, "total_steps": None, "last_loss": None, "started": None,
                            "queued_at": None, "started_by": None, "checkpoints": [], "bytes": None,
                            "output_dir": str(folder)})
        return out

    def read(self, run_id: str) -> run_folders.Run:
        return self._read(self.folder(run_id))

    def _read(self, folder: Path) -> run_folders.Run:
        """The run in `folder`, or RunError saying why its files cannot be read (never an exception of a run's
        malformed files escaping into a page)."""
        try:
            return run_folders.find_runs(folder)[0]
        except Exception as e:  # noqa: BLE001 - whatever a hand-edited or damaged run folder holds
            raise RunError(f"run {self.run_id(folder)}: its files cannot be read ({first_line(e, with_type=True)})") from None

    def _summary(self, run: run_folders.Run) -> dict[str, Any]:
        folder = run.path
        status, reason = status_of(folder, run)
        config = _config(folder)
        state = read_state(folder / STATE)
        started = state.get("started") or (folder / "config.yaml").stat().st_mtime
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
        out = self._summary(run)
        out["config"] = _config(run.path)
        out["metrics"] = run_folders._metrics(run.path)
        out["data_report"] = _json(run.path / "data_report.json")
        out["log"] = log_tail(run.path / LOG)
        out["stages"] = [s.to_dict() for s in run.stages]
        return out

    def metrics(self, run_id: str) -> list[dict[str, Any]]:
        return run_folders._metrics(self.folder(run_id))

    # -- changing --

    def create(self, config: Any, name: str | None = None) -> dict[str, Any]:
        """A new run folder with the config (a validated TrainConfig whose output_dir is the folder), queued. The
        folder is claimed by creating it (os.mkdir is atomic): of any number of starts with one name, one wins."""
        if name:
            problem = run_name_problem(name)
            if problem:
                raise SftlabError(f"run name {name[:80]!r} {problem}")
            folder = child(self.runs_dir, name, "run name")
            try:
                folder.mkdir()
            except FileExistsError:
                raise RunError(f"run name {name!r}: {folder} exists already; choose another name") from None
        else:
            folder = self._fresh_name()
        config = config.model_copy(update={"output_dir": str(folder)})
        write_text(folder / "config.yaml", config.to_yaml(), "config.yaml")
        update_state(folder / STATE, status="queued", queued_at=time.time(), resume=False)
        self.start_next()
        return {"id": self.run_id(folder), "status": status_of(folder, run_folders.read_run(folder))[0]}

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
            raise RunError(f"run {run_id} is not running ({status}); only a queued or running run can be stopped")
        if state_file.is_file():
            update_state(state_file, stop_requested=time.time())
        if runlock.signal_holder(run.path, signal.SIGTERM) is None:
            # before its `sftlab train` holds the lock: the run's own runner, which passes the signal on to it
            runner = runner_alive(state_file) if not runlock.is_running(run.path) else None
            if runner is None or not runlock.signal_if(runner, lambda: runner_alive(state_file) == runner,
                                                       signal.SIGTERM):
                raise RunError(f"run {run_id} is not running (no process of sftlab's training holds it), so "
                               "there is nothing to stop")
        return {"id": run_id, "status": "stopping"}

    def resume(self, run_id: str) -> dict[str, Any]:
        """A stopped or failed run back into the queue; it starts as `sftlab train RUN/config.yaml --set resume=true`
        (from its newest checkpoint, or from the beginning when it has none)."""
        run = self.read(run_id)
        status, _ = status_of(run.path, run)
        if status == "running":
            who = f" (pid {run.pid})" if run.pid else ""
            raise RunError(f"run {run_id} is running{who}; stop it before resuming it, or a second training would "
                           "write into the same folder")
        if status not in ("stopped", "failed"):
            raise RunError(f"run {run_id} is {status}; only a stopped or failed run can be resumed")
        update_state(run.path / STATE, status="queued", queued_at=time.time(), resume=True, error=None,
                     exit_code=None)
        self.start_next()
        return {"id": run_id, "status": status_of(run.path, run)[0]}

    def start_next(self) -> Path | None:
        return start_next(self.runs_dir, self.work_dir)


# ---- the queue ---------------------------------------------------------------------------------------------

def _ui_runs(runs_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    return [(p.parent, read_state(p)) for p in sorted(runs_dir.glob(f"*/{STATE}"))]


def train_command(folder: Path, resume: bool) -> list[str]:
    """The `sftlab` arguments of a run: its own config.yaml, into its own folder (a config written elsewhere may
    name another output_dir), resumed when asked."""
    args = ["train", str(folder / "config.yaml"), "--set", f"output_dir={json.dumps(str(folder))}"]
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
        step = max((r["step"] for r in run_folders._metrics(folder)), default=0) if state.get("resume") else 0
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
