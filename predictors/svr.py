"""Support vector regression with an RBF kernel (scikit-learn's libsvm fit).

Only the fitted arrays are kept (support vectors, dual coefficients, intercept, gamma)
and the prediction is computed here from them, so a saved SVR needs no pickle and
predicts bit-for-bit the same after loading.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from nas.predictors._base import PREDICTORS, Predictor


@PREDICTORS.register("svr", description="RBF support vector regression, no uncertainty")
class SVRPredictor(Predictor):
    """epsilon-SVR with kernel ``exp(-gamma * |x - x'|^2)``.

    Args:
        C: inverse regularisation strength.
        epsilon: the width of the insensitive tube, in standardised target units.
        gamma: kernel width; ``None`` is scikit-learn's ``"scale"`` (1 / (d * var(X))).
        log_target: see :class:`~nas.predictors.Predictor`.
        seed: unused (libsvm's fit is deterministic); kept for a uniform interface.
    """

    name = "svr"

    def __init__(self, *, C: float = 10.0, epsilon: float = 0.05, gamma: float | None = None,
                 log_target: bool = False, seed: int = 0) -> None:
        self.C = C
        self.epsilon = epsilon
        self.gamma = gamma
        self.log_target = log_target
        self.seed = seed

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        from sklearn.svm import SVR

        var = float(X.var())
        gamma = self.gamma if self.gamma is not None else 1.0 / (X.shape[1] * (var or 1.0))
        model = SVR(kernel="rbf", C=self.C, epsilon=self.epsilon, gamma=gamma).fit(X, y)
        self.gamma_ = float(gamma)
        self.support_vectors_ = np.asarray(model.support_vectors_, dtype=float)
        self.dual_coef_ = np.asarray(model.dual_coef_, dtype=float).ravel()
        self.intercept_ = float(model.intercept_[0])

    def _predict(self, X: np.ndarray, return_std: bool) -> tuple[np.ndarray, None]:
        sq = (
            (X**2).sum(axis=1)[:, None]
            + (self.support_vectors_**2).sum(axis=1)[None, :]
            - 2.0 * X @ self.support_vectors_.T
        )
        kernel = np.exp(-self.gamma_ * np.maximum(sq, 0.0))
        return kernel @ self.dual_coef_ + self.intercept_, None

    def _state(self, directory: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return ({"gamma": self.gamma_, "intercept": self.intercept_},
                {"support_vectors": self.support_vectors_, "dual_coef": self.dual_coef_})

    def _set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray],
                   directory: Path) -> None:
        self.gamma_ = float(meta["gamma"])
        self.intercept_ = float(meta["intercept"])
        self.support_vectors_ = arrays["support_vectors"]
        self.dual_coef_ = arrays["dual_coef"]
