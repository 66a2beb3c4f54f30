"""Ridge on degree-2 polynomial features: the baseline that catches interactions.

Latency is not quite additive: attention cost grows with width times length, a layer's
cost with its width times its count. Products of pairs of (standardised) features let a
linear fit express that, and on HAT's latency tables a quadratic ridge is the baseline a
learned model must beat (``benchmarks/bench_latency_models.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from nas.predictors._base import PREDICTORS
from nas.predictors.linear import RidgePredictor, ridge_solve


def quadratic_features(X: np.ndarray) -> np.ndarray:
    """``X`` (n, d) and every product ``x_i * x_j`` with ``i <= j``: (n, d + d(d+1)/2)."""
    i, j = np.triu_indices(X.shape[1])
    return np.hstack([X, X[:, i] * X[:, j]])


@PREDICTORS.register("quadratic", description="ridge on degree-2 polynomial features")
class QuadraticRidgePredictor(RidgePredictor):
    """Ridge (penalty ``alpha``) on the standardised features, their squares and their
    pairwise products, each expanded column standardised again on the training rows.

    Args:
        alpha: the L2 penalty; larger is smoother.
        log_target: see :class:`~nas.predictors.Predictor`.
        seed: unused (the fit is deterministic); kept for a uniform interface.
    """

    name = "quadratic"

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        Q = quadratic_features(X)
        self.q_mean_ = Q.mean(axis=0)
        scale = Q.std(axis=0)
        self.q_scale_ = np.where(scale > 0, scale, 1.0)
        self.coef_, self.intercept_ = ridge_solve((Q - self.q_mean_) / self.q_scale_, y,
                                                  self.alpha)

    def _predict(self, X: np.ndarray, return_std: bool) -> tuple[np.ndarray, None]:
        Q = (quadratic_features(X) - self.q_mean_) / self.q_scale_
        return Q @ self.coef_ + self.intercept_, None

    def _state(self, directory: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta, arrays = super()._state(directory)
        return meta, {**arrays, "q_mean": self.q_mean_, "q_scale": self.q_scale_}

    def _set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray],
                   directory: Path) -> None:
        super()._set_state(meta, arrays, directory)
        self.q_mean_ = arrays["q_mean"]
        self.q_scale_ = arrays["q_scale"]
