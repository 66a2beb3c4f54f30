"""Bounds on the resources a user or a remote client can ask for.

Every thread count that reaches torch (``--threads`` options, an agent request, a
target's settings) passes :func:`check_threads`: more intra-op threads than the machine
has cores only slows a measurement down, and a huge count crashes OpenMP (a segfault
in libgomp). Repeat counts are bounded so that one request cannot occupy a device
for days.
"""

from __future__ import annotations

import os
from typing import Any

MAX_REPEATS = 10_000
"""Most timed (or warm-up) runs one measurement may ask for."""


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS and Windows have no affinity mask
        return max(1, os.cpu_count() or 1)


def check_threads(value: Any, *, name: str = "threads") -> int:
    """``value`` as a thread count between 1 and this machine's usable cores.

    Raises:
        ValueError: not an integer, or outside ``[1, usable_cores()]``.
    """
    return check_count(value, name=name, low=1, high=usable_cores(),
                       why=f"this machine has {usable_cores()} usable core(s)")


def check_count(value: Any, *, name: str, low: int, high: int, why: str = "") -> int:
    """``value`` as an integer in ``[low, high]``.

    Raises:
        ValueError: not an integer (booleans are not), or out of range.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer from {low} to {high}, got {value!r}"[:200])
    if not low <= value <= high:
        reason = f" ({why})" if why else ""
        raise ValueError(f"{name} must be from {low} to {high}{reason}, got {value}")
    return value
