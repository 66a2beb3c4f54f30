"""Pareto fronts and hypervolume of a study's trials (the point geometry is in
:mod:`nas._pareto`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nas._pareto import hypervolume, normalised_points, pareto_front
from nas._problem import Problem
from nas.studies._study import TrialRecord


@dataclass(frozen=True)
class ParetoPoint:
    """One subnet on a Pareto front: its study trial number, config and metrics."""

    trial: int
    config: dict[str, Any]
    metrics: dict[str, float]


def front_of(trials: Sequence[TrialRecord], problem: Problem) -> list[TrialRecord]:
    """The feasible, non-dominated trials, sorted by the first minimised objective
    (latency for the main job), ties by trial number.

    Feasibility is judged against ``problem``'s budgets (not the stored flag), so a
    study can be re-read under a tighter budget. Failed trials and trials missing an
    objective metric are left out.
    """
    kept = [t for t in trials if usable(t, problem) and problem.is_feasible(t.metrics)]
    if not kept:
        return []
    points = np.array([problem.to_minimization(t.metrics) for t in kept])
    front = [kept[i] for i in pareto_front(points)]
    key_column = next(
        (i for i, o in enumerate(problem.objectives) if o.direction == "minimize"), 0
    )
    return sorted(
        front,
        key=lambda t: (float(problem.to_minimization(t.metrics)[key_column]), t.number),
    )


def pareto_points(trials: Sequence[TrialRecord], problem: Problem) -> list[ParetoPoint]:
    """:func:`front_of` as :class:`ParetoPoint` records."""
    return [
        ParetoPoint(trial=t.number, config=dict(t.config), metrics=dict(t.metrics))
        for t in front_of(trials, problem)
    ]


def search_hypervolume(trials: Sequence[TrialRecord], problem: Problem) -> float:
    """The hypervolume of the feasible trials in the normalised space (reference 1 in
    every objective): error ``1 - accuracy`` and ``latency_ms / budget`` for the main job.

    In [0, 1] when maximised objectives are fractions in [0, 1]; 0 for no feasible trial.

    Raises:
        ValueError: a minimised objective has no budget (see :func:`hypervolume_defined`).
    """
    kept = [t.metrics for t in trials if usable(t, problem) and problem.is_feasible(t.metrics)]
    points = normalised_points(kept, problem)
    return hypervolume(points, np.ones(len(problem.objectives)))


def usable(trial: TrialRecord, problem: Problem) -> bool:
    """Whether ``trial`` has a number for every metric ``problem`` reads (and did not fail)."""
    if trial.failed:
        return False
    for name in problem.metric_names:
        value = trial.metrics.get(name)
        if value is None or math.isnan(value):
            return False
    return True
