"""What a :class:`DenseTransformer` costs: multiply-accumulates, and latency on one device.

Latency-aware pruning (NViT, Yang et al., CVPR 2023) weighs each structure's saliency
against the latency its removal saves; the pruning code takes that as
``model.predict_ms(config) - model.predict_ms(config without the structure)`` from the
:class:`TransformerLatencyModel` fitted here. Like :mod:`nas.hardware._latency_model`,
the model is a sum of physically meaningful terms with non-negative coefficients (NNLS),
so removing a head, a unit or a block never raises the prediction, and each coefficient
reads as a cost (ms per call, per block, per million MACs).

:func:`calibrate` times random shapes derived from one model (one thread, thread CPU
time, the fastest run: the protocol of :mod:`nas.hardware._local_model`, which explains
why), states the error on held-out shapes and refits on all of them.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from nas.compress._transformer import DenseTransformer
from nas.hardware._latency_model import heldout_split, nonnegative_fit
from nas.hardware._local_model import SETTINGS, fastest_ms
from nas.hardware._profile import Measurement, measure_latency, measure_latency_cuda

__all__ = ["Calibration", "Sample", "TransformerLatencyModel", "calibrate", "design",
           "latency_errors", "measure_ms", "random_configs", "transformer_macs"]

MEGA = 1e6
DEVICES = ("cpu", "cuda")
MIN_SAMPLES = 8
"""Two held out (a quarter) is the fewest with a rank correlation; six fit four terms."""
LOW_FRACTION = 0.1
"""Random shapes keep between this fraction and all of each dimension."""


# -- multiply-accumulates ----------------------------------------------------------------


def _mac_terms(config: Mapping[str, Any], tokens: int) -> tuple[float, float]:
    """``(linear, attention)`` MACs of one sequence: projections, FFN and head (linear in
    ``tokens``), then query-key scores and the weighted sum of values (``tokens**2``;
    the causal mask is an additive bias, so the full square is computed)."""
    e, t = config["embed_dim"], tokens
    linear = attention = 0.0
    for s in config["layers"]:
        qk, v = s["heads"] * s["qk_dim"], s["heads"] * s["v_dim"]
        linear += t * e * (2 * qk + v) + t * v * e + 2 * t * e * s["ffn_dim"]
        attention += t * t * (qk + v)
    if config.get("out_dim") is not None:
        linear += t * e * config["out_dim"]
    return linear, attention


def transformer_macs(config: Mapping[str, Any], tokens: int) -> float:
    """Multiply-accumulates of ``DenseTransformer(**config)`` on one sequence of
    ``tokens`` tokens (embedding lookups, LayerNorms, softmax and GELU count 0)."""
    return sum(_mac_terms(config, tokens))


# -- the latency model -------------------------------------------------------------------


COLUMNS = ("call", "blocks", "linear_mmacs", "attention_mmacs")
"""The design's columns, in order (:func:`design`)."""


def design(configs: Sequence[Mapping[str, Any]], *, tokens: int) -> np.ndarray:
    """One row per config, columns :data:`COLUMNS`: 1 (per call), blocks, linear and
    attention MACs in millions, at ``tokens`` tokens."""
    rows = []
    for c in configs:
        linear, attention = _mac_terms(c, tokens)
        rows.append([1.0, len(c["layers"]), linear / MEGA, attention / MEGA])
    return np.array(rows, dtype=float)


@dataclass(frozen=True)
class TransformerLatencyModel:
    """Latency of one forward pass (batch 1, ``tokens`` tokens) on one device, ms:

        call_ms + block_ms * blocks + ms_per_linear_mmac * linear MMACs
                + ms_per_attention_mmac * attention MMACs

    ``call_ms`` prices what every call pays once (embeddings, the mask, Python);
    ``block_ms`` what each block pays whatever its width (about twenty operator
    dispatches, LayerNorms and residual adds on a narrow stream); the two per-MAC terms
    the arithmetic, apart because projections are large matrix products while attention
    is a batch of small ones (``heads`` products of ``tokens x width``), which run
    slower per MAC. Also tried, on 80 shapes of MiniLM and of MatFormer at 64 tokens
    on one CPU thread (median error over random quarter hold-outs): a per-block-per-head
    term (it takes over the attention term) and a per-element term (LayerNorm, GELU,
    softmax traffic); both within 0.3 points of these four terms' 2.7% and 3.7%, the
    timing noise, so they are left out. All coefficients are non-negative, so shrinking
    any dimension never raises the prediction.
    """

    tokens: int
    call_ms: float
    block_ms: float
    ms_per_linear_mmac: float
    ms_per_attention_mmac: float

    @classmethod
    def fit(cls, configs: Sequence[Mapping[str, Any]], latency_ms: Sequence[float], *,
            tokens: int) -> TransformerLatencyModel:
        """NNLS of ``latency_ms`` on :func:`design` (at least as many configs as columns)."""
        coef = nonnegative_fit(design(configs, tokens=tokens), np.asarray(latency_ms, float))
        return cls(tokens, *(float(c) for c in coef))

    @property
    def coefficients(self) -> np.ndarray:
        """The coefficients in :data:`COLUMNS` order."""
        return np.array([self.call_ms, self.block_ms, self.ms_per_linear_mmac,
                         self.ms_per_attention_mmac])

    def predict_ms(self, config: Mapping[str, Any]) -> float:
        """The predicted latency of ``DenseTransformer(**config)``, ms."""
        return float(design([config], tokens=self.tokens)[0] @ self.coefficients)

    def to_dict(self) -> dict[str, float | int]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TransformerLatencyModel:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: a field missing.
        """
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [n for n in names if n not in data]
        if missing:
            raise ValueError(f"a TransformerLatencyModel needs {names}, missing {missing}")
        return cls(int(data["tokens"]), *(float(data[n]) for n in names[1:]))


# -- measuring ---------------------------------------------------------------------------


def _check_device(device: str) -> None:
    if device not in DEVICES:
        raise ValueError(f"device must be one of {list(DEVICES)}, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' needs a CUDA GPU; none is available here")


def _check_tokens(tokens: int, config: Mapping[str, Any]) -> None:
    limit = config["max_positions"]
    if isinstance(tokens, bool) or not isinstance(tokens, int) or not 1 <= tokens <= limit:
        raise ValueError(f"tokens must be an integer in [1, {limit}] (the model's "
                         f"max_positions), got {tokens!r}")


def _measure(model: DenseTransformer, tokens: int, device: str) -> Measurement:
    """Time one forward pass of batch 1 x ``tokens`` random ids, all-ones mask."""
    ids = torch.randint(model.vocab_size, (1, tokens), generator=torch.Generator().manual_seed(0))
    ids, mask = ids.to(device), torch.ones(1, tokens, dtype=torch.long, device=device)
    model = model.to(device).eval()
    budget = dict(warmup=SETTINGS.warmup, min_repeats=SETTINGS.min_repeats,
                  max_repeats=SETTINGS.max_repeats, rel_ci=SETTINGS.rel_ci)
    with torch.inference_mode():
        if device == "cuda":
            return measure_latency_cuda(lambda: model(ids, mask), **budget)
        return measure_latency(lambda: model(ids, mask), threads=SETTINGS.threads,
                               clock=time.thread_time, **budget)


def _figure(measurement: Measurement, device: str) -> float:
    """The fastest run on the shared CPU (other processes only add time), the median on
    a GPU (CUDA events time the GPU's own timeline, which load on the host barely moves)."""
    return measurement.median_ms if device == "cuda" else fastest_ms(measurement)


def measure_ms(model: DenseTransformer, *, tokens: int, device: str = "cpu") -> float:
    """``model``'s latency by :func:`calibrate`'s protocol, ms (on a copy: ``model`` keeps
    its device and mode).

    Raises:
        ValueError: ``tokens`` out of range, or an unknown or absent device.
    """
    _check_tokens(tokens, model.subnet_config())
    _check_device(device)
    return _figure(_measure(copy.deepcopy(model), tokens, device), device)


# -- calibration -------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One timed shape: ``predicted_ms`` is by the model fitted without the held-out
    samples, so for a held-out one it is an out-of-sample prediction."""

    config: dict[str, Any]
    measured_ms: float
    predicted_ms: float
    heldout: bool


@dataclass(frozen=True)
class Calibration:
    """A latency model fitted on one device, and how well it predicts.

    Attributes:
        model: fitted on all samples.
        heldout: errors of the model fitted on the others, on the held-out samples:
            ``median_ape``, ``mape`` (fractions), ``spearman``, ``n``.
        samples: every timed shape, the full model's first.
        device, tokens: where and at what length it was timed.
        environment: :attr:`Measurement.environment` of the full model's timing.
    """

    model: TransformerLatencyModel
    heldout: dict[str, float]
    samples: tuple[Sample, ...]
    device: str
    tokens: int
    environment: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "model": self.model.to_dict()}


def _scaled(n: int, fraction: float) -> int:
    return max(1, round(n * fraction))


def random_configs(config: Mapping[str, Any], n: int, rng: np.random.Generator
                   ) -> list[dict[str, Any]]:
    """``config`` first, then ``n - 1`` shapes derived from it: one embedding-width
    fraction, per block fractions of heads, qk_dim, v_dim and ffn_dim, each uniform in
    [0.1, 1]; half of them also keep only their first 1 to all blocks, without which the
    per-call and per-block costs could not be told apart."""
    out = [dict(config)]
    blocks = len(config["layers"])
    for _ in range(n - 1):
        depth = blocks if rng.random() < 0.5 else int(rng.integers(1, blocks + 1))
        embed = _scaled(config["embed_dim"], rng.uniform(LOW_FRACTION, 1))
        layers = [{**s, **{k: _scaled(s[k], rng.uniform(LOW_FRACTION, 1))
                           for k in ("heads", "qk_dim", "v_dim", "ffn_dim")}}
                  for s in config["layers"][:depth]]
        shape = {**config, "embed_dim": embed, "layers": layers}
        if "output_index" in config:  # a pruned model restoring its original width
            shape["output_index"] = list(range(embed))
        out.append(shape)
    return out


def latency_errors(measured: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Median and mean absolute percentage error (fractions), Spearman's rho, the count."""
    from scipy.stats import spearmanr

    ape = np.abs(predicted - measured) / measured
    return {"median_ape": float(np.median(ape)), "mape": float(np.mean(ape)),
            "spearman": float(spearmanr(measured, predicted).statistic), "n": len(measured)}


def calibrate(
    model: DenseTransformer,
    *,
    tokens: int,
    device: str = "cpu",
    samples: int = 24,
    seed: int = 0,
    heldout: float = 0.25,
    progress: bool = True,
) -> Calibration:
    """Time ``samples`` shapes derived from ``model`` (:func:`random_configs`; weights
    are random, latency does not depend on them), fit :class:`TransformerLatencyModel`,
    state its held-out error and refit on all.

    Args:
        model: its config is the full shape; its weights are not used.
        tokens: sequence length (batch 1, no padding).
        device: ``"cpu"`` (one thread, thread CPU time, fastest run) or ``"cuda"``
            (CUDA events, median).
        samples: shapes to time, the full model included (at least 8).
        seed: seeds the shapes and the held-out split.
        heldout: the fraction held out to state the error.
        progress: a progress bar on stderr.

    Raises:
        ValueError: ``tokens`` above the model's ``max_positions``, too few samples, a
            held-out fraction outside (0, 1), or an unknown or absent device.
    """
    if not isinstance(model, DenseTransformer):
        raise TypeError(f"model must be a DenseTransformer, got {type(model).__name__}")
    config = model.subnet_config()
    _check_tokens(tokens, config)
    if samples < MIN_SAMPLES:
        raise ValueError(f"samples must be >= {MIN_SAMPLES}, got {samples}")
    if not 0 < heldout < 1:
        raise ValueError(f"heldout must be in (0, 1), got {heldout}")
    _check_device(device)
    from nas._progress import progress_bar

    configs = random_configs(config, samples, np.random.default_rng(seed))
    measurements = [_measure(DenseTransformer(**c), tokens, device)
                    for c in progress_bar(configs, desc="calibrate latency", unit="shape",
                                          disable=not progress, dynamic_ncols=True)]
    measured = np.array([_figure(m, device) for m in measurements])
    train, test = heldout_split(samples, test_fraction=heldout, seed=seed)
    partial = TransformerLatencyModel.fit([configs[i] for i in train], measured[train],
                                          tokens=tokens)
    predicted = np.array([partial.predict_ms(c) for c in configs])
    held = set(test.tolist())
    return Calibration(
        model=TransformerLatencyModel.fit(configs, measured, tokens=tokens),
        heldout=latency_errors(measured[test], predicted[test]),
        samples=tuple(Sample(c, float(m), float(p), i in held)
                      for i, (c, m, p) in enumerate(zip(configs, measured, predicted))),
        device=device,
        tokens=tokens,
        environment=dict(measurements[0].environment),
    )
