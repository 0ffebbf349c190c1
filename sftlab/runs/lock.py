"""Whether a run folder is being trained, and by which process: a lock the training process itself holds.

Whoever starts `sftlab train` (the command line, the UI, a script calling sftlab.train, torchrun), the process
that trains takes an exclusive flock on RUN/.train.lock for as long as it runs, and writes RUN/train_process.json
beside it: its pid, its start time (clock ticks since boot, from /proc/PID/stat: a pid reused by another process
has another one) and its command line. The kernel drops the lock when that process ends in any way, SIGKILL
included, so a lock that nobody holds means nothing trains there, whatever train_process.json still says.

`is_running(folder)` asks the kernel; `holder(folder)` adds who holds it; `signal_holder` sends a signal only to a
process that is still the one recorded (same pid, start time and command line), through a pidfd so the pid cannot
be reused between the check and the signal. A pid read from a file alone is never trusted.

Who holds it: a plain run's process; a staged run's one process, for the whole run (the lock is on the staged
run's own folder); with `--nproc`, the `sftlab train --nproc` process that starts torchrun (its ranks see the lock
held by an ancestor and go on); under a torchrun started by hand, rank 0.
No torch here: `sftlab runs` and the UI read it at once.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import math
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from sftlab import jsonsafe
from sftlab.errors import SftlabError
from sftlab.runs.folder import LOCK, PROCESS_RECORD as RECORD
# A reader tests the lock by taking it shared for an instant; a starting run retries for this long before it
# concludes that a training process (not a reader) holds it.
ACQUIRE_SECONDS = 2.0
PID_LIMIT = 2 ** 22  # Linux's largest pid_max: a larger "pid" names no process
EPOCH = 946684800.0  # 2000-01-01: a recorded time before it, or more than a day ahead, is not one a run wrote

_held: dict[Path, "Holder"] = {}  # folders this process holds (a staged run's stages train inside the one lock)


@dataclass
class Holder:
    """The process training a run folder, as it recorded itself (pid None: it holds the lock and has not written
    train_process.json yet)."""

    folder: Path
    pid: int | None = None
    start: int | None = None  # /proc/PID/stat starttime
    cmdline: list[str] = field(default_factory=list)
    started: float | None = None  # time.time() when it took the lock
    progress: dict[str, Any] = field(default_factory=dict)  # max_steps, start_step, train_started, stage
    problem: str | None = None  # why its train_process.json is not believed (forged or damaged): not ours

    def is_live(self) -> bool:
        """Whether the recorded process is still the one alive under that pid (start time and command line) and
        is the one holding the lock (the kernel's list of locks says so): a record copied or written by someone
        else names a process that is not ours."""
        return (self.pid is not None and self.start is not None and process_start(self.pid) == self.start
                and process_cmdline(self.pid) == self.cmdline and holds_lock(self.pid, self.folder / LOCK))

    def describe(self) -> str:
        if self.problem:
            return f"a process whose train_process.json is damaged ({self.problem})"
        return f"pid {self.pid}" if self.pid is not None else "a process that has not recorded itself yet"


# ---- processes -----------------------------------------------------------------------------------------------

def _stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat after the command name (which may hold spaces and parentheses): state, ppid, …"""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(errors="replace")
    except OSError:
        return None
    return text.rsplit(")", 1)[-1].split()


def process_start(pid: int) -> int | None:
    """When `pid` started (clock ticks after boot), or None when there is no such live process (a zombie has
    ended)."""
    fields = _stat_fields(pid) if isinstance(pid, int) and pid > 0 else None
    if not fields or len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])  # field 22 of stat(5), counting the pid and the name


def process_cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode("utf-8", errors="replace") for part in raw.split(b"\0")[:-1]]


def holds_lock(pid: int, path: Path) -> bool:
    """Whether process `pid` took the flock on `path` (/proc/locks names the locking process and the file's
    inode); where /proc/locks cannot be read, whether `pid` has that file open."""
    try:
        ino = os.stat(path, follow_symlinks=False).st_ino
    except OSError:
        return False
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return _has_open(pid, path)
    for line in lines:
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 14353 fe:00:2146390 0 EOF" (a waiter's line has "->" after the number)
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[3] == "WRITE":
            if fields[4] == str(pid) and fields[5].rsplit(":", 1)[-1] == str(ino):
                return True
    return False


def _has_open(pid: int, path: Path) -> bool:
    target = os.stat(path, follow_symlinks=False)
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            st = os.stat(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
            return True
    return False


def _parent(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[1]) if fields and len(fields) > 1 else None


def _ancestors(pid: int) -> Iterator[int]:
    seen = 0
    while pid and pid > 1 and seen < 256:
        yield pid
        pid = _parent(pid) or 0
        seen += 1


# ---- reading ---------------------------------------------------------------------------------------------------

def lock_problem(folder: str | Path) -> str | None:
    """Why `folder`'s lock path cannot be sftlab's run lock (a FIFO, a link, a folder, a device: found with lstat,
    never opened, since opening a FIFO waits for a writer forever), or None."""
    try:
        problem = jsonsafe.not_a_file(Path(folder) / LOCK)
        return f"{LOCK} {problem}" if problem else None
    except OSError as e:
        return f"{LOCK} cannot be read ({e.strerror or e})"


def is_running(folder: str | Path) -> bool:
    """Whether a process holds the run lock of `folder` (asked of the kernel: a dead holder holds nothing). A lock
    path that is not a regular file is held by nobody (lock_problem says what it is)."""
    path = Path(folder) / LOCK
    if lock_problem(folder):
        return False
    try:
        fd = jsonsafe.open_own(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as e:
        return e.errno in (errno.EWOULDBLOCK, errno.EAGAIN)
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2 ** 63


def _time(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            and EPOCH <= v <= time.time() + 86400)


def _strings(v: Any) -> bool:
    return isinstance(v, list) and len(v) <= 65536 and all(isinstance(c, str) for c in v)


# Each field of train_process.json and what it must be; one that is not makes the whole record not ours.
_FIELDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "pid": (lambda v: _count(v) and 0 < v < PID_LIMIT, "a process id"),
    "start": (_count, "a start time"),
    "cmdline": (_strings, "a list of strings"),
    "started": (_time, "a time"),
}
_PROGRESS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "max_steps": (_count, "a count"), "start_step": (_count, "a count"), "train_started": (_time, "a time"),
    "stage": (lambda v: isinstance(v, (str, int)) and not isinstance(v, bool), "a stage"),
    "output_dir": (lambda v: isinstance(v, str), "a string"),
}


def record_problem(data: Any) -> str | None:
    """What makes a train_process.json's content not one sftlab wrote (field by field), or None."""
    if not isinstance(data, dict):
        return f"{RECORD} is not a mapping"
    for key, (ok, what) in _FIELDS.items():
        if not ok(data.get(key)):
            return f"{RECORD}: {key} is not {what}"
    progress = data.get("progress", {})
    if not isinstance(progress, dict):
        return f"{RECORD}: progress is not a mapping"
    for key, value in progress.items():
        check = _PROGRESS.get(key)
        if check is not None and not check[0](value):
            return f"{RECORD}: progress.{key} is not {check[1]}"
    return None


def holder(folder: str | Path) -> Holder | None:
    """Who trains `folder` now, or None when nothing does (no lock, or a lock nobody holds). A record that is
    missing (the holder has not written it yet) or not believed (`problem`: forged, damaged, not a file) gives
    a holder without a pid: nothing is ever signalled on its word."""
    folder = Path(folder)
    if not is_running(folder):
        return None
    try:
        data = jsonsafe.load(folder / RECORD, max_bytes=4 * 1024 * 1024)
    except FileNotFoundError:
        return Holder(folder)
    except OSError as e:
        return Holder(folder, problem=str(e) if isinstance(e, jsonsafe.NotAFile)
                      else f"{RECORD} cannot be read ({e.strerror or e})")
    except ValueError as e:
        return Holder(folder, problem=f"{RECORD} is not JSON ({e})")
    problem = record_problem(data)
    if problem:
        return Holder(folder, problem=problem)
    progress = {k: v for k, v in data.get("progress", {}).items() if k in _PROGRESS}
    return Holder(folder, data["pid"], data["start"], data["cmdline"], data["started"], progress)


def signal_if(pid: int, still_it: Callable[[], bool], signum: int) -> bool:
    """Send `signum` to `pid` if `still_it()` holds once the process is pinned by a pidfd (the pid cannot be
    reused between the check and the signal); whether it was sent."""
    if not (isinstance(pid, int) and 0 < pid < PID_LIMIT):
        return False  # names no process
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return False  # ended since
    try:
        if not still_it():
            return False
        signal.pidfd_send_signal(pidfd, signum)
        return True
    except ProcessLookupError:
        return False
    finally:
        os.close(pidfd)


def signal_holder(folder: str | Path, signum: int = signal.SIGTERM) -> Holder | None:
    """Send `signum` to the process training `folder`, if it is still the process recorded there; the holder
    signalled, or None (nothing signalled: nothing trains there, or the lock's holder is not the recorded
    process)."""
    found = holder(folder)
    if found is None or found.pid is None:
        return None
    return found if signal_if(found.pid, found.is_live, signum) else None


# ---- holding -------------------------------------------------------------------------------------------------

def _rank() -> int:
    try:
        return int(os.environ.get("RANK") or os.environ.get("LOCAL_RANK") or 0)
    except ValueError:
        return 0


def _open_lock(folder: Path, what: str) -> int:
    from sftlab.files import require_output_dir

    try:
        folder.mkdir(parents=True, exist_ok=True)
        _require_lock_file(folder, what)
        return jsonsafe.open_own(folder / LOCK, os.O_RDWR | os.O_CREAT)
    except OSError as e:
        require_output_dir(folder, what)  # the one sentence for a folder that cannot be written
        raise SftlabError(f"{what} {folder}: cannot open its run lock {LOCK} ({e.strerror or e})") from None


def _require_lock_file(folder: Path, what: str) -> None:
    problem = lock_problem(folder)
    if problem:
        raise SftlabError(f"{what} {folder}: its run lock {problem}; remove it")


def _refusal(folder: Path, what: str) -> SftlabError:
    found = holder(folder)
    who = found.describe() if found else "another process"
    since = f" (since {time.strftime('%H:%M:%S', time.localtime(found.started))})" if found and found.started else ""
    return SftlabError(f"{what} {folder} is being trained by {who}{since}; wait for it to end or stop it, or "
                       "choose another output_dir")


def _held_for_me(folder: Path) -> Holder | None:
    """The holder of `folder`'s lock when it is this process or an ancestor of it (a `--nproc` parent)."""
    found = holder(folder)
    if found is not None and found.pid is not None and found.is_live() and found.pid in _ancestors(os.getpid()):
        return found
    return None


def require_free(folder: str | Path, what: str = "output_dir") -> None:
    """The refusal `hold` would give, said before any slow work (the command line checks this before it loads
    the training libraries); the lock itself is taken by `hold`."""
    folder = Path(folder).absolute()
    if folder not in _held and _rank() == 0:
        _require_lock_file(folder, what)
        if is_running(folder) and _held_for_me(folder) is None:
            raise _refusal(folder, what)


@contextlib.contextmanager
def hold(folder: str | Path, what: str = "output_dir") -> Iterator[Holder | None]:
    """Hold the run lock of `folder` while the block runs (creating the folder), or refuse with one sentence
    naming the folder and the pid that holds it, having changed nothing in the folder. Within a process that (or
    whose ancestor) holds it already, and on a torchrun rank other than 0, the block runs under that lock."""
    folder = Path(folder).absolute()
    if folder in _held:
        yield _held[folder]
        return
    found = _held_for_me(folder)
    if found is not None:
        _held[folder] = found  # a `--nproc` parent holds it for its ranks (rank 0 notes the progress in its record)
        try:
            yield found
        finally:
            _held.pop(folder, None)
        return
    if _rank() != 0:
        yield None  # rank 0 holds it for a torchrun started by hand
        return
    fd = _open_lock(folder, what)
    try:
        deadline = time.monotonic() + ACQUIRE_SECONDS
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
                if time.monotonic() > deadline:
                    raise _refusal(folder, what) from None
                time.sleep(0.05)
        me = Holder(folder, os.getpid(), process_start(os.getpid()), process_cmdline(os.getpid()) or [], time.time())
        _write(me)
        _held[folder] = me
        try:
            yield me
        finally:
            del _held[folder]
            with contextlib.suppress(OSError):
                (folder / RECORD).unlink()
    finally:
        os.close(fd)  # (releases the lock)


def _write(me: Holder) -> None:
    from sftlab.files import write_text

    write_text(me.folder / RECORD, jsonsafe.dumps({"pid": me.pid, "start": me.start, "cmdline": me.cmdline,
                                                   "started": me.started, "progress": me.progress}) + "\n", RECORD)


def note_progress(**progress: Any) -> None:
    """Add what the running training knows now (max_steps, start_step, train_started, stage) to the record of
    the lock this process holds; nothing when it holds none (a rank under its parent's lock)."""
    for me in list(_held.values()):
        me.progress.update(progress)
        with contextlib.suppress(SftlabError, OSError):
            _write(me)
