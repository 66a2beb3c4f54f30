"""Pareto fronts and hypervolume, in minimisation form.

All functions take points as an ``(n, m)`` array where smaller is better in every
column (use :meth:`nas.Problem.to_minimization`).

The search reports the hypervolume in a normalised space so that figures compare across
budgets and targets: for the main job, error ``1 - accuracy`` and ``latency / budget``,
with the reference point ``(1, 1)`` (error 1, latency at the budget). A subnet at 0 %
error and zero latency would score 1.0; subnets at the budget or at 0 % accuracy score 0.
Without a budget, latency is divided by the objective's own reference instead (the
space's range: the largest subnet's latency), and slower subnets add nothing.
See :func:`nas.studies.search_hypervolume`.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from nas._problem import Problem


def pareto_front(points: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """Indices (ascending) of the non-dominated rows of ``points`` (minimisation).

    A row dominates another when it is no worse in every column and better in one.
    Equal rows do not dominate each other, so every copy of a non-dominated point is
    kept. Rows containing NaN are never on the front.

    Rows are visited in lexicographic order, where a dominating row always comes before
    the rows it dominates, and each is compared with the front kept so far only: the
    cost grows with ``n`` times the front's size, not ``n**2``.

    Args:
        points: shape ``(n, m)``; an empty array gives an empty result.

    Returns:
        An int array of row indices.
    """
    pts = _as_points(points)
    candidates = np.flatnonzero(~np.isnan(pts).any(axis=1))
    if len(candidates) == 0:
        return np.zeros(0, dtype=int)
    sub = pts[candidates]
    if sub.shape[1] == 2:
        return np.sort(candidates[_front_2d(sub)])
    order = np.lexsort(sub.T[::-1])  # by the first column, then the second, ...
    front = np.empty_like(sub)
    kept = []
    for i in order:
        row = sub[i]
        head = front[: len(kept)]
        if len(kept) and ((head <= row).all(axis=1) & (head < row).any(axis=1)).any():
            continue
        front[len(kept)] = row
        kept.append(i)
    return np.sort(candidates[kept])


def _front_2d(points: np.ndarray) -> np.ndarray:
    """Row indices of the non-dominated rows of ``(n, 2)`` points without NaN, by one
    sort: a row is dominated by a row of smaller first value and no larger second one,
    or by a row of the same first value and a smaller second one."""
    order = np.lexsort((points[:, 1], points[:, 0]))
    first, second = points[order, 0], points[order, 1]
    starts = np.flatnonzero(np.r_[True, first[1:] != first[:-1]])  # groups of equal first
    group = np.cumsum(np.r_[True, first[1:] != first[:-1]]) - 1
    group_min = second[starts]  # each group sorted by the second value
    before = np.r_[np.inf, np.minimum.accumulate(group_min)[:-1]]  # smaller first values
    dominated = (before[group] <= second) | (group_min[group] < second)
    return order[~dominated]


class ParetoArchive:
    """The non-dominated points seen so far and their hypervolume, kept up to date one
    point at a time (minimisation).

    A point changes the archive only when it enters the front, that is when no archived
    point is at least as good in every objective; the hypervolume is recomputed only
    then (lazily, on the next read), so adding a dominated point costs one comparison
    with the front. With two objectives the front is kept sorted by the first (so the
    second falls along it) and a point is checked by bisection, in plain floats: the
    search offers every evaluation, and numpy's per-call cost would dominate. Each 2-D
    point also keeps its slab of the hypervolume (up to the next point's first value),
    so an entering point updates only its own slab and its left neighbour's, and the
    hypervolume is their exactly rounded sum (``math.fsum``).

    Args:
        reference: the hypervolume's reference point, one entry per objective.
    """

    def __init__(self, reference: np.ndarray | Sequence[float]) -> None:
        self.reference = np.asarray(reference, dtype=float).reshape(-1)
        self._front = np.zeros((0, len(self.reference)))
        self._first: list[float] = []  # two objectives: the front, sorted by the first
        self._second: list[float] = []
        self._slabs: list[float] = []  # two objectives: each point's slab of the volume
        self._box = tuple(float(v) for v in self.reference)
        self._hypervolume: float | None = 0.0

    @property
    def front(self) -> np.ndarray:
        """The archived non-dominated points, shape ``(k, m)`` (a copy)."""
        if len(self.reference) == 2:
            return np.array([self._first, self._second], dtype=float).T.reshape(-1, 2)
        return self._front.copy()

    def add(self, point: np.ndarray | Sequence[float]) -> bool:
        """Offer one point; True when it entered the front.

        A point equal to an archived one, or with a NaN, does not enter (it would add
        no volume).
        """
        if len(self.reference) == 2:
            return self._add_2d(float(point[0]), float(point[1]))
        row = np.asarray(point, dtype=float).reshape(-1)
        if np.isnan(row).any():
            return False
        front = self._front
        if len(front) and (front <= row).all(axis=1).any():
            return False
        dominated = (row <= front).all(axis=1)
        self._front = np.vstack([front[~dominated], row])
        self._hypervolume = None
        return True

    def _add_2d(self, x: float, y: float) -> bool:
        if math.isnan(x) or math.isnan(y):
            return False
        first, second = self._first, self._second
        # of the points whose first value is <= x, the last has the smallest second
        at = bisect.bisect_right(first, x)
        if at and second[at - 1] <= y:
            return False
        start = end = bisect.bisect_left(first, x)  # the points this one dominates follow
        while end < len(first) and second[end] >= y:
            end += 1
        first[start:end] = [x]
        second[start:end] = [y]
        slabs = self._slabs
        slabs[start:end] = [self._slab(start)]
        if start:
            slabs[start - 1] = self._slab(start - 1)
        self._hypervolume = None
        return True

    def _slab(self, i: int) -> float:
        """The volume that 2-D point ``i`` adds left of the next one: from its first value
        to the next point's (or the reference's), from its second value to the
        reference's; 0 outside the reference box."""
        first, (x_ref, y_ref) = self._first, self._box
        x_next = first[i + 1] if i + 1 < len(first) else x_ref
        return max(0.0, min(x_next, x_ref) - first[i]) * max(0.0, y_ref - self._second[i])

    @property
    def hypervolume(self) -> float:
        """The hypervolume of the archive against :attr:`reference`."""
        if self._hypervolume is None and len(self.reference) == 2:
            self._hypervolume = math.fsum(self._slabs)
        if self._hypervolume is None:  # the archive is a front already: no culling
            front = self.front
            inside = front[(front < self.reference).all(axis=1)]
            self._hypervolume = _front_hypervolume(inside, self.reference)
        return self._hypervolume


def hypervolume(
    points: np.ndarray | Sequence[Sequence[float]],
    reference: np.ndarray | Sequence[float],
) -> float:
    """The volume dominated by ``points`` and bounded by ``reference`` (minimisation).

    Points not strictly better than the reference in every objective add nothing.
    Exact: a sweep for one or two objectives, pymoo's HV indicator for more.

    Raises:
        ValueError: ``reference`` does not have one entry per column of ``points``.
    """
    ref = np.asarray(reference, dtype=float).reshape(-1)
    pts = _as_points(points, columns=len(ref))
    if pts.shape[1] != len(ref):
        raise ValueError(
            f"reference must have {pts.shape[1]} entries (one per objective), got {len(ref)}"
        )
    if len(pts) == 0:
        return 0.0
    inside = pts[(~np.isnan(pts).any(axis=1)) & (pts < ref).all(axis=1)]
    if len(inside) == 0:
        return 0.0
    return _front_hypervolume(inside[pareto_front(inside)], ref)


def _front_hypervolume(front: np.ndarray, ref: np.ndarray) -> float:
    """The hypervolume of non-dominated points strictly inside the reference box."""
    if len(front) == 0:
        return 0.0
    if len(ref) == 1:
        return float(ref[0] - front[:, 0].min())
    if len(ref) == 2:
        return _hypervolume_2d(front, ref)
    from pymoo.indicators.hv import HV

    return float(HV(ref_point=ref)(front))


def _hypervolume_2d(front: np.ndarray, ref: np.ndarray) -> float:
    # Distinct non-dominated points sorted by the first objective have a strictly
    # decreasing second objective; each adds the slab up to the next point's first
    # coordinate (the last one up to the reference).
    pts = np.unique(front, axis=0)  # sorted by the first column, then the second
    next_x = np.append(pts[1:, 0], ref[0])
    return float(np.sum((next_x - pts[:, 0]) * (ref[1] - pts[:, 1])))


def hypervolume_defined(problem: Problem) -> bool:
    """Whether :func:`search_hypervolume` has a reference point for ``problem``: every
    minimised objective needs a budget or a reference (:meth:`Problem.reference`)."""
    return all(
        o.direction == "maximize" or problem.reference(o.name) is not None
        for o in problem.objectives
    )


def normalised_points(metrics: Sequence[dict[str, float]], problem: Problem) -> np.ndarray:
    """Objective values in the normalised minimisation space of :func:`search_hypervolume`.

    A maximised objective (a fraction in [0, 1], such as accuracy) becomes ``1 - value``;
    a minimised one is divided by its budget. Shape ``(len(metrics), m)``.

    Raises:
        ValueError: a minimised objective has no budget to normalise by.
    """
    normalise = normaliser(problem)
    rows = [normalise(values) for values in metrics]
    return np.array(rows, dtype=float).reshape(len(rows), len(problem.objectives))


def normaliser(problem: Problem) -> Callable[[Mapping[str, float]], list[float]]:
    """The map of :func:`normalised_points` for one point, with the budgets looked up once
    (the search normalises every evaluation).

    Raises:
        ValueError: a minimised objective has no budget to normalise by.
    """
    scales: list[tuple[str, float | None]] = []
    for objective in problem.objectives:
        if objective.direction == "maximize":
            scales.append((objective.name, None))
            continue
        bound = problem.reference(objective.name)
        if bound is None or bound <= 0:
            raise ValueError(
                f"the normalised hypervolume needs a positive budget on minimised objective "
                f"{objective.name!r} (or a reference on it); add a constraint on it"
            )
        scales.append((objective.name, bound))

    def normalise(values: Mapping[str, float]) -> list[float]:
        return [1.0 - float(values[name]) if scale is None else float(values[name]) / scale
                for name, scale in scales]

    return normalise


def _as_points(points: Any, *, columns: int | None = None) -> np.ndarray:
    pts = np.asarray(points, dtype=float)
    if pts.size == 0:
        width = columns if columns is not None else (pts.shape[-1] if pts.ndim == 2 else 0)
        return pts.reshape(0, width)
    if pts.ndim != 2:
        raise ValueError(f"points must have shape (n, m), got {pts.shape}")
    return pts
