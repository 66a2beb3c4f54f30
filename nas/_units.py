"""Parsing of budgets given on the command line ("50ms", "0.05 s", "20MB")."""

from __future__ import annotations

import re

_NUMBER_UNIT = re.compile(r"^\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([a-zA-Zµ]*)\s*$")
_TIME_UNITS_MS = {"ms": 1.0, "s": 1000.0, "sec": 1000.0, "us": 1e-3, "µs": 1e-3}
_FORM = "a positive number with a unit ms, s or us (e.g. '50ms', '0.05s', '500us')"


def parse_latency_ms(text: str) -> float:
    """``"50ms"``, ``"50 ms"``, ``"0.05s"`` or ``"500us"`` -> milliseconds.

    The unit is required: a bare ``50`` could mean 50 ms or 50 s.

    Raises:
        ValueError: the text is not a positive number with a time unit.
    """
    match = _NUMBER_UNIT.match(str(text))
    if match is None:
        raise ValueError(f"latency budget must be {_FORM}, got {text!r}")
    number, unit = float(match.group(1)), match.group(2).lower()
    if not unit:
        raise ValueError(f"latency budget {text!r} has no unit; write it as {_FORM}")
    if unit not in _TIME_UNITS_MS:
        raise ValueError(f"latency budget {text!r} has an unknown unit {unit!r}; write it as "
                         f"{_FORM}")
    if number <= 0:
        raise ValueError(f"latency budget must be positive, got {text!r}")
    return number * _TIME_UNITS_MS[unit]


_SIZE_UNITS_MB = {"b": 1e-6, "kb": 1e-3, "mb": 1.0, "gb": 1e3}
_SIZE_FORM = "a positive number with a unit B, kB, MB or GB (e.g. '2MB', '500kB')"


def parse_size_mb(text: str, *, what: str = "size budget") -> float:
    """``"2MB"``, ``"2 MB"``, ``"500kB"`` or ``"0.5GB"`` -> MB (10**6 bytes); ``what``
    names the budget in messages.

    Raises:
        ValueError: the text is not a positive number with a size unit.
    """
    match = _NUMBER_UNIT.match(str(text))
    if match is None:
        raise ValueError(f"{what} must be {_SIZE_FORM}, got {text!r}")
    number, unit = float(match.group(1)), match.group(2).lower()
    if unit not in _SIZE_UNITS_MB:
        raise ValueError(f"{what} {text!r} needs a unit; write it as {_SIZE_FORM}")
    if number <= 0:
        raise ValueError(f"{what} must be positive, got {text!r}")
    return number * _SIZE_UNITS_MB[unit]


def format_mb(mb: float) -> str:
    """A memory or size in MB as people read it: ``689.7 kB`` below 1 MB, else ``7.71 MB``."""
    return f"{mb * 1000:.1f} kB" if mb < 1 else f"{mb:.3g} MB"
