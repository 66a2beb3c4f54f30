"""Pareto fronts and hypervolume on small hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nas import Gene, SearchSpace
from nas._problem import Objective, Problem, accuracy_latency_problem
from nas.studies import (
    ParetoArchive,
    TrialRecord,
    front_of,
    hypervolume,
    hypervolume_defined,
    pareto_front,
    pareto_points,
    search_hypervolume,
)

SPACE = SearchSpace("toy", [Gene("w", (1, 2, 3, 4, 5, 6))])


def test_pareto_front_basic_and_dominated() -> None:
    points = [[1, 3], [2, 2], [3, 1], [3, 3], [2, 4]]
    assert pareto_front(points).tolist() == [0, 1, 2]


def test_pareto_front_ties() -> None:
    # equal points do not dominate each other: both copies stay
    assert pareto_front([[1, 2], [1, 2], [2, 1]]).tolist() == [0, 1, 2]
    # equal in one objective, worse in the other: dominated
    assert pareto_front([[1, 2], [1, 3], [0, 3]]).tolist() == [0, 2]
    # a single point, and NaN rows never on the front
    assert pareto_front([[5, 5]]).tolist() == [0]
    assert pareto_front([[np.nan, 0], [1, 1]]).tolist() == [1]


def test_pareto_front_empty_and_three_objectives() -> None:
    assert pareto_front(np.zeros((0, 2))).tolist() == []
    assert pareto_front([]).tolist() == []
    pts = [[1, 1, 1], [0, 2, 2], [2, 2, 0], [1, 1, 2]]
    assert pareto_front(pts).tolist() == [0, 1, 2]


def test_hypervolume_two_objectives_by_hand() -> None:
    # staircase: (4-1)*(4-3) + ... computed as slabs: 1*1 + 1*2 + 1*3 = 6
    assert hypervolume([[1, 3], [2, 2], [3, 1]], [4, 4]) == pytest.approx(6.0)
    # dominated, duplicate and out-of-box points change nothing
    assert hypervolume([[1, 3], [2, 2], [3, 1], [3, 3], [2, 2], [5, 0], [0, 4]],
                       [4, 4]) == pytest.approx(6.0)
    assert hypervolume([[0.5, 0.5]], [1, 1]) == pytest.approx(0.25)


def test_hypervolume_empty_and_one_or_three_objectives() -> None:
    assert hypervolume(np.zeros((0, 2)), [1, 1]) == 0.0
    assert hypervolume([[2, 2]], [1, 1]) == 0.0
    assert hypervolume([[0.25], [0.5]], [1]) == pytest.approx(0.75)
    assert hypervolume([[0.5, 0.5, 0.5]], [1, 1, 1]) == pytest.approx(0.125)
    # union of a 1x1x0.5 slab and a 0.5x0.5x1 column overlapping in 0.5x0.5x0.5
    assert hypervolume([[0, 0, 0.5], [0.5, 0.5, 0]], [1, 1, 1]) == pytest.approx(0.625)
    with pytest.raises(ValueError, match="reference must have 2 entries"):
        hypervolume([[1, 2]], [1, 2, 3])


def _trial(number: int, accuracy: float, latency: float, *, failed: bool = False) -> TrialRecord:
    return TrialRecord(number=number, config={"w": number + 1},
                       metrics={"accuracy": accuracy, "latency_ms": latency},
                       feasible=True, cache_key=f"k{number}", failed=failed)


TRIALS = [
    _trial(0, 0.60, 20.0),  # on the front
    _trial(1, 0.80, 60.0),  # on the front
    _trial(2, 0.50, 30.0),  # dominated by 0
    _trial(3, 0.95, 120.0),  # over the budget
    _trial(4, 0.70, 60.0),  # dominated by 1 (same latency, lower accuracy)
    _trial(5, 0.99, 10.0, failed=True),  # failed trials never count
]


def test_front_of_keeps_feasible_nondominated_sorted_by_latency() -> None:
    problem = accuracy_latency_problem(SPACE, budget_ms=100.0)
    assert [t.number for t in front_of(TRIALS, problem)] == [0, 1]
    points = pareto_points(TRIALS, problem)
    assert [(p.trial, p.config, p.metrics["accuracy"]) for p in points] == [
        (0, {"w": 1}, 0.60), (1, {"w": 2}, 0.80)
    ]
    # feasibility is judged against the problem's budget, not the stored flag
    loose = accuracy_latency_problem(SPACE, budget_ms=200.0)
    assert [t.number for t in front_of(TRIALS, loose)] == [0, 1, 3]
    assert front_of([], problem) == []


def test_search_hypervolume_in_the_normalised_space() -> None:
    problem = accuracy_latency_problem(SPACE, budget_ms=100.0)
    # normalised: trial 0 -> (error 0.4, latency 0.2), trial 1 -> (0.2, 0.6); ref (1, 1)
    # slabs: (0.6 - 0.2) * (1 - 0.4) + (1 - 0.6) * (1 - 0.2) = 0.24 + 0.32
    assert search_hypervolume(TRIALS, problem) == pytest.approx(0.56)
    assert search_hypervolume([], problem) == 0.0
    assert search_hypervolume(TRIALS[3:4], problem) == 0.0  # nothing within the budget
    unbounded = Problem(SPACE, (Objective("accuracy", "maximize"),
                                Objective("latency_ms", "minimize")))
    assert hypervolume_defined(problem) and not hypervolume_defined(unbounded)
    with pytest.raises(ValueError, match="needs a positive budget on minimised objective"):
        search_hypervolume(TRIALS, unbounded)
    assert not math.isnan(search_hypervolume(TRIALS, problem))


# -- scaling: the culling sweep and the incremental archive ----------------------------


def _brute_front(points: np.ndarray) -> list[int]:
    """The definition, pair by pair."""
    keep = []
    for i, row in enumerate(points):
        if np.isnan(row).any():
            continue
        dominated = any(
            not np.isnan(other).any() and (other <= row).all() and (other < row).any()
            for j, other in enumerate(points) if j != i
        )
        if not dominated:
            keep.append(i)
    return keep


@pytest.mark.parametrize("columns", [2, 3, 4])
def test_pareto_front_matches_the_definition_with_ties_and_nans(columns: int) -> None:
    rng = np.random.default_rng(columns)
    for _ in range(20):
        # few distinct values, so ties and duplicates are common
        points = rng.integers(0, 6, size=(60, columns)).astype(float)
        points[rng.random(60) < 0.05, 0] = np.nan
        assert pareto_front(points).tolist() == _brute_front(points)


@pytest.mark.parametrize("columns", [2, 3])
@pytest.mark.parametrize("grid", [False, True], ids=["continuous", "ties"])
def test_archive_keeps_the_front_and_hypervolume_of_everything_added(columns: int,
                                                                     grid: bool) -> None:
    rng = np.random.default_rng(7)
    reference = np.ones(columns)
    archive = ParetoArchive(reference)
    seen = []
    for _ in range(150):
        # on a grid, points share values and repeat: the 2-D bisection's edge cases;
        # some fall on or beyond the reference, where they add no volume
        point = rng.integers(0, 9, columns) / 7 if grid else 1.25 * rng.random(columns)
        entered = archive.add(point)
        seen.append(point)
        points = np.array(seen)
        front = points[pareto_front(points)]
        # it entered exactly when it is on the front of everything so far and new
        on_front = len(seen) - 1 in pareto_front(points).tolist()
        assert entered == (on_front and not any((p == point).all() for p in seen[:-1]))
        assert sorted(map(tuple, archive.front)) == sorted(map(tuple, np.unique(front, axis=0)))
        assert archive.hypervolume == pytest.approx(hypervolume(points, reference), abs=1e-12)
    assert not archive.add([np.nan] * columns)
    assert not archive.add(archive.front[0])  # an archived point again adds nothing
