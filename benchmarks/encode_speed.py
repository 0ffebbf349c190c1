"""Render + tokenize + mask speed on the 999 rows of alpaca_en_demo.json (target: ≥ 5,000 conversations/s).

Loading the file is excluded (it happens once per run); the timed part is Encoder.encode, i.e.
rendering every conversation and its prefixes, one batched tokenization with offsets, and masking.
Prints the median of several runs, for the default model's tokenizer and for Qwen2's.

    .venv/bin/python benchmarks/encode_speed.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from sftlab.data.encode import Encoder
from sftlab.data.load import load_conversations
from sftlab.data.templates import resolve_template
from sftlab.models import load_tokenizer

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "fixtures" / "data" / "alpaca_en_demo.json"


def bench(name: str, model: str | None, template: str | None, conversations, repeats: int) -> float:
    tok = load_tokenizer(model)
    encoder = Encoder(tok, resolve_template(template, tok), max_length=4096)
    encoder.encode(conversations[:50])  # warm-up: template compilation, tokenizer caches
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = encoder.encode(conversations)
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    rate = len(conversations) / med
    tokens = sum(len(e) for e in result.examples)
    print(
        f"{name:<28} {len(conversations)} conversations, {tokens} tokens: median {med * 1000:.1f} ms "
        f"(min {min(times) * 1000:.1f}, max {max(times) * 1000:.1f}) → {rate:,.0f} conversations/s, "
        f"{tokens / med:,.0f} tokens/s  [{'meets' if rate >= 5000 else 'BELOW'} the 5,000/s target]"
    )
    return rate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    conversations = load_conversations(DATA).conversations
    print(f"data: {DATA} ({len(conversations)} rows)")
    bench("smollm2-135m-instruct (own)", None, None, conversations, args.repeats)
    bench("qwen2 + chatml", str(ROOT / "tests" / "fixtures" / "tokenizers" / "qwen2"), "chatml", conversations, args.repeats)
    bench("llama3 + llama3", str(ROOT / "tests" / "fixtures" / "tokenizers" / "llama3"), "llama3", conversations, args.repeats)


if __name__ == "__main__":
    main()
