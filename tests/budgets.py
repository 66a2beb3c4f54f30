"""Latency budgets derived from what this machine measures, never fixed milliseconds:
a test with ``--budget 5ms`` on ``local-cpu`` passes or fails with the machine's speed."""

from __future__ import annotations

import functools

import nas
from nas.hardware import LocalCPUTarget


@functools.cache
def largest_subnet_ms(supernet_name: str) -> float:
    """The largest subnet's latency on ``local-cpu`` here, as ``nas search`` measures it."""
    supernet = nas.get_supernet(supernet_name)
    task = nas.get_task(supernet.task_name)
    return LocalCPUTarget().latency_ms(supernet, supernet.space.largest(), task)


def feasible_budget(supernet_name: str, factor: float = 4.0) -> tuple[float, str]:
    """A ``local-cpu`` budget every subnet meets with room for timing noise: ``factor``
    times the largest subnet's latency measured here (ms, and as ``--budget`` text)."""
    budget = factor * largest_subnet_ms(supernet_name)
    return budget, f"{budget:.4f}ms"
