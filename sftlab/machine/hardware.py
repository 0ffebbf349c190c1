"""Where to compute and in which precision: the device, and whether bf16 autocast is worth it here.

`precision: auto` picks bf16 only where it is measurably faster. A CPU flag is not enough: CPUs that
report avx512_bf16 run a bf16 matmul anywhere from 2× faster to 2× slower than fp32 depending on the
model, the torch build and the matrix shapes, and without native bf16 it is hundreds of times slower.
So on CPU a short check (forward and backward of a linear block of a small model's shape, fp32 against
bf16 autocast, casts included) decides, and its answer is cached per machine and torch version; a cached
answer too close to the threshold to trust is measured again on later runs. Every training run logs the
choice with its figure and where it came from (`Precision.note`); `sftlab doctor` shows it too.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from sftlab.errors import SftlabError
from sftlab.files import write_text
from sftlab.progress import Phase

# bf16 must beat fp32 by this factor to be chosen: a near tie is not worth the lower precision.
BF16_MIN_SPEEDUP = 1.15
# A figure in this band may be a busy machine's rather than the CPU's (one once measured 0.975× where bf16 runs
# 2.4× faster). Such a figure is measured again, up to MEASURE_ROUNDS times in a row and again on the following
# runs, until it leaves the band or rests on TRUSTED_MEASUREMENTS measurements. The best figure is kept: one too
# low trains in fp32 at half the speed, one too high at worst in bf16 near a tie. `sftlab doctor --remeasure`
# starts afresh.
NOISE_BAND = (0.8, 1.5)
MEASURE_ROUNDS = 3
TRUSTED_MEASUREMENTS = 6
PAIRS = 5  # timed fp32/bf16 step pairs of one measurement (after a warm-up pair)


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


def measure_cpu_bf16_speedup(tokens: int = 512, hidden: int = 576, inner: int = 1536, repeats: int = PAIRS,
                             on_pair: Callable[[], None] = lambda: None) -> float:
    """fp32 seconds / bf16-autocast seconds for forward + backward of a gated MLP block (the shape of the
    default model's layers), weights in fp32 as in training. > 1 means bf16 is faster. `on_pair` is called after
    each pair of steps (the warm-up's included: `repeats` + 1 calls).

    The fp32 and bf16 steps alternate, so a busy spell slows both rather than one, and each keeps its fastest
    step: other work only ever slows a step down, so the fastest is the nearest to what an idle machine does."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(tokens, hidden, generator=gen)
    w_up = torch.randn(2 * inner, hidden, generator=gen, requires_grad=True)
    w_down = torch.randn(hidden, inner, generator=gen, requires_grad=True)

    def step(bf16: bool) -> float:
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            gate, up = torch.nn.functional.linear(x, w_up).chunk(2, dim=-1)
            out = torch.nn.functional.linear(torch.nn.functional.silu(gate) * up, w_down)
        out.float().sum().backward()
        w_up.grad = w_down.grad = None
        return time.perf_counter() - start

    step(False), step(True)  # warm-up (allocations, kernel selection)
    on_pair()
    fp32 = bf16 = float("inf")
    for _ in range(repeats):
        fp32 = min(fp32, step(False))
        bf16 = min(bf16, step(True))
        on_pair()
    return fp32 / bf16


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _machine_key() -> str:
    # The vector instructions torch uses belong to the key: the same CPU limited to AVX2 (ATEN_CPU_CAPABILITY)
    # runs bf16 several times slower, and must not reuse the figure measured without the limit.
    return (f"{cpu_model()} | torch {torch.__version__} | {torch.get_num_threads()} threads | "
            f"{torch.backends.cpu.get_cpu_capability()}")


@dataclass(frozen=True)
class Bf16Figure:
    """bf16 autocast's measured speed relative to fp32 on this machine, and what it rests on."""

    speedup: float  # the best figure measured
    measurements: int
    measured: str  # the day of the latest measurement (ISO), or "" when the cache did not say
    cache: Path
    fresh: bool  # measured by this call

    @property
    def settled(self) -> bool:
        return _settled(self.speedup, self.measurements)

    def source(self) -> str:
        where = f"cached in {_home_relative(self.cache)}"
        said = ["measured now, " + where if self.fresh else where]
        if self.measured and not self.fresh:
            said.append(self.measured)
        if self.measurements > 1:
            said.append(f"best of {self.measurements} measurements")
        return ", ".join(said)


def _settled(speedup: float, measurements: int) -> bool:
    """Whether a figure is final: clear of the threshold's noise band, or measured often enough."""
    low, high = NOISE_BAND
    return not low <= speedup <= high or measurements >= TRUSTED_MEASUREMENTS


def _home_relative(path: Path) -> str:
    try:
        return "~/" + str(path.relative_to(Path.home()))
    except ValueError:
        return str(path)


def _cached_figure(entry: Any, cache: Path) -> Bf16Figure | None:
    """A cache entry as a figure, or None when it is not one (written by hand, or damaged)."""
    if not isinstance(entry, dict):
        return None
    speedup, count = entry.get("bf16_speedup"), entry.get("measurements", 1)
    if isinstance(speedup, bool) or not isinstance(speedup, (int, float)) or not 0 < speedup < float("inf"):
        return None
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        count = 1
    return Bf16Figure(float(speedup), count, str(entry.get("measured", "")), cache, fresh=False)


def cpu_bf16_figure(*, remeasure: bool = False) -> Bf16Figure:
    """bf16 autocast's speed relative to fp32 on this CPU: cached per CPU model, torch version and thread count.
    A figure near the threshold is measured again, keeping the best, until it is settled (see NOISE_BAND);
    `remeasure` replaces the cached figure by the best of MEASURE_ROUNDS new measurements."""
    from sftlab.home import sftlab_home

    cache = sftlab_home() / "precision.json"
    key = _machine_key()
    try:
        known = json.loads(cache.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    if not isinstance(known, dict):
        known = {}
    cached = _cached_figure(known.get(key), cache)
    if cached is not None and cached.settled and not remeasure:
        return cached
    best, count = (cached.speedup, cached.measurements) if cached is not None and not remeasure else (0.0, 0)
    # (emulated bf16 or a busy machine can make this take many seconds: a check that goes on says how far it is)
    pairs = MEASURE_ROUNDS * (PAIRS + 1)
    with Phase("precision check (fp32 against bf16 autocast)", pairs, "timed step pairs") as phase:
        for _ in range(MEASURE_ROUNDS):
            best, count = max(best, measure_cpu_bf16_speedup(on_pair=phase.advance)), count + 1
            if _settled(best, count) and not remeasure:
                phase.total = phase.done  # (a settled figure ends the check before its last round)
                break
    today = datetime.date.today().isoformat()
    figure = Bf16Figure(best, count, today, cache, fresh=True)
    known[key] = {"bf16_speedup": round(best, 3), "measurements": count, "measured": today}
    try:  # (processes of a distributed run measure at once: each replaces the file whole)
        write_text(cache, json.dumps(known, indent=1), "precision cache")
    except (OSError, SftlabError):
        pass  # a read-only home only costs the check next time
    return figure


@dataclass(frozen=True)
class Precision:
    """The precision a run computes in, and why: `note` is the line every training run logs."""

    bf16: bool
    note: str


def choose_precision(precision: str, device: str, *, remeasure: bool = False) -> Precision:
    """bf16 autocast or not, for `precision` auto | bf16 | fp32, with the reason; `remeasure`: a CPU's figure is
    measured afresh (see cpu_bf16_figure)."""
    if precision == "fp32":
        return Precision(False, "precision: fp32 (set in the config)")
    if precision == "bf16":
        if device == "mps":
            raise SftlabError("precision: bf16 autocast is not supported on mps; use auto or fp32")
        if device == "cpu" and not bf16_native("cpu"):
            return Precision(True, "precision: bf16 autocast (set in the config), although this CPU has no native "
                                   "bf16 (avx512_bf16 or AMX): it is emulated, and far slower than fp32")
        return Precision(True, "precision: bf16 autocast (set in the config)")
    if device == "cuda":
        if bf16_native("cuda"):
            return Precision(True, "precision: bf16 autocast — this GPU computes bf16 natively "
                                   "(--set precision=fp32 to override)")
        return Precision(False, "precision: fp32 — this GPU has no native bf16")
    if device != "cpu":
        return Precision(False, f"precision: fp32 — bf16 autocast is not used on {device}")
    if not bf16_native("cpu"):
        return Precision(False, "precision: fp32 — this CPU has no native bf16 (avx512_bf16 or AMX), so bf16 "
                                "would be emulated and far slower")
    figure = cpu_bf16_figure(remeasure=remeasure)
    if figure.speedup >= BF16_MIN_SPEEDUP:
        return Precision(True, f"precision: bf16 autocast — measured {figure.speedup:.2f}× faster than fp32 on this "
                               f"CPU ({figure.source()}; --set precision=fp32 to override)")
    again = "measured again on the next run" if not figure.settled else "re-measure: sftlab doctor --remeasure"
    return Precision(False, f"precision: fp32 — bf16 autocast measured {figure.speedup:.2f}× the speed of fp32 on "
                            f"this CPU, under the {BF16_MIN_SPEEDUP}× it must reach ({figure.source()}; {again})")


def use_bf16(precision: str, device: str) -> bool:
    """bf16 autocast or not, for `precision` auto | bf16 | fp32."""
    return choose_precision(precision, device).bf16
