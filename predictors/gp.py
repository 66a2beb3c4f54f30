"""Gaussian-process regression: a calibrated uncertainty for few-sample settings.

scikit-learn fits the kernel hyper-parameters; we save those (``theta``) and the
training data, and rebuild the posterior on load with the optimiser off — the same
Cholesky factorisation on the same numbers, hence the same predictions, with no pickle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from nas.predictors._base import PREDICTORS, Predictor


@PREDICTORS.register("gp", description="Gaussian process (RBF + noise), gives std")
class GPPredictor(Predictor):
    """GP with kernel ``C * RBF(length_scale) + White(noise)`` on standardised data.

    Args:
        ard: one length scale per feature (slower; better with few relevant features).
        n_restarts: extra random restarts of the marginal-likelihood optimiser.
        log_target: see :class:`~nas.predictors.Predictor`.
        seed: seeds the restarts.
    """

    name = "gp"
    has_std = True

    def __init__(self, *, ard: bool = False, n_restarts: int = 2, log_target: bool = False,
                 seed: int = 0) -> None:
        self.ard = ard
        self.n_restarts = n_restarts
        self.log_target = log_target
        self.seed = seed

    def _kernel(self, d: int) -> Any:
        from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel

        length = np.full(d, np.sqrt(d)) if self.ard else float(np.sqrt(d))
        return (ConstantKernel(1.0, (1e-3, 1e3)) * RBF(length, (1e-2, 1e3))
                + WhiteKernel(1e-2, (1e-6, 1.0)))

    def _posterior(self, X: np.ndarray, y: np.ndarray, theta: np.ndarray) -> Any:
        from sklearn.gaussian_process import GaussianProcessRegressor

        kernel = self._kernel(X.shape[1]).clone_with_theta(theta)
        return GaussianProcessRegressor(kernel, optimizer=None, alpha=1e-10).fit(X, y)

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        import warnings

        from sklearn.exceptions import ConvergenceWarning
        from sklearn.gaussian_process import GaussianProcessRegressor

        with warnings.catch_warnings():
            # Bounds reached on tiny data sets are expected; the fit is still usable.
            warnings.simplefilter("ignore", ConvergenceWarning)
            fitted = GaussianProcessRegressor(
                self._kernel(X.shape[1]), alpha=1e-10, n_restarts_optimizer=self.n_restarts,
                random_state=self.seed,
            ).fit(X, y)
        self.theta_ = np.asarray(fitted.kernel_.theta, dtype=float)
        self.X_train_, self.y_train_ = X.copy(), y.copy()
        # Predict from the rebuilt posterior, so that a loaded GP is identical.
        self.gp_ = self._posterior(self.X_train_, self.y_train_, self.theta_)

    def _predict(self, X: np.ndarray, return_std: bool) -> tuple[np.ndarray, np.ndarray | None]:
        if return_std:
            mean, std = self.gp_.predict(X, return_std=True)
            return np.asarray(mean, dtype=float), np.asarray(std, dtype=float)
        return np.asarray(self.gp_.predict(X), dtype=float), None

    def _state(self, directory: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {}, {"theta": self.theta_, "X_train": self.X_train_, "y_train": self.y_train_}

    def _set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray],
                   directory: Path) -> None:
        self.theta_ = arrays["theta"]
        self.X_train_, self.y_train_ = arrays["X_train"], arrays["y_train"]
        self.gp_ = self._posterior(self.X_train_, self.y_train_, self.theta_)
