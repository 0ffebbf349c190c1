"""The parent of one `sftlab` child the UI started: `python -m sftlab.ui.runner --state S --log L [--queue RUNS] --
ARGS…`.

It runs `sftlab ARGS` with its output appended to the log file (never an undrained pipe), passes SIGTERM/SIGINT on
to it (Stop: the run finishes its step, saves a checkpoint and exits 143), records how it ended in the state file
(exit code, and the one sentence a failure ended with), and with --queue starts the next queued run. It lives in a
session of its own, so the run outlives the UI that started it, and a restarted UI finds it by its pid.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sftlab import jsonsafe


def outcome(code: int) -> str:
    if code == 0:
        return "finished"
    if code in (130, 143, -signal.SIGTERM, -signal.SIGINT):
        return "stopped"
    return "failed"


def main(argv: list[str] | None = None) -> int:
    from sftlab.ui.manager import failure_reason, start_next, update_state

    parser = argparse.ArgumentParser(prog="sftlab.ui.runner")
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--queue", type=Path)
    parser.add_argument("args", nargs=argparse.REMAINDER)
    opts = parser.parse_args(argv)
    args = opts.args[1:] if opts.args[:1] == ["--"] else opts.args
    received: list[int] = []
    child: subprocess.Popen | None = None

    def forward(signum: int, frame: Any) -> None:
        received.append(signum)
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    opts.log.parent.mkdir(parents=True, exist_ok=True)
    try:  # the log is a file of ours: never written through a link planted there, never waited on as a FIFO
        fd = jsonsafe.open_own(opts.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    except OSError as e:
        update_state(opts.state, status="failed", exit_code=None, ended=time.time(),
                     error=f"its log {opts.log} cannot be written ({getattr(e, 'strerror', None) or e}); remove what is there")
        return 2
    with open(fd, "ab") as log:
        log.write(f"$ sftlab {' '.join(args)}\n".encode())
        log.flush()
        child = subprocess.Popen([sys.executable, "-m", "sftlab", *args], stdin=subprocess.DEVNULL, stdout=log,
                                 stderr=subprocess.STDOUT)
        update_state(opts.state, pid=child.pid)
        if received:  # a Stop that came before the child existed
            child.send_signal(received[0])
        while True:
            try:
                code = child.wait()
                break
            except InterruptedError:
                continue
        log.write(f"[exit code {code}]\n".encode())
    status = outcome(code)
    update_state(opts.state, status=status, exit_code=code, ended=time.time(),
                 error=None if status == "finished" else failure_reason(opts.log))
    if opts.queue is not None:
        start_next(opts.queue, Path.cwd())
    return 0


if __name__ == "__main__":
    sys.exit(main())
