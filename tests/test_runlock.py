"""sftlab.runlock: the run lock a training process holds, seen from other processes (real processes, no
training: each holder is a small Python child holding the lock the way training does)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sftlab import runlock
from sftlab.errors import SftlabError

from helpers import HOLDER

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.relative_to(folder).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def test_a_held_folder_is_running_its_holder_recorded_and_a_second_hold_refused_touching_nothing(tmp_path, hold_lock):
    folder = tmp_path / "run"
    assert not runlock.is_running(folder) and runlock.holder(folder) is None  # (no folder yet)
    child = hold_lock(folder)
    assert runlock.is_running(folder)
    found = runlock.holder(folder)
    assert found.pid == child.pid and found.is_live()
    assert found.cmdline == [sys.executable, str(HOLDER), str(folder)]
    # the start time is field 22 of /proc/PID/stat, read here independently
    assert found.start == int(Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    before = _snapshot(folder)
    with pytest.raises(SftlabError) as refused:
        with runlock.hold(folder):
            pytest.fail("a second holder ran")
    assert str(refused.value).startswith(f"output_dir {folder.absolute()} is being trained by pid {child.pid} (since ")
    assert "\n" not in str(refused.value)
    assert _snapshot(folder) == before


def test_a_holder_killed_with_sigkill_holds_nothing_and_its_stale_record_is_not_believed(tmp_path, hold_lock):
    folder = tmp_path / "run"
    child = hold_lock(folder)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert (folder / runlock.RECORD).is_file()  # left behind: no cleanup ran
    assert not runlock.is_running(folder) and runlock.holder(folder) is None
    assert runlock.signal_holder(folder) is None
    with runlock.hold(folder) as me:  # free again
        assert me.pid == os.getpid() and runlock.holder(folder).pid == os.getpid()
    assert not (folder / runlock.RECORD).exists()  # a clean end leaves no record


def test_a_record_naming_another_live_process_is_not_signalled(tmp_path, hold_lock):
    """The lock is held, but train_process.json was rewritten to name an unrelated live process (its real pid,
    start time and command line): the kernel's lock table says who holds the lock, and it is not that one."""
    folder = tmp_path / "run"
    holder = hold_lock(folder)
    decoy = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", "sftlab", "train"])
    try:
        _rewrite_and_signal(folder, holder, decoy)
    finally:
        decoy.kill()
        decoy.wait()


def _rewrite_and_signal(folder, holder, decoy):
    time.sleep(0.2)
    record = json.loads((folder / runlock.RECORD).read_text())
    record.update(pid=decoy.pid, start=runlock.process_start(decoy.pid), cmdline=runlock.process_cmdline(decoy.pid))
    (folder / runlock.RECORD).write_text(json.dumps(record))
    assert runlock.holder(folder).pid == decoy.pid and not runlock.holder(folder).is_live()
    assert runlock.signal_holder(folder, signal.SIGTERM) is None
    time.sleep(0.3)
    assert decoy.poll() is None and holder.poll() is None  # nobody was signalled


def test_signal_holder_signals_the_process_that_holds_the_lock(tmp_path, hold_lock):
    folder = tmp_path / "run"
    child = hold_lock(folder)
    assert runlock.signal_holder(folder, signal.SIGTERM).pid == child.pid
    assert child.wait(timeout=30) == 143  # (its SIGTERM handler's exit)
    assert not runlock.is_running(folder)


def test_the_children_of_a_holder_run_under_its_lock_and_a_stranger_is_refused(tmp_path, hold_lock):
    """As `sftlab train --nproc` holds the lock for the torchrun ranks it starts: a descendant's hold() goes on
    under the ancestor's lock; an unrelated process's is refused."""
    folder = tmp_path / "run"
    parent = """
import subprocess, sys
from sftlab.runlock import hold
with hold(sys.argv[1]):
    child = "import sys; from sftlab.runlock import hold\\nwith hold(sys.argv[1]) as h: print('child under', h.pid)"
    out = subprocess.run([sys.executable, "-c", child, sys.argv[1]], capture_output=True, text=True)
    print("held", flush=True)
    print(out.stdout.strip() or out.stderr.strip()[-300:], flush=True)
    import time; time.sleep(600)
"""
    p = hold_lock(folder, script=parent)
    assert p.stdout.readline().strip() == f"child under {p.pid}"
    stranger = subprocess.run([sys.executable, str(HOLDER), str(folder)], capture_output=True, text=True, env=ENV,
                              timeout=60)
    assert stranger.returncode != 0 and f"is being trained by pid {p.pid}" in stranger.stderr


def test_a_symlinked_lock_file_is_refused_and_never_followed(tmp_path):
    folder, outside = tmp_path / "run", tmp_path / "elsewhere"
    folder.mkdir()
    outside.write_text("keep")
    (folder / runlock.LOCK).symlink_to(outside)
    assert not runlock.is_running(folder)
    with pytest.raises(SftlabError, match="is a symbolic link"):
        with runlock.hold(folder):
            pass
    assert outside.read_text() == "keep"


def test_a_lock_path_that_is_a_folder_is_one_sentence(tmp_path):
    folder = tmp_path / "run"
    (folder / runlock.LOCK).mkdir(parents=True)
    with pytest.raises(SftlabError) as refused:
        with runlock.hold(folder):
            pass
    assert str(refused.value) == f"output_dir {folder}: its run lock .train.lock is a folder, not a file sftlab writes; remove it"


def _within(seconds, call, fifo=None):
    """call() in a thread: its result, or a failure (not a hang) when it blocks; a reader blocked on `fifo` is
    released by opening it for writing."""
    import threading

    out = {}
    worker = threading.Thread(target=lambda: out.update(result=call()), daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        if fifo is not None:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail(f"blocked for {seconds} s")
    return out.get("result")


def _refusals(folder):
    out = []
    for call in (lambda: runlock.require_free(folder), lambda: runlock.hold(folder).__enter__()):
        try:
            call()
            out.append("not refused")
        except SftlabError as e:
            out.append(str(e))
    return out


@pytest.mark.parametrize("plant, kind", [("fifo", "a FIFO"), ("folder", "a folder"), ("link", "a symbolic link")])
def test_a_lock_path_that_is_not_a_regular_file_is_refused_without_opening_it(tmp_path, plant, kind):
    """A FIFO planted as .train.lock blocked `sftlab train`, `sftlab runs` and the UI forever (opening a FIFO to
    read waits for a writer); a folder or a link is refused as well, none of them opened."""
    folder = tmp_path / "run"
    folder.mkdir()
    lock = folder / runlock.LOCK
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    {"fifo": lambda: os.mkfifo(lock), "folder": lock.mkdir, "link": lambda: lock.symlink_to(fifo)}[plant]()
    found = _within(10, lambda: [runlock.is_running(folder), runlock.holder(folder), runlock.lock_problem(folder),
                                 *_refusals(folder)], fifo=lock if plant == "fifo" else fifo)
    sentence = f"output_dir {folder}: its run lock .train.lock is {kind}, not a file sftlab writes; remove it"
    assert found == [False, None, f".train.lock is {kind}, not a file sftlab writes", sentence, sentence]


def _locked_here(folder):
    """The run lock taken through another open file of this process: held, as a training process holds it."""
    import fcntl

    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / runlock.LOCK, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


NAN, BIG = float("nan"), 1e300


@pytest.mark.parametrize("forged, why", [
    ({"started": NAN}, "started is not a time"),
    ({"started": BIG}, "started is not a time"),
    ({"started": "today"}, "started is not a time"),
    ({"pid": "123"}, "pid is not a process id"),
    ({"pid": 2 ** 70}, "pid is not a process id"),
    ({"pid": -5}, "pid is not a process id"),
    ({"pid": [1]}, "pid is not a process id"),
    ({"pid": True}, "pid is not a process id"),
    ({"start": 1.5}, "start is not a start time"),
    ({"start": -1}, "start is not a start time"),
    ({"cmdline": "sftlab train"}, "cmdline is not a list of strings"),
    ({"cmdline": [1, 2]}, "cmdline is not a list of strings"),
    ({"progress": [1]}, "progress is not a mapping"),
    ({"progress": {"max_steps": BIG}}, "progress.max_steps is not a count"),
    ({"progress": {"start_step": -3}}, "progress.start_step is not a count"),
    ({"progress": {"train_started": NAN}}, "progress.train_started is not a time"),
    ({"progress": {"output_dir": 5}}, "progress.output_dir is not a string"),
])
def test_a_forged_record_is_not_ours_never_a_traceback_never_signalled(tmp_path, forged, why):
    """train_process.json with a field of the wrong type or out of range, beside a held lock: the holder is a
    process whose record is damaged (no pid believed), the refusal is one sentence, nothing is signalled."""
    folder = tmp_path / "run"
    fd = _locked_here(folder)
    try:
        me = os.getpid()
        record = {"pid": me, "start": runlock.process_start(me), "cmdline": runlock.process_cmdline(me),
                  "started": time.time(), "progress": {}}
        (folder / runlock.RECORD).write_text(json.dumps({**record, **forged}))
        found = runlock.holder(folder)
        assert (found.pid, found.started, found.problem) == (None, None, f"train_process.json: {why}")
        assert runlock.signal_holder(folder, 0) is None
        sentence = (f"output_dir {folder} is being trained by a process whose train_process.json is damaged "
                    f"(train_process.json: {why}); wait for it to end or stop it, or choose another output_dir")
        assert _refusals(folder) == [sentence, sentence]
    finally:
        os.close(fd)


@pytest.mark.parametrize("plant, why", [
    ("fifo", "train_process.json is a FIFO, not a file sftlab writes"),
    ("folder", "train_process.json is a folder, not a file sftlab writes"),
    ("list", "train_process.json is not a mapping"),
    ("deep", "train_process.json is not JSON (nested too deeply)"),
])
def test_a_record_that_is_no_record_is_not_ours_and_never_blocks(tmp_path, plant, why):
    folder = tmp_path / "run"
    fd = _locked_here(folder)
    record = folder / runlock.RECORD
    try:
        {"fifo": lambda: os.mkfifo(record), "folder": record.mkdir, "list": lambda: record.write_text("[1, 2]"),
         "deep": lambda: record.write_text("[" * 100_000)}[plant]()
        found = _within(10, lambda: runlock.holder(folder), fifo=record if plant == "fifo" else None)
        assert (found.pid, found.problem) == (None, why)
        assert found.describe() == f"a process whose train_process.json is damaged ({why})"
    finally:
        os.close(fd)
