"""Wall-clock timing on this machine: a fixed thread count, warm-up, median of repeats."""

from __future__ import annotations

import contextlib
import functools
import platform
import statistics
import time
from collections.abc import Callable, Iterator

import torch

from nas._limits import check_threads


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(threads)``, restoring the previous count.

    Latency depends strongly on the intra-op thread count; fixing it makes figures
    comparable across runs and machines, and restoring it leaves the caller's process
    as it was. The one place this package sets torch's thread count, so the bound of
    :func:`nas._limits.check_threads` (a huge count crashes OpenMP) holds everywhere.
    """
    check_threads(threads)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def time_ms(
    fn: Callable[[], object],
    *,
    warmup: int,
    repeats: int,
    clock: Callable[[], float] = time.perf_counter,
) -> list[float]:
    """Run ``fn`` ``warmup`` times untimed (allocator, caches, lazy init), then return
    ``repeats`` durations in milliseconds.

    ``clock`` is wall-clock time by default. ``time.thread_time`` (CPU time of the
    calling thread) is robust to other processes taking the CPU away, but counts only
    work done in this thread: use it with one intra-op thread only.
    """
    if warmup < 0 or repeats < 1:
        raise ValueError(f"need warmup >= 0 and repeats >= 1, got {warmup=}, {repeats=}")
    for _ in range(warmup):
        fn()
    durations = []
    for _ in range(repeats):
        start = clock()
        fn()
        durations.append((clock() - start) * 1e3)
    return durations


def median_ms(fn: Callable[[], object], *, warmup: int, repeats: int) -> float:
    """The median of :func:`time_ms`: robust to the odd preempted run."""
    return statistics.median(time_ms(fn, warmup=warmup, repeats=repeats))


@functools.cache
def cpu_details() -> dict[str, str]:
    """Vendor, family, model and stepping from ``/proc/cpuinfo`` (a virtual machine
    may show only a generic model name; these still identify the generation)."""
    keys = {"vendor_id", "cpu family", "model", "stepping", "cpu mhz"}
    out: dict[str, str] = {}
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key in keys and key not in out:
                    out[key] = value.strip()
                if not line.strip():
                    break  # first processor only
    return out


@functools.cache
def cpu_model() -> str:
    """This machine's CPU model string (``/proc/cpuinfo`` on Linux, else ``platform``)."""
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"
