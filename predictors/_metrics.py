"""Quality metrics of a predictor: error (RMSE, MAPE) and ranking (Kendall tau, Spearman).

A search only needs a predictor to *rank* subnets correctly, so the rank correlations are
the figures that matter most; RMSE and MAPE say how far a predicted latency can be
trusted against a budget.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import stats


def _pair(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true, dtype=float).ravel()
    p = np.asarray(y_pred, dtype=float).ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred must have the same length, got {t.size} and {p.size}")
    if t.size == 0:
        raise ValueError("y_true and y_pred are empty")
    if not (np.isfinite(t).all() and np.isfinite(p).all()):
        raise ValueError("y_true and y_pred must be finite (no NaN or inf)")
    return t, p


def rmse(y_true: Any, y_pred: Any) -> float:
    """Root mean squared error, in the target's unit."""
    t, p = _pair(y_true, y_pred)
    return float(np.sqrt(np.mean((t - p) ** 2)))


def mape(y_true: Any, y_pred: Any) -> float:
    """Mean absolute percentage error as a fraction (0.05 means 5 %).

    Raises:
        ValueError: a true value is 0 (the relative error is undefined).
    """
    t, p = _pair(y_true, y_pred)
    if (t == 0).any():
        raise ValueError("mape is undefined when a true value is 0")
    return float(np.mean(np.abs((t - p) / t)))


def _rank_corr(fn: Any, t: np.ndarray, p: np.ndarray) -> float:
    # A constant input has no ranking; scipy warns and returns NaN, we return 0 (no skill).
    if t.size < 2 or np.ptp(t) == 0 or np.ptp(p) == 0:
        return 0.0
    value = float(fn(t, p)[0])
    return 0.0 if math.isnan(value) else value


def kendall_tau(y_true: Any, y_pred: Any) -> float:
    """Kendall's tau-b (ties handled); 0 when either side is constant."""
    t, p = _pair(y_true, y_pred)
    return _rank_corr(stats.kendalltau, t, p)


def spearman(y_true: Any, y_pred: Any) -> float:
    """Spearman's rho on average ranks (ties handled); 0 when either side is constant."""
    t, p = _pair(y_true, y_pred)
    return _rank_corr(stats.spearmanr, t, p)


def score_all(y_true: Any, y_pred: Any) -> dict[str, float | int]:
    """Every metric at once: ``rmse``, ``mape`` (fraction), ``kendall_tau``, ``spearman``, ``n``.

    ``mape`` is NaN when a true value is 0.
    """
    t, p = _pair(y_true, y_pred)
    return {
        "rmse": rmse(t, p),
        "mape": mape(t, p) if (t != 0).all() else float("nan"),
        "kendall_tau": kendall_tau(t, p),
        "spearman": spearman(t, p),
        "n": int(t.size),
    }
