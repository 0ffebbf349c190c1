"""Attention over flat rows on this machine: the per-example loop (sftlab's reference) against the kernels of
sftlab/training/attention.py, on the real batches of the identity and alpaca recipes of train_speed.py.

    .venv/bin/python benchmarks/flat_attention.py                  # both recipes (a few minutes on 2 cores)
    .venv/bin/python benchmarks/flat_attention.py --batches 3 --repeats 3

The rows are what sftlab trains with its defaults (padding-free: the 8 examples of a batch laid end to end in
one row, position_ids restarting at each), encoded with the default model's tokenizer and template; q/k/v are
random with the default model's attention shape (SmolLM2-135M: 9 query heads, 3 key/value heads, head dim 64), in
the precision `precision: auto` picks here. One attention call is timed per batch (the model runs it once per
layer: ×30 for a step). Every variant runs once per repeat, interleaved, and the medians over the repeats are
printed, so that a shared machine's slow moments fall on all of them alike.

Variants: `loop` (sftlab's per-example loop, forward + backward: two matmuls for examples of up to
`attention.SHORT` tokens, the flash kernel above); `flash loop` (the same loop with the CPU flash kernel for every
example, as before the two-matmul path); `mask` (one sdpa call with the block-diagonal mask,
transformers' way, forward + backward); `flex` (FlexAttention with the document mask, eager) and `flex compiled`
(torch.compile'd; its compile time printed apart) — forward only, because torch 2.13 has no FlexAttention backward
on CPU, so on CPU neither can train; `loop fwd` is the loop's forward for comparison with them.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from train_speed import RECIPES, cpu_flags, example_lengths, matmul_peak, recipe_rows  # noqa: E402

HEADS, KV_HEADS, HEAD_DIM, LAYERS = 9, 3, 64, 30  # SmolLM2-135M-Instruct


def recipe_batches(name: str, work: Path, batches: int) -> list[list[int]]:
    """The example lengths of the recipe's first `batches` batches of 8."""
    lengths = example_lengths(name, recipe_rows(name, None, work))
    size = RECIPES[name]["batch_size"]
    return [lengths[i : i + size] for i in range(0, min(len(lengths), batches * size), size)]


def main() -> None:
    import torch

    from sftlab.machine.hardware import choose_precision
    from sftlab.training import attention

    ap = argparse.ArgumentParser()
    ap.add_argument("--recipes", default="identity,alpaca")
    ap.add_argument("--batches", type=int, default=4, help="batches of each recipe (default 4)")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved repeats (default 5)")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "bench")
    args = ap.parse_args()

    precision = choose_precision("auto", "cpu")
    dtype = torch.bfloat16 if precision.bf16 else torch.float32
    peaks = {p: matmul_peak(p) for p in ("fp32", "bf16")}
    print(f"host: {cpu_flags()}; {torch.get_num_threads()} threads; torch {torch.__version__}; "
          f"precision auto -> {'bf16' if precision.bf16 else 'fp32'}")
    print(f"matmul peak (2048², best of 15): fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s")

    class Module(torch.nn.Module):
        is_causal = True

    module = Module().train()
    compiled = torch.compile(attention._flex_kernel(torch.device("cpu")), dynamic=True)

    for name in args.recipes.split(","):
        batches = recipe_batches(name, args.work, args.batches)
        g = torch.Generator().manual_seed(0)
        cases = []
        for lengths in batches:
            total = sum(lengths)
            positions = torch.cat([torch.arange(n) for n in lengths])[None]
            q = torch.randn(1, HEADS, total, HEAD_DIM, generator=g).to(dtype)
            k = torch.randn(1, KV_HEADS, total, HEAD_DIM, generator=g).to(dtype)
            v = torch.randn(1, KV_HEADS, total, HEAD_DIM, generator=g).to(dtype)
            docs = attention.document_ids(positions)[0]
            mask = (docs[:, None] == docs[None, :]) & torch.ones(total, total, dtype=torch.bool).tril()
            cases.append((positions, q, k, v, mask))

        def grad_inputs(q, k, v):
            return [t.detach().requires_grad_() for t in (q, k, v)]

        def loop(c, backward=True):
            q, k, v = grad_inputs(*c[1:4]) if backward else c[1:4]
            out, _ = attention.packed_attention(module, q, k, v, None, position_ids=c[0])
            if backward:
                out.float().square().mean().backward()

        def flash_loop(c):
            """The loop as it was before the two-matmul path: the CPU flash kernel for every example."""
            short, attention.SHORT = attention.SHORT, 0
            try:
                loop(c)
            finally:
                attention.SHORT = short

        def masked(c):
            q, k, v = grad_inputs(*c[1:4])
            out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=c[4][None, None],
                                                                   enable_gqa=True)
            out.float().square().mean().backward()

        def flex(c, kernel):
            block = attention._document_mask(c[0], torch.device("cpu"))  # once per batch, as in training
            with torch.no_grad():
                kernel(*c[1:4], block_mask=block, enable_gqa=True)

        t = time.perf_counter()
        for c in cases:  # every shape once: the compiles the first steps of a run would pay
            flex(c, compiled)
        compile_s = time.perf_counter() - t

        from torch.nn.attention.flex_attention import flex_attention as eager_flex
        import warnings

        warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
        variants = {
            "loop": lambda: [loop(c) for c in cases],
            "flash loop": lambda: [flash_loop(c) for c in cases],
            "mask": lambda: [masked(c) for c in cases],
            "loop fwd": lambda: [loop(c, backward=False) for c in cases],
            "flex": lambda: [flex(c, eager_flex) for c in cases],
            "flex compiled": lambda: [flex(c, compiled) for c in cases],
        }
        times: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(args.repeats):
            for key, run in variants.items():
                t = time.perf_counter()
                run()
                times[key].append((time.perf_counter() - t) / len(cases))
        med = {k: statistics.median(v) for k, v in times.items()}
        tokens = [sum(b) for b in batches]
        print(f"\n== recipe {name}: {len(batches)} batches of {RECIPES[name]['batch_size']} examples, "
              f"{min(tokens)}–{max(tokens)} tokens a row, {args.repeats} interleaved repeats")
        print(f"{'':16}{'ms/layer':>10}{'ms/step (×30)':>15}")
        for key, value in med.items():
            print(f"{key:16}{value * 1e3:10.2f}{value * 1e3 * LAYERS:15.0f}")
        print(f"flex compile, first call of each of the {len(cases)} shapes: {compile_s:.1f} s in all")
        fwd = med["flex compiled"] / med["loop fwd"]
        print(f"training (forward + backward): the loop, the only one that trains on CPU "
              f"(mask: {med['mask'] / med['loop']:.2f}× the loop's time); forward only: flex compiled "
              f"{fwd:.2f}× the loop's time, eager flex {med['flex'] / med['loop fwd']:.2f}×")
    print("\nverdict: the CPU default stays the per-example loop (FlexAttention cannot train on CPU in torch "
          f"{torch.__version__.split('+')[0]}: no backward).")


if __name__ == "__main__":
    main()
