"""Freed memory kept in the process while a CPU run trains.

A training step allocates and frees the same large tensors every step (activations, their gradients, autocast's
bf16 copies of the weights). With glibc's default malloc, blocks above its mmap threshold, and the free top of the
heap above its trim threshold, go back to the kernel when freed, and the next step's allocation of the same size
faults every page in again, zeroed: about 290,000 page faults (1.1 GB) a step on the default model's alpaca recipe,
5 % of the step (benchmarks/train_speed.py; docs/benchmarks.md). Inside `keep_freed_memory` both thresholds are
raised, so freed blocks are reused instead; peak RSS grew by about 1–2 % where measured. At its end glibc's default
thresholds (128 KiB) are set back and the free memory is given back to the kernel (`malloc_trim`).

Linux with glibc only; elsewhere (musl, macOS, Windows) it does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import platform
from typing import Any, Iterator

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
KEPT = (1 << 31) - 1  # the largest value mallopt takes (a C int): about 2 GiB
GLIBC_DEFAULT = 128 * 1024


def _glibc() -> Any | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


@contextlib.contextmanager
def keep_freed_memory() -> Iterator[bool]:
    """Freed memory stays with the process inside the block; yields whether that took effect."""
    libc = _glibc()
    kept = bool(libc and libc.mallopt(M_MMAP_THRESHOLD, KEPT) and libc.mallopt(M_TRIM_THRESHOLD, KEPT))
    try:
        yield kept
    finally:
        if libc is not None:
            libc.mallopt(M_MMAP_THRESHOLD, GLIBC_DEFAULT)
            libc.mallopt(M_TRIM_THRESHOLD, GLIBC_DEFAULT)
            libc.malloc_trim(0)
