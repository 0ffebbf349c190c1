"""Helper for test_runlock and test_ui: holds a run folder's lock as a training process does, prints `held`, and
waits; `--progress MAX_STEPS SECONDS_AGO` notes the progress a trainer notes at its first step; SIGTERM ends it
with 143 as `sftlab train` ends on a Stop."""

import signal
import sys
import time

from sftlab.runlock import hold, note_progress


def main() -> None:
    folder = sys.argv[1]
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    with hold(folder):
        if sys.argv[2:3] == ["--progress"]:
            note_progress(max_steps=int(sys.argv[3]), start_step=0, train_started=time.time() - float(sys.argv[4]),
                          output_dir=folder)
        print("held", flush=True)
        time.sleep(600)


if __name__ == "__main__":
    main()
