"""Few-shot latency on a new device, adapted from devices already measured or modelled.

Latency on one device predicts latency on another well, much better than the
architecture alone does from a handful of samples: the same operations dominate
everywhere, only their relative costs differ. So with K measured configs of a new
device, we fit

    log(latency_new) = b + sum_j w_j * log(latency_ref_j)

over the reference devices ``j`` (ridge, the penalty picked by leave-one-out CV on the
K rows), and predict every other config from its reference latencies. Working in logs
makes the weights exponents of a power law, so a device twice as fast on everything is
one intercept away from its reference. References can be measurements (NAS-Bench-201's
five devices), a fitted model per device (``rpi4``, ``xeon``, ``titanxp``), or both.
On NAS-Bench-201, 5 measured cells give a Spearman of 0.94-0.97 on the other 15,620 for
every device (``benchmarks/bench_fewshot_latency.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

ALPHAS = tuple(np.logspace(-3, 3, 13))
"""Ridge penalties tried by leave-one-out CV (on standardised log references)."""


class FewShotLatency:
    """A new device's latency as a power law of reference devices' latencies.

    Args:
        alphas: ridge penalties to choose from by leave-one-out CV.

    Attributes (after :meth:`fit`):
        intercept_, weights_: the fitted law on log latencies.
        alpha_: the penalty CV chose.
    """

    def __init__(self, *, alphas: Sequence[float] = ALPHAS) -> None:
        if not alphas or min(alphas) <= 0:
            raise ValueError(f"alphas must be positive penalties, got {list(alphas)!r}")
        self.alphas = tuple(float(a) for a in alphas)

    def fit(self, reference_ms: np.ndarray, latency_ms: np.ndarray) -> FewShotLatency:
        """Fit on K configs: ``reference_ms`` (K, n_references) and the new device's
        measured ``latency_ms`` (K,).

        Raises:
            ValueError: fewer than 3 configs, mismatched shapes, or a latency that is
                not a positive finite number.
        """
        from sklearn.linear_model import RidgeCV

        X, y = self._logs(reference_ms), _log_positive(latency_ms, "latency_ms")
        if X.shape[0] != y.shape[0]:
            raise ValueError(f"reference_ms has {X.shape[0]} rows but latency_ms has "
                             f"{y.shape[0]}; give one row per measured config")
        if len(y) < 3:
            raise ValueError(f"few-shot adaptation needs at least 3 measured configs, got "
                             f"{len(y)}")
        self.center_, self.scale_ = X.mean(axis=0), X.std(axis=0)
        self.scale_[self.scale_ == 0] = 1.0
        model = RidgeCV(alphas=list(self.alphas)).fit((X - self.center_) / self.scale_, y)
        self.weights_ = model.coef_ / self.scale_
        self.intercept_ = float(model.intercept_ - self.center_ @ self.weights_)
        self.alpha_ = float(model.alpha_)
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
