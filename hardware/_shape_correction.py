"""A learned correction of the structured latency model, applied only where it was fitted.

The structured model (:mod:`nas.hardware._latency_model`) prices layers, steps and MACs
linearly, so it extrapolates sensibly far outside its data, but it misses what is not
linear: cache effects at some widths, kernels that change with the shape. A quadratic
ridge of a few shape features fitted to ``log(measured / structured)`` picks those up
inside the measured range (on HAT's three devices it cuts the held-out error, e.g. from
2.9% to 2.4% on the Raspberry Pi; ``benchmarks/bench_latency_models.py``). A quadratic
says nothing reliable outside that range, so there the correction is 1: a subnet
outside the box of measured shapes gets the structured model alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from nas.hardware._macs import Seq2SeqShape

FEATURES = ("encoder_embed_dim", "encoder_layers", "encoder_ffn_dim_mean",
            "decoder_embed_dim", "decoder_layers", "decoder_ffn_dim_mean",
            "decoder_ende_layers_mean")
"""What the correction sees of a shape (heads do not change a shape's MACs)."""

ALPHAS = tuple(np.logspace(-4, 3, 15))
"""Ridge penalties tried by leave-one-out CV."""


def shape_features(shape: Seq2SeqShape) -> np.ndarray:
    """The :data:`FEATURES` of one shape."""
    encoder, decoder = shape.encoder, shape.decoder
    return np.array([
        encoder[0].embed_dim, len(encoder), np.mean([layer.ffn_dim for layer in encoder]),
        decoder[0].embed_dim, len(decoder), np.mean([layer.ffn_dim for layer in decoder]),
        np.mean([layer.ende_layers for layer in decoder]),
    ], dtype=float)


@dataclass(frozen=True)
class ShapeCorrection:
    """``exp(quadratic ridge)`` of the shape features inside the fitted box, else 1.

    Attributes:
        low, high: the box of shape features seen in fitting.
        model: the fitted scikit-learn pipeline (standardise, degree-2 terms, ridge).
    """

    low: np.ndarray
    high: np.ndarray
    model: object

    @classmethod
    def fit(cls, shapes: Sequence[Seq2SeqShape], measured_ms: np.ndarray,
            structured_ms: np.ndarray) -> ShapeCorrection:
        """Fit on the log ratio of measured to structured latency of ``shapes``."""
        from sklearn.linear_model import RidgeCV
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import PolynomialFeatures, StandardScaler

        X = np.stack([shape_features(s) for s in shapes])
        ratio = np.log(np.asarray(measured_ms, dtype=float) / np.asarray(structured_ms))
        model = make_pipeline(StandardScaler(), PolynomialFeatures(2, include_bias=False),
                              StandardScaler(), RidgeCV(alphas=list(ALPHAS))).fit(X, ratio)
        return cls(low=X.min(axis=0), high=X.max(axis=0), model=model)

    def inside(self, shape: Seq2SeqShape) -> bool:
        """Whether ``shape`` lies in the box of shapes the correction was fitted on."""
        x = shape_features(shape)
        return bool(((x >= self.low) & (x <= self.high)).all())

    def factor(self, shape: Seq2SeqShape) -> float:
        """The multiplier for the structured model's latency of ``shape``."""
        if not self.inside(shape):
            return 1.0
        return float(np.exp(self.model.predict(shape_features(shape)[None, :])[0]))
