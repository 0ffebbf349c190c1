"""`sftlab doctor`: what this machine offers a run, and what sftlab decided about it (the precision, with the
figure it rests on), in one screen to paste into a bug report."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

from sftlab.home import sftlab_home
from sftlab.machine.hardware import bf16_native, choose_precision, cpu_model, pick_device
from sftlab.runs import format_bytes, tree_bytes

# The CPU features that decide how fast training runs: vector width, and native bf16 (avx512_bf16, AMX).
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu_flags(cpuinfo: str | None = None) -> list[str]:
    """Which of CPU_FLAGS the CPU reports (Linux's /proc/cpuinfo; elsewhere none are known)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8")
        except OSError:
            return []
    reported: set[str] = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            reported.update(line.split(":", 1)[1].split())
    return [f for f in CPU_FLAGS if f in reported]


@dataclass(frozen=True)
class CpuKind:
    """Which of the two kinds of CPU that decide a run's speed this is, and what that means for it."""

    name: str
    speed: str


def cpu_kind(flags: list[str], capability: str = "") -> CpuKind:
    """The kind of CPU from its flags (cpu_flags) and the vector instructions torch uses (`capability`,
    torch.backends.cpu.get_cpu_capability(): lower than the flags when limited by ATEN_CPU_CAPABILITY)."""
    limited = capability.upper() in ("AVX2", "DEFAULT", "NO AVX")
    native = [f for f in ("avx512_bf16", "amx_bf16") if f in flags]
    if native and not limited:
        return CpuKind("native bf16 (" + ", ".join(native) + ")",
                       "training runs under bf16 autocast where it measures faster than fp32 (2.33× on the 2-core "
                       "machine the README's times are from, a CPU of this kind: `make demo` 5 min 51 s there)")
    why = f"torch limited to {capability}" if native else "no avx512_bf16 or AMX"
    if "avx2" in flags:
        return CpuKind(f"AVX2 only, bf16 emulated ({why})",
                       "training runs in fp32 (bf16 would be emulated: it measured 0.07× fp32's speed); the demo's "
                       "training took 1.3× as long as with native bf16 on the same 2 cores (`make demo` 6 min 43 s "
                       "against 5 min 51 s; docs/runs-and-precision.md)")
    return CpuKind(f"no AVX2 ({why})", "training runs in fp32 without wide vector instructions: expect it several "
                   "times slower than the README's times")


def matmul_gflops(dtype: torch.dtype, device: str = "cpu", n: int = 1024, repeats: int = 10) -> float:
    """The best rate of an n×n by n×n matmul in `dtype` (2n³ floating-point operations each), in GFLOP/s."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    best = float("inf")
    for k in range(repeats + 1):
        start = time.perf_counter()
        a @ b
        sync()
        if k:  # the first is a warm-up
            best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def _free_disk(path: Path) -> str:
    while not path.exists() and path != path.parent:
        path = path.parent
    usage = shutil.disk_usage(path)
    return f"{format_bytes(usage.free)} free of {format_bytes(usage.total)} (at {path})"


def report(*, remeasure: bool = False) -> list[tuple[str, str]]:
    """(what, value) lines about this machine; `remeasure` measures bf16's speed afresh and updates the cache."""
    device = pick_device()
    flags = cpu_flags()
    native = bf16_native("cpu")
    kind = cpu_kind(flags, torch.backends.cpu.get_cpu_capability())
    lines = [
        ("cpu", cpu_model()),
        ("cpu flags", " ".join(flags) or "none of " + ", ".join(CPU_FLAGS)),
        ("cpu kind", kind.name),
        ("what it means", kind.speed),
        ("native bf16 (cpu)", "yes" if native else "no (bf16 is emulated: far slower than fp32)"),
        ("torch", f"{torch.__version__} (cpu capability {torch.backends.cpu.get_cpu_capability()})"),
        ("transformers", _version("transformers")),
        ("peft", _version("peft")),
        ("threads", f"{torch.get_num_threads()} torch threads, {os.cpu_count()} cores seen"),
        ("device", torch.cuda.get_device_name(0) if device == "cuda" else device),
    ]
    where = device if device in ("cpu", "cuda") else "cpu"
    n = 4096 if where == "cuda" else 1024
    lines.append((f"fp32 matmul ({where})", f"{matmul_gflops(torch.float32, where, n):,.0f} GFLOP/s"))
    if where == "cpu" and not native:
        lines.append(("bf16 matmul (cpu)", "not measured (no native bf16)"))
    else:
        lines.append((f"bf16 matmul ({where})", f"{matmul_gflops(torch.bfloat16, where, n):,.0f} GFLOP/s"))
    chosen = choose_precision("auto", device, remeasure=remeasure)
    lines.append(("precision (auto)", chosen.note.removeprefix("precision: ")))
    home = sftlab_home()
    lines.append(("SFTLAB_HOME", f"{home} ({format_bytes(tree_bytes(home)) if home.is_dir() else 'not created yet'})"))
    lines.append(("disk", _free_disk(home)))
    return lines


def format_report(lines: list[tuple[str, str]]) -> str:
    width = max(len(what) for what, _ in lines)
    return "\n".join(f"{what.ljust(width)}  {value}" for what, value in lines)
