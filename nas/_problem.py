"""The search problem: objectives to optimise and budgets to respect.

A :class:`Problem` is pure data over metric names; the evaluator produces the metrics
(``accuracy``, ``latency_ms``, ...) and the problem says how to read them. Keeping it
free of supernets and targets lets the study database, the algorithms and the Pareto
code share one definition of "better" and "feasible".
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from nas._space import SearchSpace

Direction = Literal["maximize", "minimize"]
_DIRECTIONS = ("maximize", "minimize")


@dataclass(frozen=True)
class Objective:
    """One metric to optimise, e.g. ``Objective("accuracy", "maximize")``."""

    name: str
    direction: Direction
    reference: float | None = None
    """What the hypervolume divides a minimised objective by when no budget bounds it
    (the space's own range, e.g. the largest subnet's latency); None: its budget."""

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("objective name must be a non-empty metric name")
        if self.direction not in _DIRECTIONS:
            raise ValueError(
                f"objective {self.name!r}: direction must be one of {list(_DIRECTIONS)}, "
                f"got {self.direction!r}"
            )
        reference = self.reference
        if reference is not None and (
                self.direction != "minimize" or isinstance(reference, bool)
                or not isinstance(reference, int | float) or not math.isfinite(reference)
                or reference <= 0):
            raise ValueError(f"objective {self.name!r}: reference must be a positive number "
                             f"on a minimised objective, got {reference!r}")

    @property
    def sign(self) -> float:
        """+1 for a minimised metric, -1 for a maximised one (minimisation form)."""
        return 1.0 if self.direction == "minimize" else -1.0

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "direction": self.direction}
        if self.reference is not None:  # absent otherwise: older studies compare equal
            data["reference"] = float(self.reference)
        return data


@dataclass(frozen=True)
class Constraint:
    """A budget: the metric must not exceed ``upper`` (``latency_ms <= 50``)."""

    metric: str
    upper: float

    def __post_init__(self) -> None:
        if not self.metric:
            raise ValueError("constraint metric must be a non-empty metric name")
        if not isinstance(self.upper, int | float) or not math.isfinite(self.upper):
            raise ValueError(
                f"constraint on {self.metric!r}: upper must be a finite number, "
                f"got {self.upper!r}"
            )

    def excess(self, value: float) -> float:
        """Relative excess over the bound (``<= 0`` when satisfied, ``inf`` for NaN).

        Relative, so that budgets in different units weigh alike when summed; a bound of
        zero falls back to the absolute excess.
        """
        if math.isnan(value):
            return math.inf
        scale = abs(self.upper) if self.upper != 0 else 1.0
        return (value - self.upper) / scale

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "upper": float(self.upper)}


@dataclass(frozen=True)
class Problem:
    """What the search optimises over ``space``.

    Args:
        space: the search space the configs come from.
        objectives: one or more objectives, in the order studies store their values.
        constraints: budgets; a config is feasible when every one holds.

    Raises:
        ValueError: no objective, an objective named twice, or a malformed entry.
    """

    space: SearchSpace
    objectives: tuple[Objective, ...]
    constraints: tuple[Constraint, ...] = field(default=())

    def __post_init__(self) -> None:
        objectives = tuple(_as_objective(o) for o in self.objectives)
        constraints = tuple(_as_constraint(c) for c in self.constraints)
        if not objectives:
            raise ValueError("problem needs at least one objective, got none")
        names = [o.name for o in objectives]
        if len(set(names)) != len(names):
            raise ValueError(f"problem names an objective twice: {names}")
        object.__setattr__(self, "objectives", objectives)
        object.__setattr__(self, "constraints", constraints)

    # -- reading metrics -------------------------------------------------------------

    @functools.cached_property
    def metric_names(self) -> tuple[str, ...]:
        """Every metric the problem reads (objectives first, then constrained ones)."""
        names = [o.name for o in self.objectives]
        names += [c.metric for c in self.constraints if c.metric not in names]
        return tuple(names)

    def upper_bound(self, metric: str) -> float | None:
        """The tightest upper bound the constraints put on ``metric``, if any."""
        bounds = [c.upper for c in self.constraints if c.metric == metric]
        return min(bounds) if bounds else None

    def reference(self, metric: str) -> float | None:
        """What the hypervolume divides minimised objective ``metric`` by: its budget,
        else the objective's own reference, else None."""
        bound = self.upper_bound(metric)
        if bound is not None:
            return bound
        return next((o.reference for o in self.objectives if o.name == metric), None)

    def constraint_values(self, metrics: Mapping[str, float]) -> np.ndarray:
        """Relative excess per constraint (``<= 0`` is satisfied): pymoo's ``G``."""
        return np.array(
            [c.excess(float(_metric(metrics, c.metric))) for c in self.constraints],
            dtype=float,
        )

    def violation(self, metrics: Mapping[str, float]) -> float:
        """0 when feasible, else the sum of the relative excesses over the budgets."""
        excess = self.constraint_values(metrics)
        return float(np.clip(excess, 0.0, None).sum()) if excess.size else 0.0

    def is_feasible(self, metrics: Mapping[str, float]) -> bool:
        """Every budget met (what :meth:`violation` == 0 says, without numpy: the search
        asks this for every evaluation)."""
        return all(c.excess(float(_metric(metrics, c.metric))) <= 0.0 for c in self.constraints)

    def to_minimization(self, metrics: Mapping[str, float]) -> np.ndarray:
        """Objective values with maximised ones negated, shape ``(len(objectives),)``."""
        return np.array(
            [o.sign * float(_metric(metrics, o.name)) for o in self.objectives], dtype=float
        )

    def objective_values(self, metrics: Mapping[str, float]) -> list[float]:
        """Objective values as measured (not negated), in objective order."""
        return [float(_metric(metrics, o.name)) for o in self.objectives]

    # -- (de)serialisation -----------------------------------------------------------

    def objectives_dicts(self) -> tuple[dict[str, Any], ...]:
        return tuple(o.to_dict() for o in self.objectives)

    def constraints_dicts(self) -> tuple[dict[str, Any], ...]:
        return tuple(c.to_dict() for c in self.constraints)


def accuracy_latency_problem(space: SearchSpace, *, budget_ms: float | None,
                             reference_ms: float | None = None) -> Problem:
    """The main job: maximise ``accuracy``, minimise ``latency_ms``, ``latency_ms <= budget``;
    without a budget, the whole front, its hypervolume normalised by ``reference_ms``.

    Raises:
        ValueError: ``budget_ms`` is not a positive finite number, or neither it nor a
            positive ``reference_ms`` is given.
    """
    objectives = (Objective("accuracy", "maximize"),
                  Objective("latency_ms", "minimize", reference_ms))
    if budget_ms is None:
        if reference_ms is None:
            raise ValueError("without budget_ms, give reference_ms (the largest subnet's "
                             "latency) to normalise the hypervolume by")
        return Problem(space, objectives)
    if not isinstance(budget_ms, int | float) or not math.isfinite(budget_ms) or budget_ms <= 0:
        raise ValueError(f"budget_ms must be a positive number of milliseconds, got {budget_ms!r}")
    return Problem(space, objectives, (Constraint("latency_ms", float(budget_ms)),))


def objectives_from_dicts(items: Sequence[Mapping[str, Any]]) -> tuple[Objective, ...]:
    return tuple(_as_objective(item) for item in items)


def constraints_from_dicts(items: Sequence[Mapping[str, Any]]) -> tuple[Constraint, ...]:
    return tuple(_as_constraint(item) for item in items)


def _as_objective(item: Objective | Mapping[str, Any]) -> Objective:
    if isinstance(item, Objective):
        return item
    if isinstance(item, Mapping):
        return Objective(str(item.get("name", "")), item.get("direction"),  # type: ignore[arg-type]
                         item.get("reference"))
    raise TypeError(f"objectives must be Objective instances, got {type(item).__name__}")


def _as_constraint(item: Constraint | Mapping[str, Any]) -> Constraint:
    if isinstance(item, Constraint):
        return item
    if isinstance(item, Mapping):
        return Constraint(str(item.get("metric", "")), item.get("upper"))  # type: ignore[arg-type]
    raise TypeError(f"constraints must be Constraint instances, got {type(item).__name__}")


def _metric(metrics: Mapping[str, float], name: str) -> float:
    try:
        return metrics[name]
    except KeyError:
        raise ValueError(
            f"metrics have no {name!r} (the problem needs it); got {sorted(metrics)}"
        ) from None
