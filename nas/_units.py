"""Parsing of budgets given on the command line ("50ms", "0.05 s", "20MB")."""

from __future__ import annotations

import re

_NUMBER_UNIT = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([a-zA-Zµ]*)\s*$")
_TIME_UNITS_MS = {"ms": 1.0, "s": 1000.0, "sec": 1000.0, "us": 1e-3, "µs": 1e-3}


def parse_latency_ms(text: str) -> float:
    """``"50ms"``, ``"50 ms"`` or ``"0.05s"`` -> milliseconds (a plain number means ms).

    Raises:
        ValueError: the text is not a positive number with a time unit.
    """
    match = _NUMBER_UNIT.match(str(text))
    unit = match.group(2).lower() if match else ""
    if match is None or (unit and unit not in _TIME_UNITS_MS):
        raise ValueError(
            f"latency budget must be a number with a unit ms, s or us "
            f"(e.g. '50ms', '0.05s'), got {text!r}"
        )
    value = float(match.group(1)) * _TIME_UNITS_MS.get(unit, 1.0)
    if value <= 0:
        raise ValueError(f"latency budget must be positive, got {text!r}")
    return value
