"""Render + tokenize + mask speed on the 999 rows of alpaca_en_demo.json (target: ≥ 5,000 conversations/s).

Loading the file is excluded (it happens once per run); the timed part is Encoder.encode: rendering
every conversation and its prompt prefixes, tokenizing, and masking. Each tokenizer is timed two
ways in alternation, so a noisy machine slows both alike:

- `fast`: the default — tiktoken's BPE checked token by token (sftlab/data/fastbpe.py), texts it
  cannot vouch for go to `tokenizers`;
- `tokenizers`: Hugging Face `tokenizers` batch encoding with offsets for every text (fast=False).

Both must give the same examples; the script checks it. The fast path is built once per tokenizer
(printed as "setup") and learns which tokens are safe on the first pass (a warm-up run).

    .venv/bin/python benchmarks/encode_speed.py [--repeats 15]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from sftlab.data.encode import Encoder, _fast_path
from sftlab.data.load import load_conversations
from sftlab.data.templates import resolve_template
from sftlab.models import load_tokenizer

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "fixtures" / "data" / "alpaca_en_demo.json"


def timed(encoder: Encoder, conversations) -> float:
    t0 = time.perf_counter()
    encoder.encode(conversations)
    return time.perf_counter() - t0


def bench(name: str, model: str | None, template: str | None, conversations, repeats: int) -> float:
    tok = load_tokenizer(model)
    chat = resolve_template(template, tok)
    t0 = time.perf_counter()
    fast_path = _fast_path(tok)
    setup = time.perf_counter() - t0
    fast = Encoder(tok, chat, max_length=4096)
    plain = Encoder(tok, chat, max_length=4096, fast=False)
    t0 = time.perf_counter()
    a = fast.encode(conversations)  # warm-up: template compilation, which tokens are safe
    first = time.perf_counter() - t0
    b = plain.encode(conversations)
    same = [e.to_dict() for e in a.examples] == [e.to_dict() for e in b.examples]
    times = {"fast": [], "tokenizers": []}
    for _ in range(repeats):
        times["fast"].append(timed(fast, conversations))
        times["tokenizers"].append(timed(plain, conversations))
    n = len(conversations)
    tokens = sum(len(e) for e in a.examples)
    print(f"{name}: {n} conversations, {tokens} tokens, identical examples both ways: {same}")
    if fast_path is None:
        print("  fast path does not apply to this tokenizer; both rows are `tokenizers`")
    else:
        print(f"  setup {setup:.2f} s once per tokenizer; first pass {first * 1000:.0f} ms")
    for way, ts in times.items():
        med = statistics.median(ts)
        print(
            f"  {way:<11} median {med * 1000:6.1f} ms (min {min(ts) * 1000:.1f}, max {max(ts) * 1000:.1f})"
            f" → {n / med:7,.0f} conversations/s, {tokens / med:9,.0f} tokens/s"
        )
    ratio = statistics.median(times["tokenizers"]) / statistics.median(times["fast"])
    rate = n / statistics.median(times["fast"])
    print(f"  default path {rate:,.0f} conversations/s [{'meets' if rate >= 5000 else 'BELOW'} the 5,000/s target], {ratio:.2f}× `tokenizers`")
    if not same:
        raise SystemExit(f"{name}: the fast path changed the examples")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    conversations = load_conversations(DATA).conversations
    print(f"data: {DATA} ({len(conversations)} rows)")
    fixtures = ROOT / "tests" / "fixtures" / "tokenizers"
    bench("smollm2-135m-instruct (default model, own template)", None, None, conversations, args.repeats)
    bench("qwen2 + chatml", str(fixtures / "qwen2"), "chatml", conversations, args.repeats)
    bench("gpt2 + alpaca", str(fixtures / "gpt2"), "alpaca", conversations, args.repeats)
    bench("llama3 + llama3", str(fixtures / "llama3"), "llama3", conversations, args.repeats)


if __name__ == "__main__":
    main()
