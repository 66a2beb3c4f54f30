"""Fit a registered predictor on some rows of a CSV, as ``nas predictor fit`` does.

One function for the command and the benchmarks, so that a benchmark measures exactly
what a user gets: the encoder is fitted on the chosen rows, and ``auto`` also tries the
encoder's small feature sets (NAS-Bench-201's operation counts).
"""

from __future__ import annotations

import numpy as np

from nas.predictors._base import Predictor, create_predictor
from nas.predictors._features import CSVTable, Encoder


def sample_rows(n: int, samples: int | None, seed: int) -> np.ndarray:
    """The sorted indices of ``samples`` rows of ``n`` drawn by ``seed`` (all without)."""
    if samples is None:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=samples, replace=False))


def fit_predictor(table: CSVTable, rows: np.ndarray, *, encoder: Encoder, model: str,
                  target: str, seed: int, log_target: bool = False) -> Predictor:
    """Fit ``encoder`` and the predictor ``model`` on the rows ``rows`` of ``table``.

    Raises:
        UnknownNameError: an unknown model name (the message lists the known ones).
        ValueError: a bad table (see the encoder) or too few rows.
    """
    options = {"feature_sets": encoder.feature_sets} if model == "auto" else {}
    predictor = create_predictor(model, seed=seed, log_target=log_target, **options)
    train = table.subset(rows)
    encoder.fit(train)
    return predictor.fit(encoder.transform(train), train.target(target))
