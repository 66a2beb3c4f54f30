"""The ``screened`` search: NSGA-II whose children are pre-selected by EHVI.

What makes it work: each generation breeds ``screen`` x ``pop_size`` children and
evaluates only the ``pop_size`` the predictors rank best, so NSGA-II's evaluations go
to its most promising children; with nothing to choose from (``screen=1``) it is
NSGA-II itself. Determinism, resume by replay, budgets and NaN results are covered for
every algorithm in ``tests/test_algorithms.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

from nas import Gene, SearchSpace
from nas._problem import accuracy_latency_problem
from nas.algorithms import ALGORITHMS, ScreenedNSGA2Search, canonical_algorithm, get_algorithm
from nas.algorithms.nsga2 import SeededNSGA2
from nas.studies import hypervolume, pareto_front

# eight genes of four choices: 65,536 configs
SPACE = SearchSpace("wide", [Gene(f"g{i}", (0, 1, 2, 3)) for i in range(8)])
BUDGET = 60.0


def metrics(config) -> dict[str, float]:
    v = np.array([config[f"g{i}"] for i in range(8)], dtype=float)
    size = float(v @ np.arange(1, 9))
    return {"accuracy": round(1.0 - 1.0 / (1.0 + size / 20.0) + 0.003 * np.sin(3 * v).sum(), 6),
            "latency_ms": 1.0 + size + 0.5 * v[::2].sum()}


def problem_():
    return accuracy_latency_problem(SPACE, budget_ms=BUDGET)


def drive(algo, evals: int) -> list:
    told: list = []
    while len(told) < evals:
        configs = algo.ask()
        algo.tell(configs, [metrics(c) for c in configs])
        told += configs
    return told


def front_hypervolume(configs) -> float:
    points = np.array([[1 - metrics(c)["accuracy"], metrics(c)["latency_ms"] / BUDGET]
                       for c in configs if metrics(c)["latency_ms"] <= BUDGET])
    return hypervolume(points[pareto_front(points)], [1.0, 1.0])


def test_screened_is_the_default_and_studies_record_its_own_name() -> None:
    assert ALGORITHMS.entry("default").factory is ScreenedNSGA2Search
    assert canonical_algorithm("default") == "screened"


def test_without_children_to_choose_from_it_is_nsga2() -> None:
    screened = get_algorithm("screened", problem_(), seed=4, pop_size=6, screen=1, n_init=6)
    told = drive(screened, 36)
    first = told[:6]  # the random first population, then NSGA-II from it
    nsga2 = SeededNSGA2(problem_(), seed=4, pop_size=6, start=first)
    start = nsga2.ask()
    nsga2.tell(start, [metrics(c) for c in start])
    assert start == first
    assert told[6:] == drive(nsga2, 30)


def test_each_generation_evaluates_pop_size_of_the_children_bred() -> None:
    algo = get_algorithm("screened", problem_(), seed=0, pop_size=5, screen=4, n_init=10,
                         n_samples=16)
    assert len(algo.ask()) == 10  # the random first population
    algo.tell(algo._pending, [metrics(c) for c in algo._pending])
    for _ in range(3):
        configs = algo.ask()
        assert len(configs) == 5 and len(set(configs)) == 5
        assert algo.ga_ is not None and algo.ga_.n_offsprings == 20
        assert not set(configs) & algo.history_.known  # never a config measured before
        algo.tell(configs, [metrics(c) for c in configs])


def test_screening_beats_nsga2_on_a_smooth_landscape() -> None:
    # the property the screen exists for: the same evaluations go to better children
    gains = []
    for seed in range(3):
        screened = drive(get_algorithm("screened", problem_(), seed=seed, pop_size=8,
                                       screen=5, n_init=8, n_samples=16), 64)
        plain = drive(get_algorithm("screened", problem_(), seed=seed, pop_size=8,
                                    screen=1, n_init=8), 64)
        gains.append(front_hypervolume(screened) - front_hypervolume(plain))
    assert np.median(gains) > 0, gains


def test_predictors_train_on_the_latest_evaluations_only() -> None:
    algo = get_algorithm("screened", problem_(), seed=0, pop_size=4, screen=2, n_init=8,
                         max_train=10, n_samples=16)
    drive(algo, 24)
    latest = algo.history_.latest(10)
    assert latest.configs == algo.history_.configs[-10:] and len(latest.known) == 10
    assert algo.history_.latest(100) is algo.history_


@pytest.mark.parametrize(("option", "value", "message"), [
    ("screen", 0, "screen must be an integer >= 1"),
    ("pop_size", 1, "pop_size must be an integer >= 2"),
    ("max_train", 1, "max_train must be an integer >= 2"),
    ("model", "linear", "model must be a predictor with an uncertainty"),
])
def test_bad_options_are_refused(option, value, message) -> None:
    with pytest.raises(ValueError, match=message):
        get_algorithm("screened", problem_(), seed=0, **{option: value})


def test_keep_only_narrows_the_children_and_adds_configs_bred_elsewhere() -> None:
    nsga2 = get_algorithm("nsga2", problem_(), seed=0, pop_size=4)
    first = nsga2.ask()
    nsga2.tell(first, [metrics(c) for c in first])
    children = nsga2.ask()
    outsider = next(c for c in (SPACE.sample(np.random.default_rng(s)) for s in range(99))
                    if c not in set(first) | set(children))
    told = nsga2.keep_only([1, 3], extra=[outsider])
    assert told == [children[1], children[3], outsider]
    with pytest.raises(ValueError, match="configs of the last ask"):
        nsga2.tell(children, [metrics(c) for c in children])
    nsga2.tell(told, [metrics(c) for c in told])
    known = nsga2._encoding.known
    assert nsga2._encoding.encode(outsider).tolist() in [list(k) for k in known]
    assert tuple(nsga2._encoding.encode(children[0]).tolist()) not in known  # may come again


def test_the_ends_are_looked_for_beyond_the_children(monkeypatch) -> None:
    # a random pool the model scores for the front's ends only: on a smooth landscape
    # it reaches ends the children do not, and every batch keeps its size
    extras: list = []
    narrow = SeededNSGA2.keep_only

    def spy(self, rows, extra=()):
        extras.extend(extra)
        return narrow(self, rows, extra)

    monkeypatch.setattr(SeededNSGA2, "keep_only", spy)
    algo = get_algorithm("screened", problem_(), seed=1, pop_size=6, screen=3, n_init=8,
                         n_samples=16, reach=300)
    drive(algo, 8)
    for _ in range(6):
        configs = algo.ask()
        assert len(configs) == 6 == len(set(configs))
        assert set(extras) <= set(configs) | algo.history_.known
        algo.tell(configs, [metrics(c) for c in configs])
    assert extras and not set(extras) & set(algo.history_.configs[:8])
    without = get_algorithm("screened", problem_(), seed=1, pop_size=6, screen=3, n_init=8,
                            n_samples=16, reach=0)
    extras.clear()
    drive(without, 44)
    assert not extras
    # a space small enough to enumerate: the children span the ends, no pool
    small = SearchSpace("small", [Gene(f"g{i}", (0, 1, 2, 3)) for i in range(8)])
    enumerable = get_algorithm("screened", accuracy_latency_problem(small, budget_ms=BUDGET),
                               seed=1, pop_size=6, screen=3, n_init=8, n_samples=16,
                               reach=300)
    enumerable.max_enumerate = small.cardinality()
    drive(enumerable, 44)
    assert not extras


def test_keep_only_needs_an_ask() -> None:
    nsga2 = get_algorithm("nsga2", problem_(), seed=0, pop_size=4)
    with pytest.raises(RuntimeError, match="nothing asked"):
        nsga2.keep_only([0])


def test_with_the_pool_the_asks_depend_only_on_the_seed_and_the_results() -> None:
    # what resume by replay relies on, in a space large enough for the random pool
    runs = [drive(get_algorithm("screened", problem_(), seed=3, pop_size=6, screen=3,
                                n_init=8, n_samples=16, reach=200), 32) for _ in range(2)]
    assert runs[0] == runs[1]
