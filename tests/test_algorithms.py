"""Every registered search algorithm: the ask/tell contract, budgets, constraints,
determinism, resume by replay, and quality on the NAS-Bench-201 table.

Runs on a small conditional toy space (78 configs) whose metrics are functions of the
config, and on the NB201 lookup table; no model is trained.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from optuna.storages import InMemoryStorage

from nas import Condition, Config, Gene, SearchSpace
from nas._evaluator import FunctionEvaluator
from nas._problem import Constraint, Objective, Problem, accuracy_latency_problem
from nas._search import run_search
from nas.algorithms import ALGORITHMS, Algorithm, algorithm_options, get_algorithm, list_algorithms
from nas.algorithms.evo import crowding_distance, non_dominated_fronts, objective_elites, rank
from nas.algorithms.nsga3 import default_partitions
from nas.studies import StudyMeta, open_study

SPACE = SearchSpace(
    "toy",
    [
        Gene("depth", (1, 2, 3)),
        Gene("width.0", (8, 16, 32)),
        Gene("width.1", (8, 16, 32), Condition("depth", 2)),
        Gene("width.2", (8, 16, 32), Condition("depth", 3)),
        Gene("act", ("relu", "gelu")),
    ],
)  # 78 distinct configs
BUDGET = 20.0
NEW = {"agemoea", "nsga3", "tpe", "optuna-tpe", "optuna-nsga2", "optuna-nsga3", "optuna-gp",
       "evo", "evo-budget", "linas", "ehvi", "hybrid", "screened"}
# small populations so that a few dozen evaluations span several generations
SMALL = {
    "random": {"batch_size": 4},
    "nsga2": {"pop_size": 8}, "agemoea": {"pop_size": 8},
    "nsga3": {"pop_size": 8},
    "optuna-nsga2": {"population_size": 8}, "optuna-nsga3": {"population_size": 8},
    "evo": {"population_size": 8},
    "evo-budget": {"population_size": 8, "parent_size": 4, "mutation_size": 2,
                   "objective_elites": 2},
    "optuna-gp": {"n_startup_trials": 3},
    "linas": {"population": 8, "inner_evals": 160},
    "ehvi": {"n_init": 6, "batch_size": 4, "n_samples": 16},
}
SMALL["hybrid"] = {**SMALL["ehvi"], "n_random": 200, "handover": 12, "pop_size": 4}
SMALL["screened"] = {"n_init": 6, "pop_size": 4, "screen": 3, "n_samples": 16}
SMALL["default"] = SMALL["screened"]
SLOW = {"optuna-gp"}  # a GP fit per suggestion


def toy_metrics(config: Config) -> dict[str, float]:
    widths = sum(v for k, v in config.items() if k.startswith("width."))
    gelu = config["act"] == "gelu"
    return {
        "accuracy": round(1.0 - 1.0 / (1.0 + widths / 24.0) + (0.01 if gelu else 0.0), 6),
        "latency_ms": 0.25 * widths + 2.0 * config["depth"] + (0.5 if gelu else 0.0),
    }


def problem_() -> Problem:
    return accuracy_latency_problem(SPACE, budget_ms=BUDGET)


def options(name: str) -> dict[str, Any]:
    return dict(SMALL.get(name, {}))


def make(name: str, problem: Problem | None = None, *, seed: int = 0, **extra: Any) -> Algorithm:
    return get_algorithm(name, problem or problem_(), seed=seed, **{**options(name), **extra})


def drive(algo: Algorithm, rounds: int) -> list[list[str]]:
    asked = []
    for _ in range(rounds):
        configs = algo.ask()
        asked.append([c.to_json() for c in configs])
        algo.tell(configs, [toy_metrics(c) for c in configs])
    return asked


def search(storage: Any, name: str, n_evals: int, *, seed: int = 0, problem: Problem | None = None,
           **extra: Any):
    problem = problem or problem_()
    meta = StudyMeta.for_problem(problem, supernet="toy", checkpoint_hash="c", hardware="toy-hw",
                                 hardware_fingerprint="toy-hw-v1", seed=seed, algorithm=name)
    study = open_study("s", storage, meta=meta, space=SPACE)
    evaluator = FunctionEvaluator(SPACE, toy_metrics, fingerprint="toy")
    result = run_search(problem, make(name, problem, seed=seed, **extra), evaluator, study,
                        n_evals=n_evals, progress=False)
    return result, study


def configs_of(study: Any) -> list[str]:
    return [json.dumps(t.config, sort_keys=True) for t in study.trials()]


ALL = list_algorithms()
# the GP fits its models at every suggestion (seconds each): run, but marked slow
PARAMS = [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in ALL]


# -- registry and options ------------------------------------------------------------------


def test_the_new_algorithms_are_registered() -> None:
    assert NEW <= set(ALL)
    assert ALGORITHMS.entry("optuna-tpe").factory is ALGORITHMS.entry("tpe").factory
    assert "n_partitions" in algorithm_options("nsga3")
    assert {"population_size", "parent_size", "mutation_size", "mutation_prob",
            "constraint_check", "max_resample"} <= set(algorithm_options("evo"))
    assert "batch_size" in algorithm_options("tpe")


@pytest.mark.parametrize(("name", "bad", "message"), [
    ("nsga3", {"pop_size": 1}, "pop_size must be an integer >= 2"),
    ("nsga3", {"n_partitions": 0}, "n_partitions must be a positive integer"),
    ("nsga3", {"pop_size": 4, "n_partitions": 8}, "9 reference directions .* more than pop_size=4"),
    ("agemoea", {"crossover_prob": 2.0}, r"crossover_prob must be in \[0, 1\]"),
    ("tpe", {"batch_size": 0}, "batch_size must be a positive integer"),
    ("tpe", {"n_startup_trials": -1}, "n_startup_trials must be a positive integer"),
    ("optuna-nsga2", {"population_size": 1}, "population_size must be an integer >= 2"),
    ("optuna-nsga3", {"mutation_prob": 1.5}, r"mutation_prob must be in \[0, 1\] or None"),
    ("evo", {"population_size": 2}, "population_size must be an integer >= 3"),
    ("evo", {"parent_size": 20}, r"parent_size must be an integer in \[1, population_size - 1\]"),
    ("evo", {"mutation_size": 99}, r"mutation_size must be an integer in \[0, "),
    ("evo", {"mutation_prob": -0.1}, r"mutation_prob must be in \[0, 1\]"),
    ("evo", {"max_resample": 0}, "max_resample must be a positive integer"),
    ("evo", {"parent_size": 4, "objective_elites": 5},
     r"objective_elites must be an integer in \[0, parent_size\] = \[0, 4\]"),
])
def test_bad_options_are_rejected(name: str, bad: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        get_algorithm(name, problem_(), seed=0, **bad)


def test_evo_rejects_a_non_callable_check() -> None:
    with pytest.raises(TypeError, match="constraint_check must be a callable"):
        get_algorithm("evo", problem_(), seed=0, constraint_check=3)


@pytest.mark.parametrize("name", ["nsga3", "agemoea"])
def test_reference_based_algorithms_need_two_objectives(name: str) -> None:
    single = Problem(SPACE, (Objective("accuracy", "maximize"),))
    with pytest.raises(ValueError, match="two or more objectives"):
        get_algorithm(name, single, seed=0)


def test_nsga3_default_partitions_fill_the_population() -> None:
    assert default_partitions(2, 20) == 19  # 20 directions
    assert default_partitions(3, 20) == 4  # C(6, 2) = 15 <= 20 < C(7, 2) = 21
    assert default_partitions(2, 2) == 1
    algo = get_algorithm("nsga3", problem_(), seed=0)
    assert algo.ref_dirs().shape == (20, 2)


# -- the contract, for every algorithm --------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_asks_are_canonical_configs_of_the_space(name: str) -> None:
    algo = make(name)
    rounds = drive(algo, 4)
    assert rounds[0], "the first ask must propose something"
    for batch in rounds:
        for text in batch:
            config = SPACE.from_json(text)
            assert config.to_json() == text  # canonical: inactive genes dropped
    with pytest.raises(RuntimeError, match="nothing was asked"):
        algo.tell([], [])


@pytest.mark.parametrize("name", PARAMS)
def test_deterministic_given_seed_and_results(name: str) -> None:
    first = drive(make(name, seed=3), 5)
    again = drive(make(name, seed=3), 5)
    other = drive(make(name, seed=4), 5)
    assert first == again
    assert first != other


@pytest.mark.parametrize("name", PARAMS)
def test_search_meets_the_budget_and_the_constraint(name: str) -> None:
    n = 6 if name in SLOW else 30
    result, study = search(InMemoryStorage(), name, n)
    assert result.evaluations == len(study) == n and not result.stopped_early
    assert len({t.cache_key for t in study.trials()}) == n
    assert result.pareto
    assert all(p.metrics["latency_ms"] <= BUDGET for p in result.pareto)


@pytest.mark.parametrize("name", PARAMS)
def test_resume_replays_to_the_same_study(name: str) -> None:
    n = 6 if name in SLOW else 20
    _, whole = search(InMemoryStorage(), name, n)
    parts = InMemoryStorage()
    first, _ = search(parts, name, n // 2)
    assert first.new_evaluations == n // 2
    resumed, study = search(parts, name, n)
    assert resumed.new_evaluations == n - n // 2 and resumed.evaluations == n
    assert configs_of(study) == configs_of(whole)


@pytest.mark.parametrize("name", PARAMS)
def test_infeasible_and_nan_results_are_told(name: str) -> None:
    """Every result over budget, or NaN: the algorithm keeps proposing configs."""
    problem = accuracy_latency_problem(SPACE, budget_ms=1.0)  # nothing is feasible
    algo = make(name, problem)
    for i in range(4):
        configs = algo.ask()
        assert configs
        results = [toy_metrics(c) for c in configs]
        if i % 2:
            results = [{"accuracy": float("nan"), "latency_ms": float("nan")} for _ in configs]
        algo.tell(configs, results)


# -- Optuna specifics -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tpe", "optuna-nsga2"])
def test_optuna_batches_constraints_and_redraws(name: str) -> None:
    algo = make(name, batch_size=4)
    rounds = drive(algo, 3)
    assert [len(batch) for batch in rounds] == [4, 4, 4]
    trials = algo.study_.trials
    assert len(trials) >= 12  # redrawn duplicates are told too
    for trial in trials:
        config = SPACE.config(trial.params)
        excess = (toy_metrics(config)["latency_ms"] - BUDGET) / BUDGET
        assert list(trial.constraints.values()) == pytest.approx([excess])
        assert list(trial.values) == pytest.approx(
            [toy_metrics(config)["accuracy"], toy_metrics(config)["latency_ms"]])


def test_optuna_redraws_instead_of_proposing_told_configs() -> None:
    tiny = SearchSpace("tiny", [Gene("a", (1, 2)), Gene("b", (1, 2, 3))])  # 6 configs
    problem = Problem(tiny, (Objective("x", "minimize"),))
    algo = get_algorithm("optuna-nsga2", problem, seed=0, population_size=2)
    seen: list[Config] = []
    for _ in range(6):
        (config,) = algo.ask()
        seen.append(config)
        algo.tell([config], [{"x": float(config["a"] * config["b"])}])
    assert len(set(seen)) == 6  # every ask a config not told before
    (config,) = algo.ask()  # the space is exhausted: a told config, after the redraws
    assert config in seen


# -- evo specifics ------------------------------------------------------------------------


def test_evo_generations_follow_hat_sizes() -> None:
    algo = get_algorithm("evo", problem_(), seed=0, population_size=10, parent_size=4,
                         mutation_size=2)
    assert (algo.parent_size, algo.mutation_size, algo.crossover_size) == (4, 2, 4)
    sizes = [len(batch) for batch in drive(algo, 3)]
    assert sizes == [10, 6, 6]  # the parents are kept, not asked again
    defaults = get_algorithm("evo", problem_(), seed=0)
    assert (defaults.population_size, defaults.parent_size, defaults.mutation_size,
            defaults.crossover_size, defaults.mutation_prob) == (20, 5, 8, 7, 0.3)


def test_evo_resamples_children_that_fail_the_check() -> None:
    def cheap(config: Config) -> bool:
        return toy_metrics(config)["latency_ms"] <= BUDGET

    algo = get_algorithm("evo", problem_(), seed=0, population_size=8, constraint_check=cheap)
    for batch in drive(algo, 4):
        assert all(cheap(SPACE.from_json(text)) for text in batch)


def test_evo_accepts_a_child_after_the_resample_cap() -> None:
    algo = get_algorithm("evo", problem_(), seed=0, population_size=4, parent_size=2,
                         constraint_check=lambda config: False, max_resample=3)
    rounds = drive(algo, 2)
    assert [len(batch) for batch in rounds] == [4, 2]
    assert algo.resample_failures_ == 6


def test_evo_single_objective_keeps_the_best_as_parents() -> None:
    problem = Problem(SPACE, (Objective("accuracy", "maximize"),),
                      (Constraint("latency_ms", BUDGET),))
    algo = get_algorithm("evo", problem, seed=0, population_size=8, parent_size=2)
    drive(algo, 3)
    told = [(violation, F[0]) for _, F, violation in algo.parents_]
    assert told == sorted(told)
    assert all(v == 0 for v, _ in told)


def test_evo_objective_elites_keep_the_best_within_the_budget() -> None:
    """The property behind ``evo-budget``: with ``objective_elites=k`` the k best
    feasible configs told so far by the first objective (accuracy) are always parents,
    however crowded the front is at the budget; the other parents still span the
    front (its low-latency end among them)."""
    told: list[tuple[Config, dict[str, float]]] = []
    algo = get_algorithm("evo", problem_(), seed=0, population_size=12, parent_size=6,
                         objective_elites=3)
    for _ in range(5):
        configs = algo.ask()
        results = [toy_metrics(c) for c in configs]
        told += list(zip(configs, results, strict=True))
        algo.tell(configs, results)
        feasible = [(c, m) for c, m in told if m["latency_ms"] <= BUDGET]
        best = sorted(feasible, key=lambda cm: -cm[1]["accuracy"])[:3]
        parents = [c for c, _, _ in algo.parents_]
        assert sorted(m["accuracy"] for _, m in best) == sorted(
            -F[0] for _, F, _ in algo.parents_[:3])
        fastest = min(feasible, key=lambda cm: cm[1]["latency_ms"])
        assert any(toy_metrics(c)["latency_ms"] == fastest[1]["latency_ms"] for c in parents)
    F = np.array([[-0.9, 30.0], [-0.8, 19.0], [-0.79, 18.0], [-0.5, 5.0], [-0.78, 17.0]])
    violation = np.array([0.5, 0.0, 0.0, 0.0, 0.0])
    assert objective_elites(F, violation, 2).tolist() == [1, 2]  # the infeasible one is not
    assert objective_elites(F[:1], violation[:1], 2).tolist() == []


def test_evo_budget_is_evo_at_ofa_tutorial_sizes() -> None:
    algo = get_algorithm("evo-budget", problem_(), seed=0)
    assert (algo.population_size, algo.parent_size, algo.mutation_size, algo.crossover_size,
            algo.mutation_prob, algo.objective_elites) == (100, 25, 50, 25, 0.1, 12)
    assert get_algorithm("evo", problem_(), seed=0).objective_elites == 0  # unchanged


def test_evo_ranking_feasible_first_then_fronts_then_crowding() -> None:
    F = np.array([[0.0, 5.0], [1.0, 1.0], [5.0, 0.0], [2.0, 2.0], [0.5, 0.5], [3.0, 3.0]])
    violation = np.array([0.0, 0.0, 0.0, 0.0, 0.7, 0.2])
    order = rank(F, violation)
    assert list(order[:3]) == [0, 2, 1]  # front 0: extremes (infinite crowding) first
    assert order[3] == 3  # front 1
    assert list(order[4:]) == [5, 4]  # infeasible last, least violation first
    fronts = non_dominated_fronts(F[:4])
    assert [sorted(f.tolist()) for f in fronts] == [[0, 1, 2], [3]]
    assert np.isinf(crowding_distance(F[:2])).all()


# -- quality on NAS-Bench-201 ------------------------------------------------------------------


@pytest.fixture(scope="module")
def table():
    from nas.supernets.nb201 import NB201Table

    return NB201Table.default()


@pytest.mark.parametrize("name", [p for p in PARAMS if p not in ("default", "optuna-tpe")])
def test_nb201_gap_after_200_evaluations(table: Any, name: str) -> None:
    from nas.supernets.nb201 import NB201_SPACE, hv_gap

    problem = Problem(NB201_SPACE, (Objective("accuracy", "maximize"),
                                    Objective("latency_ms", "minimize")))
    evaluator = table.evaluator("raspi4")
    meta = StudyMeta.for_problem(problem, supernet="nb201", checkpoint_hash=table.sha256[:16],
                                 hardware="raspi4", hardware_fingerprint=evaluator.fingerprint,
                                 seed=0, algorithm=name)
    study = open_study("nb201", InMemoryStorage(), meta=meta, space=NB201_SPACE)
    n = 100 if name in SLOW else 200  # the GP's cost grows with the trials: fewer
    result = run_search(problem, get_algorithm(name, problem, seed=0), evaluator, study,
                        n_evals=n, progress=False)
    assert result.evaluations == n
    gap = hv_gap([t.config for t in study.trials()], table, device="raspi4")
    assert gap < 0.05, f"{name}: hypervolume gap {gap:.4f} after {n} evaluations"
