"""Acquisition functions: how much a candidate, predicted with uncertainty, is worth.

Everything is in minimisation form and normalised (:class:`Normaliser`) so that the
observed and predicted values span [0, 1] on each objective, with the reference
point at 1.1.

* Two objectives: Monte-Carlo expected hypervolume improvement (EHVI; Emmerich et al.,
  "Single- and multiobjective evolutionary optimization assisted by Gaussian random
  field metamodels", IEEE TEC 2006), the improvement of each sample computed exactly on
  the 2-D staircase (:func:`hv_improvement_2d`).
* One or three or more objectives: expected improvement of a randomly weighted augmented
  Chebyshev scalarisation (ParEGO; Knowles, IEEE TEC 2006), one weight per batch slot.
"""

from __future__ import annotations

import numpy as np

from nas._pareto import pareto_front

REFERENCE = 1.1
_CHUNK = 1 << 18  # sample points per vectorised block of hv_improvement_2d


class Normaliser:
    """Maps minimisation-form objectives so that ``Y`` spans [0, 1] per axis.

    Built from the feasible observations *and* the candidates' predicted medians, so
    the reference point 1.1 lies beyond the worst value seen or expected: an extreme of
    the front not found yet (the fastest cell, at chance accuracy) still counts.
    """

    def __init__(self, Y: np.ndarray) -> None:
        low, high = Y.min(axis=0), Y.max(axis=0)
        self.low, self.scale = low, np.where(high > low, high - low, 1.0)

    def __call__(self, Y: np.ndarray) -> np.ndarray:
        return (Y - self.low) / self.scale


def hv_improvement_2d(points: np.ndarray, front: np.ndarray,
                      ref: float = REFERENCE) -> np.ndarray:
    """The hypervolume each 2-D point (N, 2) adds to ``front`` (k, 2) below ``(ref, ref)``.

    The region the front leaves open is a staircase: between consecutive front points
    (sorted by the first objective) its ceiling is the second objective of the left
    one. A point's improvement is the area of that staircase above it and to its right.
    """
    front = front[(front < ref).all(axis=1)] if len(front) else front
    front = front[pareto_front(front)] if len(front) else front.reshape(0, 2)
    order = np.argsort(front[:, 0], kind="stable")
    xs, ys = front[order, 0], front[order, 1]
    edges = np.concatenate([[-np.inf], xs, [ref]])
    ceilings = np.concatenate([[ref], ys])
    out = np.empty(len(points))
    for start in range(0, len(points), _CHUNK):
        block = points[start:start + _CHUNK]
        a, b = block[:, :1], block[:, 1:2]
        width = np.minimum(edges[1:], ref)[None, :] - np.maximum(edges[:-1][None, :], a)
        height = ceilings[None, :] - b
        out[start:start + _CHUNK] = (np.clip(width, 0, None) * np.clip(height, 0, None)).sum(1)
    return out


def expected_hv_improvement(samples: np.ndarray, front: np.ndarray) -> np.ndarray:
    """Monte-Carlo EHVI over ``front`` of each candidate from its draws (N, S, 2).

    Draws made with the same standard normals for every candidate (common random
    numbers) keep the ranking free of sampling noise between candidates.
    """
    hvi = hv_improvement_2d(samples.reshape(-1, 2), front)
    return hvi.reshape(samples.shape[:2]).mean(axis=1)


def chebyshev(Y: np.ndarray, weights: np.ndarray, rho: float = 0.05) -> np.ndarray:
    """Augmented Chebyshev scalarisation (ParEGO) of normalised objectives (..., m)."""
    weighted = Y * weights
    return weighted.max(axis=-1) + rho * weighted.sum(axis=-1)


def expected_scalar_improvement(samples: np.ndarray, observed: np.ndarray,
                                weights: np.ndarray) -> np.ndarray:
    """Monte-Carlo expected improvement of the Chebyshev scalarisation with ``weights``
    over its best observed value, from draws (N, S, m) (one or three+ objectives)."""
    best = chebyshev(observed, weights).min()
    return np.clip(best - chebyshev(samples, weights), 0, None).mean(axis=1)
