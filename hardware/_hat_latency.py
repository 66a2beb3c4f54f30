"""Per-device latency models fitted on HAT's measurements (fairseq, WMT'14 En-De space).

:func:`fit_hat_device` fits the structured model of :mod:`nas.hardware._latency_model`
to one device's rows on a seeded 80 % training split and scores it on the other 20 %.
The fit takes a fraction of a second and is done once per process (cached); nothing
happens at import time.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from nas.hardware._hat_data import (
    HAT_WORKLOAD,
    NOISY_ENCODER_FACTOR,
    HATDevice,
    load_hat_measurements,
)
from nas.hardware._latency_model import (
    MEGA,
    LatencyCoefficients,
    fit_split_coefficients,
    heldout_split,
    regression_errors,
)
from nas.hardware._macs import FAIRSEQ_INCREMENTAL, Seq2SeqShape, seq2seq_macs
from nas.hardware._shape_correction import ShapeCorrection

SPLIT_SEED = 0
TEST_FRACTION = 0.2


@dataclass(frozen=True)
class DeviceFit:
    """A device's fitted coefficients, their held-out error and the measured range.

    Attributes:
        coefficients: fairseq's costs on this device (fitted on the training split).
        correction: the learned correction of the structured total inside the measured
            shapes (fitted on the same split).
        heldout: errors of the corrected total (encoder + decoder) latency on the
            held-out split: ``mape`` (fraction), ``rmse_ms``, ``kendall_tau``, ``n``.
        heldout_structured_mape: the same MAPE of the structured model alone.
        heldout_encoder_mape, heldout_decoder_mape: the same MAPE for each part.
        dropped: noisy rows left out before splitting.
        encoder_mmacs, decoder_mmacs_per_step, latency_ms: (min, max) over the
            measured rows, i.e. the range where the model interpolates.
    """

    device: HATDevice
    coefficients: LatencyCoefficients
    correction: ShapeCorrection
    heldout: dict[str, float]
    heldout_structured_mape: float
    heldout_encoder_mape: float
    heldout_decoder_mape: float
    n_train: int
    dropped: int
    encoder_mmacs: tuple[float, float]
    decoder_mmacs_per_step: tuple[float, float]
    latency_ms: tuple[float, float]


@functools.cache
def fit_hat_device(device: str) -> DeviceFit:
    """Fit and score the structured model on ``device`` (``rpi4``, ``xeon``, ``titanxp``).

    Raises:
        ValueError: an unknown device.
    """
    data = load_hat_measurements(device)
    shapes = data.shapes()
    train, test = heldout_split(len(shapes), test_fraction=TEST_FRACTION, seed=SPLIT_SEED)
    coef = fit_split_coefficients(
        [shapes[i] for i in train], HAT_WORKLOAD, data.encoder_ms[train], data.decoder_ms[train]
    )
    correction = ShapeCorrection.fit(
        [shapes[i] for i in train], data.total_ms[train],
        [coef.breakdown(shapes[i], HAT_WORKLOAD).total_ms for i in train],
    )
    parts = [coef.breakdown(shapes[i], HAT_WORKLOAD) for i in test]
    enc_pred = np.array([p.encoder_ms for p in parts])
    dec_pred = np.array([p.decoder_ms for p in parts])
    corrected = np.array([p.total_ms * correction.factor(shapes[i])
                          for p, i in zip(parts, test, strict=True)])
    macs = [seq2seq_macs(s, HAT_WORKLOAD, FAIRSEQ_INCREMENTAL) for s in shapes]
    enc_mmacs = np.array([m.encoder for m in macs]) / MEGA
    step_mmacs = np.array([m.decoder_per_step for m in macs]) / MEGA
    return DeviceFit(
        device=data.device,
        coefficients=coef,
        correction=correction,
        heldout=regression_errors(data.total_ms[test], corrected),
        heldout_structured_mape=regression_errors(data.total_ms[test],
                                                  enc_pred + dec_pred)["mape"],
        heldout_encoder_mape=regression_errors(data.encoder_ms[test], enc_pred)["mape"],
        heldout_decoder_mape=regression_errors(data.decoder_ms[test], dec_pred)["mape"],
        n_train=len(train),
        dropped=data.dropped,
        encoder_mmacs=(float(enc_mmacs.min()), float(enc_mmacs.max())),
        decoder_mmacs_per_step=(float(step_mmacs.min()), float(step_mmacs.max())),
        latency_ms=(float(data.total_ms.min()), float(data.total_ms.max())),
    )


def predict_fairseq_ms(fit: DeviceFit, shape: Seq2SeqShape) -> float:
    """fairseq's total latency of ``shape`` on the fitted device for HAT's workload: the
    structured model times the correction (1 outside the measured shapes)."""
    return fit.coefficients.breakdown(shape, HAT_WORKLOAD).total_ms * fit.correction.factor(
        shape)


def dropped_rows_note(fit: DeviceFit) -> str | None:
    """A plain sentence on the rows left out of the fit, if any."""
    if not fit.dropped:
        return None
    return (
        f"{fit.dropped} noisy rows of HAT's {fit.device.hardware} data (encoder latency "
        f"over {NOISY_ENCODER_FACTOR:g}x the median) were dropped before fitting."
    )
