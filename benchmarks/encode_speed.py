"""Render + tokenize + mask speed on the 999 rows of alpaca_en_demo.json, and what escaping costs.

Loading the file is excluded (it happens once per run); the timed part is Encoder.encode: rendering
every conversation and its prompt prefixes, tokenizing, and masking. For each tokenizer three ways
are timed in alternation, so a noisy machine slows them alike:

- `default`: escaping on, on the data as it is (no row spells a special token, so nothing is escaped);
- `no-escape`: escaping off, same data (the difference is the cost of looking for special-token text);
- `escaped`: escaping on, every row's instruction carrying the tokenizer's EOS text (every row escaped).

Then, on a larger input (the shipped files, 4 times over), encoding in 1 and 2 worker processes
(`num_proc`) and the time to read the examples back from the encode cache.

    .venv/bin/python benchmarks/encode_speed.py [--repeats 9]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from pathlib import Path

from sftlab.config import DataSettings
from sftlab.data.encode import Encoder
from sftlab.data.load import load_conversations
from sftlab.data.templates import resolve_template
from sftlab.models import load_tokenizer

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "fixtures" / "data" / "alpaca_en_demo.json"


def timed(encoder: Encoder, conversations) -> float:
    t0 = time.perf_counter()
    encoder.encode(conversations)
    return time.perf_counter() - t0


def with_special_text(conversations, text: str):
    out = []
    for conv in conversations:
        first = dataclasses.replace(conv.messages[0], content=f"{conv.messages[0].content} {text} (quoted)")
        out.append(dataclasses.replace(conv, messages=[first, *conv.messages[1:]]))
    return out


def bench(name: str, model: str | None, template: str | None, conversations, repeats: int) -> None:
    tok = load_tokenizer(model)
    chat = resolve_template(template, tok)
    ways = {
        "default": (Encoder(tok, chat, max_length=4096), conversations),
        "no-escape": (Encoder(tok, chat, max_length=4096, escape=False), conversations),
        "escaped": (Encoder(tok, chat, max_length=4096), with_special_text(conversations, tok.eos_token)),
    }
    for encoder, convs in ways.values():  # warm-up: template compilation, the escaping tokenizer copies
        encoder.encode(convs)
    times: dict[str, list[float]] = {way: [] for way in ways}
    for _ in range(repeats):
        for way, (encoder, convs) in ways.items():
            times[way].append(timed(encoder, convs))
    n = len(conversations)
    print(f"{name}: {n} conversations")
    for way, ts in times.items():
        med = statistics.median(ts)
        print(f"  {way:<10} median {med * 1000:6.1f} ms (min {min(ts) * 1000:.1f}, max {max(ts) * 1000:.1f})"
              f" → {n / med:7,.0f} conversations/s")
    base = statistics.median(times["no-escape"])
    print(f"  looking for special-token text: {statistics.median(times['default']) / base:.2f}×; "
          f"every row escaped: {statistics.median(times['escaped']) / base:.2f}×")


def processes_and_cache(repeats: int) -> None:
    import os
    import tempfile

    from sftlab.data.pipeline import Source, build_examples

    fixtures = ROOT / "tests" / "fixtures"
    files = [fixtures / "data" / f for f in ("alpaca_en_demo.json", "alpaca_zh_demo.json", "glaive_toolcall_en_demo.json")]
    conversations = [c for f in files for c in load_conversations(f).conversations] * 4
    tok = load_tokenizer(str(fixtures / "tokenizers" / "qwen2"))
    encoder = Encoder(tok, resolve_template("chatml", tok, warn=False), max_length=1024)
    encoder.encode(conversations[:200])
    times: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(repeats):
        for n in times:
            t0 = time.perf_counter()
            encoder.encode(conversations, num_proc=n)
            times[n].append(time.perf_counter() - t0)
    print(f"\nqwen2 + chatml, {len(conversations):,} conversations, {os.cpu_count()} cores:")
    for n, ts in times.items():
        print(f"  num_proc={n}: median {statistics.median(ts):.2f} s (min {min(ts):.2f}, max {max(ts):.2f})"
              f" → {len(conversations) / statistics.median(ts):,.0f} conversations/s")
    with tempfile.TemporaryDirectory() as cache:
        sources = [Source(str(f)) for f in files]
        t0 = time.perf_counter()
        build_examples(sources, tok, DataSettings(template="chatml"), cache=Path(cache))
        miss = time.perf_counter() - t0
        hits = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            build_examples(sources, tok, DataSettings(template="chatml"), cache=Path(cache))
            hits.append(time.perf_counter() - t0)
    print(f"  build_examples of the 3 files ({len(conversations) // 4:,} conversations): load + encode {miss:.2f} s, "
          f"from the cache {statistics.median(hits):.2f} s (median)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    conversations = load_conversations(DATA).conversations
    print(f"data: {DATA} ({len(conversations)} rows)")
    fixtures = ROOT / "tests" / "fixtures" / "tokenizers"
    bench("smollm2-135m-instruct (default model, own template)", None, None, conversations, args.repeats)
    bench("qwen2 + chatml", str(fixtures / "qwen2"), "chatml", conversations, args.repeats)
    bench("gpt2 + alpaca", str(fixtures / "gpt2"), "alpaca", conversations, args.repeats)
    bench("llama3 + llama3", str(fixtures / "llama3"), "llama3", conversations, args.repeats)
    processes_and_cache(args.repeats)


if __name__ == "__main__":
    main()
