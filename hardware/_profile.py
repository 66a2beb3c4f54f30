"""Latency profilers: time a function until the median is known to a stated precision.

Timing: :func:`measure_latency` (CPU wall clock, pinned torch threads) and
:func:`measure_latency_cuda` (CUDA events) time a zero-argument function in rounds until
the distribution-free 95% confidence interval of the median lies within ``±rel_ci`` of
the median, or ``max_repeats`` runs are spent (:attr:`Measurement.converged` says
which). Every :class:`Measurement` carries its durations, its Tukey outliers and the
:func:`environment` it was taken in.

The latency dataset ``nas profile`` writes from these measurements is
:mod:`nas.hardware._latency_dataset`.
"""


from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import logging
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from nas.hardware._timing import cpu_model, time_ms, torch_threads

logger = logging.getLogger(__name__)

CONFIDENCE = 0.95
"""Coverage of the confidence interval of the median."""

MIN_RUNS = 6
"""The fewest runs whose median has a distribution-free 95% interval: with 5 runs even
(min, max) covers the median with probability 1 - 2/32 < 0.95."""

TUKEY_K = 1.5
"""Tukey's fences: outliers lie more than 1.5 IQR beyond the quartiles."""


# -- measurements ------------------------------------------------------------------------


@dataclass(frozen=True)
class Measurement:
    """One latency measurement: the median of ``n_runs`` timed runs and its 95% CI.

    Attributes:
        median_ms: the median duration, ms.
        ci_low_ms, ci_high_ms: a distribution-free confidence interval of the median
            (order statistics; coverage at least 95%).
        n_runs: timed runs, warm-up excluded.
        converged: True when the interval came within ``±rel_ci`` of the median before
            ``max_repeats`` runs; False when the run budget stopped it.
        outliers_ms: durations beyond Tukey's fences, in run order. Reported, not
            dropped: the median is robust to them, and how many there are tells how
            noisy the machine was.
        durations_ms: every timed duration, in run order.
        environment: where it was measured (:func:`environment`).

    The interval assumes the runs are exchangeable: it is the precision of this
    sitting's median. A shared machine whose load changes between sittings moves the
    median by more (measured on a busy two-core VM: a ±3.6% interval, repeats 10%
    apart), which only interleaving or repeating sittings would show.
    """

    median_ms: float
    ci_low_ms: float
    ci_high_ms: float
    n_runs: int
    converged: bool
    outliers_ms: tuple[float, ...]
    durations_ms: tuple[float, ...]
    environment: Mapping[str, str | int] = field(default_factory=dict)

    @property
    def n_outliers(self) -> int:
        return len(self.outliers_ms)

    @property
    def rel_half_width(self) -> float:
        """The interval's larger half-width as a fraction of the median."""
        half = max(self.ci_high_ms - self.median_ms, self.median_ms - self.ci_low_ms)
        return half / self.median_ms if self.median_ms > 0 else math.inf


@functools.cache
def _ci_rank(n: int, confidence: float) -> int:
    """The largest rank ``j`` with ``P(B <= j - 1) <= (1 - confidence) / 2`` for
    ``B ~ Binomial(n, 1/2)``, 0 if none: then ``[x_(j), x_(n+1-j)]`` covers the median
    with probability ``1 - 2 P(B <= j - 1) >= confidence`` whatever the distribution."""
    tail, total, rank = (1 - confidence) / 2, 2**n, 0
    cumulative = 0
    for k in range(n // 2 + 1):
        cumulative += math.comb(n, k)
        if cumulative / total > tail:
            break
        rank = k + 1
    return rank


def median_ci(durations: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    """A distribution-free confidence interval of the median from order statistics.

    Timing noise is skewed (preemption only ever adds time), so no normal approximation:
    the number of runs below the true median is Binomial(n, 1/2) whatever the
    distribution, which fixes the ranks of the bounds (n = 10: 2nd and 9th; n = 20: 6th
    and 15th).

    Raises:
        ValueError: too few durations for the confidence asked.
    """
    n = len(durations)
    rank = _ci_rank(n, confidence)
    if rank == 0:
        raise ValueError(f"a {confidence:.0%} interval of the median needs more than {n} runs")
    ordered = sorted(durations)
    return ordered[rank - 1], ordered[n - rank]


def tukey_outliers(durations: Sequence[float]) -> tuple[float, ...]:
    """Durations beyond Tukey's fences ``[Q1 - 1.5 IQR, Q3 + 1.5 IQR]``, in order.

    Quartiles by linear interpolation between order statistics (numpy's default,
    ``statistics.quantiles(method="inclusive")``).
    """
    if len(durations) < 2:
        return ()
    q1, _, q3 = statistics.quantiles(durations, n=4, method="inclusive")
    low, high = q1 - TUKEY_K * (q3 - q1), q3 + TUKEY_K * (q3 - q1)
    return tuple(d for d in durations if d < low or d > high)


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def environment() -> dict[str, str | int]:
    """Where a figure was measured: CPU model, logical cores, torch's current intra-op
    thread count, library versions, host name and the CUDA device (empty without one).

    Latency depends on all of them; a figure without them cannot be compared or redone.
    """
    return {
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count() or 0,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "onnxruntime": _version("onnxruntime"),
        "hostname": platform.node(),
        "cuda_device": torch.cuda.get_device_name() if torch.cuda.is_available() else "",
    }


def check_budget(warmup: int, min_repeats: int, max_repeats: int, rel_ci: float) -> None:
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    if min_repeats < MIN_RUNS:
        raise ValueError(f"min_repeats must be >= {MIN_RUNS} (the fewest runs with a 95% "
                         f"interval of the median), got {min_repeats}")
    if max_repeats < min_repeats:
        raise ValueError(f"max_repeats must be >= min_repeats={min_repeats}, got {max_repeats}")
    if not 0 < rel_ci < 1:
        raise ValueError(f"rel_ci must be in (0, 1), got {rel_ci}")


def _measure_rounds(
    run_round: Callable[[int, int], list[float]],
    *,
    warmup: int,
    min_repeats: int,
    max_repeats: int,
    rel_ci: float,
) -> Measurement:
    """Time rounds of ``min_repeats`` runs (``run_round(warmup, n)``) until the median's
    interval is within ``±rel_ci`` or ``max_repeats`` runs are spent.

    Checking after every round is sequential testing: the stopped interval covers a bit
    less than 95% in the worst case. Rounds rather than single runs keep that small.
    """
    check_budget(warmup, min_repeats, max_repeats, rel_ci)
    durations = run_round(warmup, min_repeats)
    while True:
        median = statistics.median(durations)
        low, high = median_ci(durations)
        converged = max(high - median, median - low) <= rel_ci * median
        if converged or len(durations) >= max_repeats:
            break
        durations += run_round(0, min(min_repeats, max_repeats - len(durations)))
    return Measurement(median, low, high, len(durations), converged,
                       tukey_outliers(durations), tuple(durations))


def measure_latency(
    fn: Callable[[], object],
    *,
    threads: int = 1,
    warmup: int = 3,
    min_repeats: int = 10,
    max_repeats: int = 200,
    rel_ci: float = 0.02,
    clock: Callable[[], float] = time.perf_counter,
) -> Measurement:
    """Wall-clock latency of ``fn()`` on the CPU, ms, to a stated precision.

    Runs ``warmup`` untimed calls, then rounds of ``min_repeats`` timed calls until the
    95% interval of the median lies within ``±rel_ci`` of it, or ``max_repeats`` calls.
    torch's intra-op thread count is pinned to ``threads`` meanwhile and restored.
    Not thread safe (the thread count is process-wide).

    Args:
        fn: one inference, e.g. ``task.latency_probe(model)``.
        threads: torch intra-op threads while timing.
        warmup: untimed calls first (allocator, caches, lazy initialisation).
        min_repeats: timed calls per round (at least 6).
        max_repeats: the most timed calls.
        rel_ci: the target half-width of the interval, as a fraction of the median.
        clock: seconds; ``time.perf_counter`` by default (tests inject a fake).

    Raises:
        ValueError: a budget out of range.
    """
    with torch_threads(threads):
        env = environment()
        measurement = _measure_rounds(
            lambda w, n: time_ms(fn, warmup=w, repeats=n, clock=clock),
            warmup=warmup, min_repeats=min_repeats, max_repeats=max_repeats, rel_ci=rel_ci,
        )
    return dataclasses.replace(measurement, environment=env)


def _cuda_round(fn: Callable[[], object], warmup: int, repeats: int) -> list[float]:
    """Durations of ``fn`` on the GPU: a pair of events around each call, the end event
    waited for before the next call, so runs never overlap and queued work from before
    the round is not counted."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    durations = []
    for _ in range(repeats):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        durations.append(start.elapsed_time(end))  # ms
    return durations


def measure_latency_cuda(
    fn: Callable[[], object],
    *,
    device: int | str | torch.device | None = None,
    warmup: int = 3,
    min_repeats: int = 10,
    max_repeats: int = 200,
    rel_ci: float = 0.02,
) -> Measurement:
    """Latency of ``fn()`` on a CUDA device, ms, timed by CUDA events on the current
    stream, with the same stopping rule as :func:`measure_latency`.

    Events time the GPU's own timeline (launch gaps included, host-side Python before
    the first launch not), which host timers cannot do without a synchronisation that
    would itself be timed.

    Raises:
        ValueError: CUDA is not available, or a budget out of range.
    """
    if not torch.cuda.is_available():
        raise ValueError("CUDA is not available on this machine; use measure_latency")
    with torch.cuda.device(device):
        env = environment()
        measurement = _measure_rounds(
            lambda w, n: _cuda_round(fn, w, n),
            warmup=warmup, min_repeats=min_repeats, max_repeats=max_repeats, rel_ci=rel_ci,
        )
    return dataclasses.replace(measurement, environment=env)


# -- the latency dataset ------------------------------------------------------------------
