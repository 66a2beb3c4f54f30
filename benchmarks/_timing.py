"""Timing helpers the benchmarks share (run them as ``python benchmarks/bench_*.py``)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_seconds(run: Callable[[], object], repeats: int, *, warmup: int = 1) -> float:
    """Median seconds of ``run()`` over ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_medians(
    first: Callable[[], object], second: Callable[[], object], repeats: int, *, warmup: int = 1
) -> tuple[float, float]:
    """Median seconds of ``first()`` and of ``second()`` over ``repeats`` interleaved
    runs each, after ``warmup`` untimed runs of both: other load on the machine then hits
    both alike, which is what a side-by-side ratio needs."""
    for _ in range(warmup):
        first()
        second()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for run, out in ((first, times[0]), (second, times[1])):
            start = time.perf_counter()
            run()
            out.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])
