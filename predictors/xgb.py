"""Gradient-boosted trees (XGBoost), saved in XGBoost's own UBJSON model format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from nas.predictors._base import PREDICTORS, Predictor

MODEL_FILE = "xgb.ubj"


@PREDICTORS.register("xgb", description="XGBoost gradient-boosted trees, no uncertainty")
class XGBPredictor(Predictor):
    """Boosted regression trees; strong with many samples, weak with a handful.

    Args:
        n_estimators: XGBoost's number of trees.
        max_depth: XGBoost's tree depth.
        learning_rate: XGBoost's shrinkage.
        subsample: XGBoost's row subsampling fraction.
        n_jobs: threads (1 by default: the data are small and results stay reproducible).
        log_target: see :class:`~nas.predictors.Predictor`.
        seed: XGBoost's ``random_state`` (row subsampling).
    """

    name = "xgb"

    def __init__(self, *, n_estimators: int = 300, max_depth: int = 4,
                 learning_rate: float = 0.05, subsample: float = 0.8, n_jobs: int = 1,
                 log_target: bool = False, seed: int = 0) -> None:
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.subsample = subsample
        self.n_jobs = n_jobs
        self.log_target = log_target
        self.seed = seed

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        import xgboost

        self.model_ = xgboost.XGBRegressor(
            n_estimators=self.n_estimators, max_depth=self.max_depth,
            learning_rate=self.learning_rate, subsample=self.subsample,
            n_jobs=self.n_jobs, random_state=self.seed, tree_method="hist",
        ).fit(X, y)

    def _predict(self, X: np.ndarray, return_std: bool) -> tuple[np.ndarray, None]:
        return np.asarray(self.model_.predict(X), dtype=float), None

    def _state(self, directory: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        self.model_.save_model(str(directory / MODEL_FILE))
        return {"model_file": MODEL_FILE}, {}

    def _set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray],
                   directory: Path) -> None:
        import xgboost

        path = directory / meta["model_file"]
        if not path.is_file():
            raise ValueError(f"cannot read the XGBoost model: {path} is missing")
        self.model_ = xgboost.XGBRegressor(n_jobs=self.n_jobs)
        try:
            self.model_.load_model(str(path))
        except xgboost.core.XGBoostError as err:
            raise ValueError(f"cannot read the XGBoost model {path}: {err}") from None
