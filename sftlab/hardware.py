"""Where to compute and in which precision: the device, and whether bf16 autocast is worth it here.

`precision: auto` picks bf16 only where it is measurably faster. A CPU flag is not enough: CPUs that
report avx512_bf16 run a bf16 matmul anywhere from 2× faster to 2× slower than fp32 depending on the
model, the torch build and the matrix shapes, and without native bf16 it is hundreds of times slower.
So on CPU a short check (forward and backward of a linear block of a small model's shape, fp32 against
bf16 autocast, casts included) decides, and its answer is cached per machine and torch version.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from typing import Callable

import torch

from sftlab.errors import SftlabError

log = logging.getLogger("sftlab")

# bf16 must beat fp32 by this factor to be chosen: a near tie is not worth the lower precision.
BF16_MIN_SPEEDUP = 1.15


def pick_device() -> str:
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def process_count() -> int:
    """The processes of this run: torchrun and accelerate launch announce their number in WORLD_SIZE."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def bf16_native(device: str) -> bool:
    """Whether the hardware computes bf16 at all (without it, bf16 is emulated and very slow)."""
    if device == "cuda":
        return torch.cuda.is_bf16_supported()
    if device == "cpu":
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    return False


def _best_seconds(fn: Callable[[], None], repeats: int) -> float:
    fn()  # warm-up (allocations, kernel selection)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def measure_cpu_bf16_speedup(tokens: int = 512, hidden: int = 576, inner: int = 1536, repeats: int = 5) -> float:
    """fp32 seconds / bf16-autocast seconds for forward + backward of a gated MLP block (the shape of the
    default model's layers), weights in fp32 as in training. > 1 means bf16 is faster."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(tokens, hidden, generator=gen)
    w_up = torch.randn(2 * inner, hidden, generator=gen, requires_grad=True)
    w_down = torch.randn(hidden, inner, generator=gen, requires_grad=True)

    def step(bf16: bool) -> Callable[[], None]:
        def run() -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                gate, up = torch.nn.functional.linear(x, w_up).chunk(2, dim=-1)
                out = torch.nn.functional.linear(torch.nn.functional.silu(gate) * up, w_down)
            out.float().sum().backward()
            w_up.grad = w_down.grad = None

        return run

    fp32 = _best_seconds(step(False), repeats)
    bf16 = _best_seconds(step(True), repeats)
    return fp32 / bf16


def _machine_key() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu} | torch {torch.__version__} | {torch.get_num_threads()} threads"


def cpu_bf16_faster() -> bool:
    """Whether bf16 autocast trains faster than fp32 on this CPU: measured once, then cached."""
    if not bf16_native("cpu"):
        return False
    from sftlab.models import sftlab_home

    cache = sftlab_home() / "precision.json"
    key = _machine_key()
    try:
        known = json.loads(cache.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    if not isinstance(known, dict):
        known = {}
    if key not in known:
        speedup = measure_cpu_bf16_speedup()
        known[key] = {"bf16_speedup": round(speedup, 3)}
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps(known, indent=1), encoding="utf-8")
        except OSError:
            pass  # a read-only home only costs the check next time
        log.info("precision check: bf16 autocast runs %.2fx the speed of fp32 on this CPU", speedup)
    return float(known[key]["bf16_speedup"]) >= BF16_MIN_SPEEDUP


def use_bf16(precision: str, device: str) -> bool:
    """bf16 autocast or not, for `precision` auto | bf16 | fp32."""
    if precision == "fp32":
        return False
    if precision == "bf16":
        if device == "mps":
            raise SftlabError("precision: bf16 autocast is not supported on mps; use auto or fp32")
        return True
    if device == "cuda":
        return bf16_native("cuda")
    if device == "cpu":
        return cpu_bf16_faster()
    return False
