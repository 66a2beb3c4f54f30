"""Model selection by k-fold cross-validation over the registered predictors.

Which model is best depends on the data size: ridge and GP win with 20 samples, trees
and MLPs with thousands. ``auto`` tries each candidate on the same seeded folds, scores
the pooled out-of-fold predictions (pooling keeps rank metrics meaningful when a fold
holds only four rows) and refits the winner on all rows.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from nas.predictors._base import PREDICTORS, Predictor
from nas.predictors._metrics import kendall_tau, mape, rmse, spearman

logger = logging.getLogger(__name__)

# mlp is left out by default: it is the slowest to cross-validate and, measured on
# NAS-Bench-201 with 20-100 samples, never the best (benchmarks/bench_predictors.py).
DEFAULT_CANDIDATES = ("ridge", "svr", "gp", "xgb")
# metric name -> (function, higher is better)
METRICS = {"spearman": (spearman, True), "kendall_tau": (kendall_tau, True),
           "rmse": (rmse, False), "mape": (mape, False)}
INNER_DIR = "chosen"


@PREDICTORS.register("auto", description="picks a model by k-fold cross-validation")
class AutoPredictor(Predictor):
    """Cross-validates ``candidates`` and keeps the best by ``metric``.

    Args:
        candidates: registry names to try, in tie-break order.
        folds: number of CV folds (capped at the number of rows).
        metric: ``spearman`` (default: a search needs the ranking), ``kendall_tau``,
            ``rmse`` or ``mape``.
        log_target: passed to every candidate.
        seed: shuffles the folds and seeds every candidate.

    Fitted attributes: ``chosen_`` (name), ``cv_scores_`` (name -> score),
    ``predictor_`` (the refitted winner).
    """

    name = "auto"
    _scales = False

    def __init__(self, *, candidates: tuple[str, ...] = DEFAULT_CANDIDATES, folds: int = 5,
                 metric: str = "spearman", log_target: bool = False, seed: int = 0) -> None:
        self.candidates = candidates
        self.folds = folds
        self.metric = metric
        self.log_target = log_target
        self.seed = seed

    @property  # type: ignore[override]
    def has_std(self) -> bool:
        return bool(getattr(self, "predictor_", None)) and self.predictor_.has_std

    def _make(self, name: str) -> Predictor:
        return PREDICTORS.create(name, log_target=self.log_target, seed=self.seed)

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {sorted(METRICS)}, got {self.metric!r}")
        candidates = list(self.candidates)
        bad = [c for c in candidates if c == "auto" or c not in PREDICTORS]
        if not candidates or bad:
            raise ValueError(f"candidates must be predictor names other than auto "
                             f"({', '.join(PREDICTORS.names())}), got {candidates}")
        n = X.shape[0]
        folds = min(self.folds, n)
        self.cv_scores_: dict[str, float] = {}
        if n < 4 or folds < 2:
            logger.info("auto: %d rows are too few to cross-validate; using %s", n, candidates[0])
            self.chosen_ = candidates[0]
        else:
            order = np.random.default_rng(self.seed).permutation(n)
            splits = np.array_split(order, folds)
            fn, higher = METRICS[self.metric]
            for name in candidates:
                oof = np.empty(n)
                for test in splits:
                    train = np.setdiff1d(order, test)
                    oof[test] = self._make(name).fit(X[train], y[train]).predict(X[test])
                self.cv_scores_[name] = float(fn(y, oof))
            sign = 1.0 if higher else -1.0
            # max() keeps the first of equal scores: ties go to the earlier candidate.
            self.chosen_ = max(candidates, key=lambda c: sign * self.cv_scores_[c])
            logger.info("auto: CV %s %s -> %s", self.metric, self.cv_scores_, self.chosen_)
        self.predictor_ = self._make(self.chosen_).fit(X, y)

    def _predict(self, X: np.ndarray, return_std: bool) -> tuple[np.ndarray, np.ndarray | None]:
        if return_std:
            return self.predictor_.predict(X, return_std=True)
        return self.predictor_.predict(X), None

    def _state(self, directory: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        self.predictor_.save(directory / INNER_DIR)
        return {"chosen": self.chosen_, "cv_scores": self.cv_scores_, "inner": INNER_DIR}, {}

    def _set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray],
                   directory: Path) -> None:
        self.chosen_ = meta["chosen"]
        self.cv_scores_ = dict(meta["cv_scores"])
        self.predictor_ = Predictor.load(directory / meta["inner"])
