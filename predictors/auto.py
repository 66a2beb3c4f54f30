"""Model selection by k-fold cross-validation over the registered predictors.

Which model is best depends on the data size: ridge on a few counts wins with 20
samples, trees and MLPs with thousands. ``auto`` tries each candidate, on every column
and on each named column subset (``feature_sets``, e.g. NAS-Bench-201's operation
counts), on the same seeded folds, scores the pooled out-of-fold predictions (pooling
keeps rank metrics meaningful when a fold holds only four rows) and refits the winner
on all rows.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nas.predictors._base import PREDICTORS, Predictor
from nas.predictors._metrics import kendall_tau, mape, rmse, spearman

logger = logging.getLogger(__name__)

# mlp is left out by default: it is the slowest to cross-validate and, measured on
# NAS-Bench-201 with 20-100 samples, never the best (benchmarks/bench_predictors.py).
# ridge and quadratic are the baselines auto must never lose to
# (benchmarks/bench_predictor_fewshot.py).
DEFAULT_CANDIDATES = ("ridge", "quadratic", "svr", "gp", "xgb")
# metric name -> (function, higher is better)
METRICS = {"spearman": (spearman, True), "kendall_tau": (kendall_tau, True),
           "rmse": (rmse, False), "mape": (mape, False)}
INNER_DIR = "chosen"
SUBSET_MARK = "@"  # "ridge@op-counts": ridge on the columns of feature set op-counts


@PREDICTORS.register("auto", description="picks a model by k-fold cross-validation")
class AutoPredictor(Predictor):
    """Cross-validates ``candidates`` (on each feature set, then on all columns) and keeps
    the first whose score is within ``tolerance`` (one standard error) of the best by
    ``metric``.

    Args:
        candidates: registry names to try, simplest first.
        folds: number of CV folds (capped at the number of rows).
        metric: ``spearman`` (default: a search needs the ranking), ``kendall_tau``,
            ``rmse`` or ``mape``.
        feature_sets: name -> column indices; each candidate is also tried on those
            columns alone (an encoder's ``feature_sets``), smallest first.
        tolerance: how much better than an earlier trial a later one must score, in the
            metric's units, to be chosen; ``None``: one standard error of the best score
            (:func:`standard_error`); 0: the best, ties to the earlier.
        log_target: passed to every candidate.
        seed: shuffles the folds and seeds every candidate.

    Fitted attributes: ``chosen_`` (name, ``model@set`` for a feature set),
    ``cv_scores_`` (name -> score), ``tolerance_`` (the one used; ``None`` without CV),
    ``columns_`` (the winner's columns, ``None`` for
    all), ``predictor_`` (the refitted winner).
    """

    name = "auto"
    _scales = False

    def __init__(self, *, candidates: tuple[str, ...] = DEFAULT_CANDIDATES, folds: int = 5,
                 metric: str = "spearman",
                 feature_sets: Mapping[str, Sequence[int]] | None = None,
                 tolerance: float | None = None, log_target: bool = False,
                 seed: int = 0) -> None:
        self.candidates = candidates
        self.folds = folds
        self.metric = metric
        self.feature_sets = feature_sets
        self.tolerance = tolerance
        self.log_target = log_target
        self.seed = seed

    @property  # type: ignore[override]
    def has_std(self) -> bool:
        return bool(getattr(self, "predictor_", None)) and self.predictor_.has_std

    def _make(self, name: str) -> Predictor:
        return PREDICTORS.create(name, log_target=self.log_target, seed=self.seed)

    def _trials(self, n_features: int) -> dict[str, tuple[str, list[int] | None]]:
        """Label -> (candidate, columns or None for all), simplest first."""
        candidates = list(self.candidates)
        bad = [c for c in candidates if c == "auto" or c not in PREDICTORS]
        if not candidates or bad:
            raise ValueError(f"candidates must be predictor names other than auto "
                             f"({', '.join(PREDICTORS.names())}), got {candidates}")
        trials: dict[str, tuple[str, list[int] | None]] = {}
        for set_name, columns in (self.feature_sets or {}).items():
            columns = [int(c) for c in columns]
            if not columns or min(columns) < 0 or max(columns) >= n_features:
                raise ValueError(f"feature set {set_name!r} must list column indices in "
                                 f"0..{n_features - 1}, got {columns}")
            trials.update({f"{c}{SUBSET_MARK}{set_name}": (c, columns) for c in candidates})
        trials.update({c: (c, None) for c in candidates})
        return trials

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {sorted(METRICS)}, got {self.metric!r}")
        if self.tolerance is not None and not self.tolerance >= 0:
            raise ValueError(f"tolerance must be >= 0, got {self.tolerance!r}")
        trials = self._trials(X.shape[1])
        n = X.shape[0]
        folds = min(self.folds, n)
        self.cv_scores_: dict[str, float] = {}
        self.tolerance_: float | None = None
        if n < 4 or folds < 2:
            self.chosen_ = next(iter(trials))
            logger.info("auto: %d rows are too few to cross-validate; using %s", n,
                        self.chosen_)
        else:
            order = np.random.default_rng(self.seed).permutation(n)
            splits = np.array_split(order, folds)
            fn, higher = METRICS[self.metric]
            oofs = {}
            for label, (name, columns) in trials.items():
                Xc = X if columns is None else X[:, columns]
                oof = np.empty(n)
                for test in splits:
                    train = np.setdiff1d(order, test)
                    oof[test] = self._make(name).fit(Xc[train], y[train]).predict(Xc[test])
                self.cv_scores_[label] = float(fn(y, oof))
                oofs[label] = oof
            self.tolerance_ = self.tolerance
            if self.tolerance_ is None:
                best = choose(self.cv_scores_, higher=higher, tolerance=0.0)
                self.tolerance_ = standard_error(self.metric, y, oofs[best])
            self.chosen_ = choose(self.cv_scores_, higher=higher, tolerance=self.tolerance_)
            logger.info("auto: CV %s %s -> %s", self.metric, self.cv_scores_, self.chosen_)
        name, self.columns_ = trials[self.chosen_]
        self.predictor_ = self._make(name).fit(self._columns(X), y)

    def _columns(self, X: np.ndarray) -> np.ndarray:
        return X if self.columns_ is None else X[:, self.columns_]

    def _predict(self, X: np.ndarray, return_std: bool) -> tuple[np.ndarray, np.ndarray | None]:
        if return_std:
            return self.predictor_.predict(self._columns(X), return_std=True)
        return self.predictor_.predict(self._columns(X)), None

    def _state(self, directory: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        self.predictor_.save(directory / INNER_DIR)
        return {"chosen": self.chosen_, "cv_scores": self.cv_scores_, "inner": INNER_DIR,
                "columns": self.columns_, "tolerance": self.tolerance_}, {}

    def _set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray],
                   directory: Path) -> None:
        self.chosen_ = meta["chosen"]
        self.cv_scores_ = dict(meta["cv_scores"])
        # Predictors saved before feature sets existed used every column.
        self.columns_ = meta.get("columns")
        self.tolerance_ = meta.get("tolerance")
        self.predictor_ = Predictor.load(directory / meta["inner"])


def choose(scores: Mapping[str, float], *, higher: bool, tolerance: float) -> str:
    """The first of ``scores`` (in order) within ``tolerance`` of the best score."""
    sign = 1.0 if higher else -1.0
    best = max(sign * v for v in scores.values())
    return next(name for name, v in scores.items() if sign * v >= best - tolerance)


def standard_error(metric: str, y: np.ndarray, pred: np.ndarray) -> float:
    """The standard error of ``metric`` of predictions ``pred`` of ``y`` (n rows).

    Rank correlations by their Fisher z-transform, whose variance is 1.06 / (n - 3) for
    Spearman and 0.437 / (n - 4) for Kendall (Fieller, Hartley and Pearson, 1957),
    mapped back by the derivative ``1 - r^2``; MAPE and RMSE as means over rows (RMSE by
    the delta method from the mean squared error).
    """
    n = len(y)
    if metric in ("spearman", "kendall_tau"):
        return correlation_standard_error(metric, METRICS[metric][0](y, pred), n)
    if metric == "mape":
        return float(np.std(np.abs(y - pred) / np.abs(y), ddof=1) / np.sqrt(n))
    squared = (y - pred) ** 2
    root = np.sqrt(squared.mean())
    return float(np.std(squared, ddof=1) / np.sqrt(n) / (2.0 * root)) if root > 0 else 0.0


def correlation_standard_error(metric: str, r: float, n: int) -> float:
    """The standard error of a ``spearman`` or ``kendall_tau`` of ``r`` on ``n`` rows."""
    variance = 1.06 / max(n - 3, 1) if metric == "spearman" else 0.437 / max(n - 4, 1)
    return float((1.0 - r * r) * np.sqrt(variance))
