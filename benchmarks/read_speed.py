"""Reading at scale: 200,000 tiny alpaca rows (`{"instruction": "q17", "output": "a17"}`) read and converted to
Conversations (rows/s), then `sftlab inspect` of the whole file (every row encoded and shown, output to
/dev/null) with the Qwen2 tokenizer of the test fixtures and the chatml template.

Each figure is given in wall seconds and in CPU seconds (user + system, the command's child processes included):
on a shared machine the wall time says more about the other tenants than about sftlab.

    python benchmarks/read_speed.py [--rows 200000] [--no-inspect]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QWEN = ROOT / "tests" / "fixtures" / "tokenizers" / "qwen2"


def cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--no-inspect", action="store_true", help="Only the read + convert figure.")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from sftlab.data.load import load_conversations

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tiny.jsonl"
        with path.open("w", encoding="utf-8") as f:
            for i in range(args.rows):
                f.write(json.dumps({"instruction": f"q{i}", "output": f"a{i}"}) + "\n")
        cpu, wall = cpu_seconds(resource.RUSAGE_SELF), time.perf_counter()
        loaded = load_conversations(path)
        wall, cpu = time.perf_counter() - wall, cpu_seconds(resource.RUSAGE_SELF) - cpu
        assert len(loaded.conversations) == args.rows
        print(f"read + convert: {args.rows:,} rows in {wall:.2f} s wall ({args.rows / wall:,.0f} rows/s), "
              f"{cpu:.2f} s CPU ({args.rows / cpu:,.0f} rows/s)", flush=True)
        if args.no_inspect:
            return
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        command = [sys.executable, "-m", "sftlab", "inspect", "--data", str(path), "--model", str(QWEN),
                   "--template", "chatml"]
        cpu, wall = cpu_seconds(resource.RUSAGE_CHILDREN), time.perf_counter()
        r = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wall, cpu = time.perf_counter() - wall, cpu_seconds(resource.RUSAGE_CHILDREN) - cpu
        if r.returncode != 0:
            sys.exit(f"inspect failed: {r.stderr[-2000:]}")
        summary = " ".join(r.stderr.strip().splitlines()[-2:])
        print(f"sftlab inspect: {wall:.1f} s wall, {cpu:.1f} s CPU ({args.rows / cpu:,.0f} rows/s of CPU) — {summary}")


if __name__ == "__main__":
    main()
