"""Bootstrap ensemble: any base model, with the spread of its members as uncertainty."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from nas.predictors._base import PREDICTORS, Predictor


@PREDICTORS.register("ensemble", description="bootstrap ensemble of a base model, gives std")
class EnsemblePredictor(Predictor):
    """``n_members`` copies of ``base`` fitted on bootstrap resamples; mean and std of them.

    Args:
        base: the registry name of the member model (not ``ensemble`` or ``auto``).
        n_members: ensemble size.
        log_target: see :class:`~nas.predictors.Predictor`.
        seed: seeds the resamples and (``seed + i``) each member.
    """

    name = "ensemble"
    has_std = True

    def __init__(self, *, base: str = "xgb", n_members: int = 8, log_target: bool = False,
                 seed: int = 0) -> None:
        self.base = base
        self.n_members = n_members
        self.log_target = log_target
        self.seed = seed

    def _check(self) -> None:
        if self.base in ("ensemble", "auto") or self.base not in PREDICTORS:
            known = ", ".join(n for n in PREDICTORS.names() if n not in ("ensemble", "auto"))
            raise ValueError(f"ensemble base must be one of {known}, got {self.base!r}")
        if self.n_members < 2:
            raise ValueError(f"n_members must be >= 2, got {self.n_members}")

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        self._check()
        rng = np.random.default_rng(self.seed)
        n = X.shape[0]
        self.members_: list[Predictor] = []
        for i in range(self.n_members):
            rows = rng.integers(n, size=n)
            while np.unique(rows).size < 2:  # a resample needs two distinct rows
                rows = rng.integers(n, size=n)
            member = PREDICTORS.create(self.base, seed=self.seed + i)
            self.members_.append(member.fit(X[rows], y[rows]))

    def _predict(self, X: np.ndarray, return_std: bool) -> tuple[np.ndarray, np.ndarray | None]:
        preds = np.stack([m.predict(X) for m in self.members_])  # (members, n)
        return preds.mean(axis=0), preds.std(axis=0) if return_std else None

    def _state(self, directory: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        names = [f"member{i}" for i in range(len(self.members_))]
        for name, member in zip(names, self.members_):
            member.save(directory / name)
        return {"members": names}, {}

    def _set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray],
                   directory: Path) -> None:
        self.members_ = [Predictor.load(directory / name) for name in meta["members"]]
