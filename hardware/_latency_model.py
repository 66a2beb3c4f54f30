"""A physically structured latency model of encoder-decoder inference, fitted by NNLS.

latency = encoder + decoder, with

    encoder = inference_ms + encoder_layer_ms * n_enc + encoder_ms_per_mmac * encoder MMACs
    decoder = decoder_layer_ms * n_dec + steps * (decoder_step_ms + decoder_layer_step_ms * n_dec)
              + decoder_ms_per_mmac * decoder MMACs

The overhead terms price what does not scale with width (Python, framework dispatch,
kernel launches: per layer, per step, per layer per step); the per-MAC terms price the
arithmetic. Every coefficient is non-negative (non-negative least squares), so a model
with more layers, steps or MACs is never predicted faster, and each coefficient can be
read and compared across devices. MACs come from :mod:`nas.hardware._macs`, so the same
coefficients apply to a workload other than the one measured.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from nas._task import Workload
from nas.hardware._macs import FAIRSEQ_INCREMENTAL, DecodingScheme, Seq2SeqShape, seq2seq_macs

MEGA = 1e6


@dataclass(frozen=True)
class LatencyCoefficients:
    """Coefficients of the structured model, in milliseconds.

    Attributes:
        encoder_layer_ms: overhead per encoder layer (per inference).
        encoder_ms_per_mmac: cost of one million encoder MACs.
        decoder_step_ms: overhead per decoder step, whatever the depth.
        decoder_layer_step_ms: overhead per decoder layer per step.
        decoder_ms_per_mmac: cost of one million decoder MACs.
        inference_ms: overhead per inference (only identifiable where the encoder
            depth varies; HAT's data always has 6 encoder layers, so it is 0 there and
            absorbed by ``encoder_layer_ms``).
        decoder_layer_ms: overhead per decoder layer once per inference (setting up
            its encoder-decoder keys and values; only identifiable where the step count
            varies; HAT's data always has 30 steps, so it is 0 there and absorbed by
            ``decoder_layer_step_ms``).
    """

    encoder_layer_ms: float
    encoder_ms_per_mmac: float
    decoder_step_ms: float
    decoder_layer_step_ms: float
    decoder_ms_per_mmac: float
    inference_ms: float = 0.0
    decoder_layer_ms: float = 0.0

    def breakdown(
        self, shape: Seq2SeqShape, workload: Workload, scheme: DecodingScheme = FAIRSEQ_INCREMENTAL
    ) -> LatencyBreakdown:
        """The predicted latency of one inference of ``workload``, term by term."""
        macs = seq2seq_macs(shape, workload, scheme)
        steps = workload.tgt_len
        return LatencyBreakdown(
            inference_ms=self.inference_ms,
            encoder_overhead_ms=self.encoder_layer_ms * shape.encoder_layers,
            encoder_compute_ms=self.encoder_ms_per_mmac * macs.encoder / MEGA,
            decoder_overhead_ms=self.decoder_layer_ms * shape.decoder_layers + steps * (
                self.decoder_step_ms + self.decoder_layer_step_ms * shape.decoder_layers),
            decoder_compute_ms=self.decoder_ms_per_mmac * macs.decoder / MEGA,
        )

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class LatencyBreakdown:
    """One prediction split into its terms (milliseconds)."""

    inference_ms: float
    encoder_overhead_ms: float
    encoder_compute_ms: float
    decoder_overhead_ms: float
    decoder_compute_ms: float

    @property
    def encoder_ms(self) -> float:
        return self.inference_ms + self.encoder_overhead_ms + self.encoder_compute_ms

    @property
    def decoder_ms(self) -> float:
        return self.decoder_overhead_ms + self.decoder_compute_ms

    @property
    def total_ms(self) -> float:
        return self.encoder_ms + self.decoder_ms


def encoder_design(
    shapes: Sequence[Seq2SeqShape], workloads: Sequence[Workload], scheme: DecodingScheme
) -> np.ndarray:
    """Columns ``[n_enc, encoder MMACs]``, one row per inference."""
    return np.array([
        [s.encoder_layers, seq2seq_macs(s, w, scheme).encoder / MEGA]
        for s, w in zip(shapes, workloads, strict=True)
    ])


def decoder_design(
    shapes: Sequence[Seq2SeqShape], workloads: Sequence[Workload], scheme: DecodingScheme
) -> np.ndarray:
    """Columns ``[steps, steps * n_dec, decoder MMACs]``, one row per inference."""
    return np.array([
        [w.tgt_len, w.tgt_len * s.decoder_layers, seq2seq_macs(s, w, scheme).decoder / MEGA]
        for s, w in zip(shapes, workloads, strict=True)
    ])


def nonnegative_fit(design: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Non-negative least squares, with columns scaled to unit norm first so that
    columns of very different magnitudes (layer counts, millions of MACs) are treated
    alike by the solver."""
    from scipy.optimize import nnls  # scipy is slow to import; only fitting needs it

    if design.shape[0] < design.shape[1]:
        raise ValueError(
            f"need at least {design.shape[1]} measurements to fit, got {design.shape[0]}"
        )
    scale = np.linalg.norm(design, axis=0)
    scale[scale == 0] = 1.0
    coef, _ = nnls(design / scale, np.asarray(target, dtype=float))
    return coef / scale


def fit_split_coefficients(
    shapes: Sequence[Seq2SeqShape],
    workload: Workload,
    encoder_ms: np.ndarray,
    decoder_ms: np.ndarray,
    *,
    scheme: DecodingScheme = FAIRSEQ_INCREMENTAL,
) -> LatencyCoefficients:
    """Fit encoder and decoder terms separately, where encoder and decoder were timed
    separately (HAT's data). No per-inference constant: it cannot be told apart from
    the per-encoder-layer overhead when every row has the same encoder depth."""
    workloads = [workload] * len(shapes)
    enc = nonnegative_fit(encoder_design(shapes, workloads, scheme), encoder_ms)
    dec = nonnegative_fit(decoder_design(shapes, workloads, scheme), decoder_ms)
    return LatencyCoefficients(
        encoder_layer_ms=float(enc[0]),
        encoder_ms_per_mmac=float(enc[1]),
        decoder_step_ms=float(dec[0]),
        decoder_layer_step_ms=float(dec[1]),
        decoder_ms_per_mmac=float(dec[2]),
    )


def fit_total_coefficients(
    shapes: Sequence[Seq2SeqShape],
    workloads: Sequence[Workload],
    total_ms: np.ndarray,
    *,
    scheme: DecodingScheme,
) -> LatencyCoefficients:
    """Fit all terms, the per-inference and per-decoder-layer constants included, to
    whole-inference timings (encoder and decoder timed together, with varying encoder
    depth, decoder depth and step count)."""
    design = np.hstack([
        np.ones((len(shapes), 1)),
        np.array([[s.decoder_layers] for s in shapes]),
        encoder_design(shapes, workloads, scheme),
        decoder_design(shapes, workloads, scheme),
    ])
    c = nonnegative_fit(design, total_ms)
    return LatencyCoefficients(
        inference_ms=float(c[0]),
        decoder_layer_ms=float(c[1]),
        encoder_layer_ms=float(c[2]),
        encoder_ms_per_mmac=float(c[3]),
        decoder_step_ms=float(c[4]),
        decoder_layer_step_ms=float(c[5]),
        decoder_ms_per_mmac=float(c[6]),
    )


def heldout_split(
    n: int, *, test_fraction: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a seeded random train/test split (``test_fraction`` held out)."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    order = np.random.default_rng(seed).permutation(n)
    n_test = max(1, int(round(n * test_fraction)))
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def regression_errors(measured: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """MAPE (a fraction), RMSE in ms, Kendall's tau (rank agreement) and the count."""
    from scipy.stats import kendalltau

    measured = np.asarray(measured, dtype=float)
    predicted = np.asarray(predicted, dtype=float)
    tau = kendalltau(measured, predicted).statistic if len(measured) > 1 else float("nan")
    return {
        "mape": float(np.mean(np.abs(predicted - measured) / measured)),
        "rmse_ms": float(np.sqrt(np.mean((predicted - measured) ** 2))),
        "kendall_tau": float(tau),
        "n": float(len(measured)),
    }
