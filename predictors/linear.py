"""Ridge regression in closed form: the cheap baseline every other model must beat.

Latency is close to additive over layers, so on one-hot features a linear model is
already a strong latency predictor (the per-op lookup-table view of latency).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from nas.predictors._base import PREDICTORS, Predictor


@PREDICTORS.register("ridge", description="ridge regression (closed form), no uncertainty")
class RidgePredictor(Predictor):
    """Least squares with an L2 penalty ``alpha`` on standardised features.

    Args:
        alpha: the L2 penalty; larger is smoother.
        log_target: see :class:`~nas.predictors.Predictor`.
        seed: unused (the fit is deterministic); kept for a uniform interface.
    """

    name = "ridge"

    def __init__(self, *, alpha: float = 1.0, log_target: bool = False, seed: int = 0) -> None:
        self.alpha = alpha
        self.log_target = log_target
        self.seed = seed

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        self.coef_, self.intercept_ = ridge_solve(X, y, self.alpha)

    def _predict(self, X: np.ndarray, return_std: bool) -> tuple[np.ndarray, None]:
        return X @ self.coef_ + self.intercept_, None

    def _state(self, directory: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"intercept": self.intercept_}, {"coef": self.coef_}

    def _set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray],
                   directory: Path) -> None:
        self.coef_ = arrays["coef"]
        self.intercept_ = float(meta["intercept"])


def ridge_solve(X: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
    """Coefficients (d,) and intercept of ridge regression on ``X`` (n, d) whose columns
    are centred (the penalty would otherwise shrink the intercept too).

    Raises:
        ValueError: a negative ``alpha``.
    """
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    d = X.shape[1]
    coef = np.linalg.solve(X.T @ X + alpha * np.eye(d), X.T @ y)
    return coef, float(y.mean() - X.mean(axis=0) @ coef)
