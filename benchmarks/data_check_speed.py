"""How long `sftlab data check` takes on 50,000 rows (target: under a minute on a 2-core CPU, without
embeddings).

The rows are alpaca_en_demo.json repeated with variations: every copy after the first has about a
third of its words swapped for other words of the data (so copies are not near duplicates of each
other), plus 1 % exact duplicates and 1 % near duplicates planted on purpose.

    python benchmarks/data_check_speed.py [--rows 50000] [--clusters] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "fixtures" / "data" / "alpaca_en_demo.json"


def make_rows(n: int, seed: int = 0) -> list[dict]:
    base = json.loads(DATA.read_text(encoding="utf-8"))
    rng = random.Random(seed)
    vocab = sorted({w for r in base for w in r["output"].split() if w.isalpha()})

    def vary(value: str) -> str:
        # Swap inner words only: the first and last word (and so the final punctuation) stay.
        words = value.split(" ")
        inner = [rng.choice(vocab) if w.isalpha() and rng.random() < 0.33 else w for w in words[1:-1]]
        return " ".join(words[:1] + inner + words[-1:]) if len(words) > 2 else value

    rows = []
    while len(rows) < n:
        copy = len(rows) // len(base)
        for r in base:
            if len(rows) == n:
                break
            if copy == 0:
                rows.append(dict(r))
            else:
                rows.append({"instruction": vary(r["instruction"]), "input": vary(r["input"]) if r["input"] else "",
                             "output": vary(r["output"])})
    for _ in range(n // 100):  # planted: exact and near duplicates of random rows
        i = rng.randrange(n)
        rows[rng.randrange(n)] = dict(rows[i])
        words = rows[i]["output"].split(" ")
        words[rng.randrange(len(words))] = "planted"
        rows[rng.randrange(n)] = dict(rows[i], output=" ".join(words))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=50_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--clusters", action="store_true", help="also compute sentence-embedding clusters")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rows.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in make_rows(args.rows)), encoding="utf-8")
        cmd = [sys.executable, "-m", "sftlab", "data", "check", str(path), "--json",
               "--clusters" if args.clusters else "--no-clusters"]
        subprocess.run([sys.executable, "-m", "sftlab", "inspect", "--data", str(DATA), "--limit", "1", "--json"],
                       capture_output=True, check=True)  # the default model's tokenizer converted and cached
        walls, report = [], {}
        for _ in range(args.runs):
            started = time.perf_counter()
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            walls.append(time.perf_counter() - started)
            report = json.loads(out.stdout)
    stats = report["stats"]
    found = {f["check"]: len(f["rows"]) for f in report["findings"]}
    print(f"rows: {report['rows']:,}  (command: sftlab data check --json {'--clusters' if args.clusters else '--no-clusters'})")
    print(f"wall seconds per run: {', '.join(f'{w:.1f}' for w in walls)}  median {statistics.median(walls):.1f} "
          f"(target < 60 without embeddings)")
    print("steps of the last run (s): " + ", ".join(f"{k} {v}" for k, v in stats["seconds"].items()))
    if "embedding_seconds" in stats["clusters"]:
        print(f"embeddings: {stats['clusters']['embedding_seconds']} s, clusters in all {stats['clusters']['seconds']} s")
    print("findings: " + ", ".join(f"{k} {v}" for k, v in found.items()))


if __name__ == "__main__":
    main()
