"""A latency model of a :class:`~nas.supernets.mamba.MambaLM` on this CPU, for
``nas compress shed --target-latency``.

Mamba-Shedder only changes block kinds, so a shed model's forward time is taken as
linear in how many blocks of each kind it keeps::

    ms = call_ms + full_ms * (full blocks) + no_ssm_ms * (SSM-less blocks)

(absent blocks cost a Python call, in ``call_ms``; all coefficients non-negative,
NNLS, so removing a structure never raises the prediction). :func:`calibrate_mamba`
times configurations reachable from the source (the source itself, one block removed,
one SSM removed, every SSM removed, the smallest, then random ones), built with random
weights (the time does not depend on them), states the error of a fit without a held-out
quarter on that quarter, and refits on all.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from nas._progress import progress_bar
from nas.compress._latency import latency_errors
from nas.hardware._latency_model import heldout_split, nonnegative_fit
from nas.supernets.mamba.model import ABSENT, FULL, NO_SSM, MambaLM

__all__ = ["MambaCalibration", "MambaLatencyModel", "calibrate_mamba", "kind_counts",
           "reachable_counts"]

COLUMNS = ("call", "full_blocks", "no_ssm_blocks")
MIN_SAMPLES = 5
"""Three to fit the three terms, two held out (the fewest with a rank correlation)."""
HELDOUT = 0.25

Counts = tuple[int, int]
"""(full blocks, SSM-less blocks)."""


def kind_counts(kinds: Sequence[str]) -> Counts:
    """``(full, no_ssm)`` blocks of a ``blocks`` list."""
    return sum(k == FULL for k in kinds), sum(k == NO_SSM for k in kinds)


def reachable_counts(kinds: Sequence[str]) -> list[Counts]:
    """Every ``(full, no_ssm)`` that removing blocks and SSMs from ``kinds`` can reach
    (at least one block kept), the source's first."""
    full, no_ssm = kind_counts(kinds)
    out = [(full, no_ssm)]
    for f in range(full, -1, -1):
        for n in range(no_ssm + full - f, -1, -1):
            if f + n >= 1 and (f, n) not in out:
                out.append((f, n))
    return out


@dataclass(frozen=True)
class MambaLatencyModel:
    """ms of one forward pass (batch 1, ``length`` bytes) = ``call_ms + full_ms * full
    blocks + no_ssm_ms * SSM-less blocks``."""

    length: int
    call_ms: float
    full_ms: float
    no_ssm_ms: float

    @classmethod
    def fit(cls, counts: Sequence[Counts], latency_ms: Sequence[float], *, length: int
            ) -> MambaLatencyModel:
        coef = nonnegative_fit(_design(counts), np.asarray(latency_ms, float))
        return cls(length, *(float(c) for c in coef))

    def predict_counts(self, counts: Counts) -> float:
        return float(_design([counts])[0] @ np.array([self.call_ms, self.full_ms,
                                                      self.no_ssm_ms]))

    def predict_ms(self, kinds: Sequence[str]) -> float:
        """The predicted ms of a model whose ``blocks`` are ``kinds``."""
        return self.predict_counts(kind_counts(kinds))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _design(counts: Sequence[Counts]) -> np.ndarray:
    return np.array([[1.0, f, n] for f, n in counts], dtype=float)


@dataclass(frozen=True)
class MambaCalibration:
    """The fitted model (on all samples), its held-out errors (``median_ape``, ``mape``,
    ``spearman``, ``n``, by a fit without them) and every sample (counts, measured ms,
    the held-out fit's prediction, whether it was held out)."""

    model: MambaLatencyModel
    heldout: dict[str, float]
    samples: tuple[dict[str, Any], ...]

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model.to_dict(), "columns": list(COLUMNS),
                "heldout": dict(self.heldout), "samples": list(self.samples)}


def _chosen(kinds: Sequence[str], samples: int, seed: int) -> list[Counts]:
    reachable = reachable_counts(kinds)
    full, no_ssm = reachable[0]
    wanted = [(full - 1, no_ssm), (full - 1, no_ssm + 1), (full, no_ssm - 1),
              (0, full + no_ssm), (0, 1), (1, 0)]  # each kind removed, none left, least
    chosen = [reachable[0]] + [c for c in dict.fromkeys(wanted) if c in reachable[1:]]
    rest = [c for c in reachable if c not in chosen]
    order = np.random.default_rng(seed).permutation(len(rest))
    chosen += [rest[i] for i in order]
    return chosen[:samples]


def calibrate_mamba(
    model: MambaLM,
    *,
    length: int,
    measure: Callable[[MambaLM], float],
    samples: int = 12,
    seed: int = 0,
    progress: bool = True,
) -> MambaCalibration:
    """Time configurations of ``model``'s shape and fit :class:`MambaLatencyModel`.

    Args:
        model: its config is the source shape (weights unused).
        length: the bytes per forward pass ``measure`` times (recorded in the model).
        measure: ``model -> ms`` at ``length`` bytes, batch 1.
        samples: configurations to time (fewer if fewer are reachable; at least
            :data:`MIN_SAMPLES`).
        seed: which random configurations, and the held-out split.
        progress: a progress bar on stderr.

    Raises:
        ValueError: fewer than :data:`MIN_SAMPLES` configurations asked for or reachable.
    """
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < MIN_SAMPLES:
        raise ValueError(f"samples must be an integer >= {MIN_SAMPLES}, got {samples!r}")
    counts = _chosen(model.kinds, samples, seed)
    if len(counts) < MIN_SAMPLES:
        raise ValueError(f"a latency model needs {MIN_SAMPLES} configurations to fit and "
                         f"test; this model (blocks {model.kinds}) has {len(counts)}: give "
                         f"--remove instead")
    config, depth = model.subnet_config(), len(model.kinds)
    measured = []
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        for f, n in progress_bar(counts, desc="calibrate latency", unit="config",
                                 disable=not progress):
            kinds = [FULL] * f + [NO_SSM] * n + [ABSENT] * (depth - f - n)
            measured.append(measure(MambaLM(**{**config, "blocks": kinds}).eval()))
    finally:
        torch.random.set_rng_state(generator_state)
    measured_ms = np.array(measured)
    train, test = heldout_split(len(counts), test_fraction=HELDOUT, seed=seed)
    if len(test) < 2:  # a rank correlation needs two
        train, test = train[:-1], np.sort(np.append(test, train[-1]))
    partial = MambaLatencyModel.fit([counts[i] for i in train], measured_ms[train],
                                    length=length)
    predicted = np.array([partial.predict_counts(c) for c in counts])
    held = set(test.tolist())
    return MambaCalibration(
        model=MambaLatencyModel.fit(counts, measured_ms, length=length),
        heldout=latency_errors(measured_ms[test], predicted[test]),
        samples=tuple({"full_blocks": f, "no_ssm_blocks": n, "measured_ms": float(m),
                       "predicted_ms": float(p), "heldout": i in held}
                      for i, ((f, n), m, p) in enumerate(zip(counts, measured_ms, predicted))),
    )
