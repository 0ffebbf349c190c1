"""Work handed to forked worker processes without pickling it: the workers inherit the function and its
arguments (an encoder with its tokenizer, thousands of conversations or rows) from the parent's memory when they
are forked. The one way sftlab hands work to other processes (encoding, data check's background tokenizing)."""

from __future__ import annotations

import multiprocessing as mp
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any, Callable, Iterator

# The job of the pool being forked: set just before the workers start, so they inherit it.
_JOB: tuple[Callable[..., Any], tuple[Any, ...]] | None = None


def can_fork() -> bool:
    return "fork" in mp.get_all_start_methods()


@contextmanager
def forked(processes: int, fn: Callable[..., Any], *args: Any,
           initializer: Callable[[], None] | None = None) -> Iterator[Callable[..., Future]]:
    """Yields submit(*more): a Future of fn(*args, *more) computed by one of `processes` forked workers, each first
    running `initializer` (the place for a worker's process-wide settings: this process's are left alone). Where
    fork is not available (Windows, macOS's default), submit computes it in this process."""
    global _JOB
    if not can_fork():
        def inline(*more: Any) -> Future:
            done: Future = Future()
            done.set_result(fn(*args, *more))
            return done

        yield inline
        return
    _JOB = (fn, args)
    try:
        with ProcessPoolExecutor(processes, mp_context=mp.get_context("fork"), initializer=initializer) as pool:
            yield lambda *more: pool.submit(_run, *more)
    finally:
        _JOB = None


def _run(*more: Any) -> Any:
    fn, args = _JOB  # type: ignore[misc]
    return fn(*args, *more)
