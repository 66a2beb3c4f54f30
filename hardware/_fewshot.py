"""Few-shot latency on a new device, adapted from devices already measured or modelled.

Latency on one device predicts latency on another well, much better than the
architecture alone does from a handful of samples: the same operations dominate
everywhere, only their relative costs differ. So with K measured configs of a new
device, we fit

    log(latency_new) = b + sum_j w_j * log(latency_ref_j)

over the reference devices ``j`` with every ``w_j >= 0`` (non-negative least squares),
and predict every other config from its reference latencies. Working in logs makes the
weights exponents of a power law, so a device twice as fast on everything is one
intercept away from its reference. The exponents are non-negative because a config
that is slower on every reference is not faster on the new device; with 20 configs that
constraint alone keeps the fit from chasing noise with opposite-signed weights on
correlated references, better than a ridge penalty chosen by leave-one-out CV (which
``alphas`` still offers). References can be measurements (NAS-Bench-201's five
devices), a fitted model per device (``rpi4``, ``xeon``, ``titanxp``), or both. On
NAS-Bench-201, 20 measured cells give a Spearman of at least 0.95 on the other 15,605
for every device and seed (``benchmarks/bench_predictor_fewshot.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

ALPHAS = (0.0,)
"""Ridge penalties (on standardised log references); several are chosen among by
leave-one-out CV. 0: the non-negative exponents alone."""


class FewShotLatency:
    """A new device's latency as a power law of reference devices' latencies.

    Args:
        alphas: ridge penalties (>= 0) to choose from by leave-one-out CV.

    Attributes (after :meth:`fit`):
        intercept_, weights_: the fitted law on log latencies.
        alpha_: the penalty CV chose.
    """

    def __init__(self, *, alphas: Sequence[float] = ALPHAS) -> None:
        if not alphas or min(alphas) < 0:
            raise ValueError(f"alphas must be penalties >= 0, got {list(alphas)!r}")
        self.alphas = tuple(float(a) for a in alphas)

    def fit(self, reference_ms: np.ndarray, latency_ms: np.ndarray) -> FewShotLatency:
        """Fit on K configs: ``reference_ms`` (K, n_references) and the new device's
        measured ``latency_ms`` (K,).

        Raises:
            ValueError: fewer than 3 configs, mismatched shapes, or a latency that is
                not a positive finite number.
        """
        X, y = self._logs(reference_ms), _log_positive(latency_ms, "latency_ms")
        if X.shape[0] != y.shape[0]:
            raise ValueError(f"reference_ms has {X.shape[0]} rows but latency_ms has "
                             f"{y.shape[0]}; give one row per measured config")
        if len(y) < 3:
            raise ValueError(f"few-shot adaptation needs at least 3 measured configs, got "
                             f"{len(y)}")
        scale = X.std(axis=0)
        scale[scale == 0] = 1.0
        Z = X / scale
        self.alpha_ = self.alphas[0]
        if len(self.alphas) > 1:
            self.alpha_ = min(self.alphas, key=lambda a: _loo_error(Z, y, a))
        weights, self.intercept_ = _nonnegative_ridge(Z, y, self.alpha_)
        self.weights_ = weights / scale
        return self

    def predict(self, reference_ms: np.ndarray) -> np.ndarray:
        """The new device's latency (ms) of configs with these reference latencies."""
        if not hasattr(self, "weights_"):
            raise RuntimeError("call fit() before predict()")
        X = self._logs(reference_ms)
        if X.shape[1] != len(self.weights_):
            raise ValueError(f"reference_ms has {X.shape[1]} columns; the model was fitted "
                             f"on {len(self.weights_)} references")
        return np.exp(self.intercept_ + X @ self.weights_)

    @staticmethod
    def _logs(reference_ms: np.ndarray) -> np.ndarray:
        X = np.asarray(reference_ms, dtype=float)
        if X.ndim != 2 or X.shape[1] == 0:
            raise ValueError(f"reference_ms must be (configs, references), got shape "
                             f"{X.shape}")
        return _log_positive(X, "reference_ms")


def _log_positive(values: np.ndarray, name: str) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    if not (np.isfinite(values).all() and (values > 0).all()):
        raise ValueError(f"{name} must hold positive finite latencies (ms)")
    return np.log(values)


def _nonnegative_ridge(X: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
    """Weights >= 0 and a free intercept minimising ``|y - b - X w|^2 + alpha |w|^2``."""
    from scipy.optimize import nnls

    center, mean = X.mean(axis=0), y.mean()
    d = X.shape[1]
    weights, _ = nnls(np.vstack([X - center, np.sqrt(alpha) * np.eye(d)]),
                      np.concatenate([y - mean, np.zeros(d)]))
    return weights, float(mean - center @ weights)


def _loo_error(X: np.ndarray, y: np.ndarray, alpha: float) -> float:
    """Leave-one-out squared error of :func:`_nonnegative_ridge` with ``alpha``."""
    error = 0.0
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        weights, intercept = _nonnegative_ridge(X[keep], y[keep], alpha)
        error += float(intercept + X[i] @ weights - y[i]) ** 2
    return error
