"""The ``hybrid`` search (the default before ``screened``): ``ehvi``, then NSGA-II from
everything measured.

What makes it work: the first ``handover`` evaluations are exactly ``ehvi``'s, and
NSGA-II then starts from all of them (nothing evaluated again, nothing measured proposed
again). Determinism, resume by replay, budgets and NaN results are covered for every
algorithm in ``tests/test_algorithms.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
from optuna.storages import InMemoryStorage

from nas import Gene, SearchSpace
from nas._evaluator import FunctionEvaluator
from nas._problem import accuracy_latency_problem
from nas._search import run_search
from nas.algorithms import ALGORITHMS, HybridSearch, canonical_algorithm, get_algorithm
from nas.studies import StudyMeta, open_study

# eight genes of four choices: 65,536 configs, so candidates are drawn, not enumerated
SPACE = SearchSpace("wide", [Gene(f"g{i}", (0, 1, 2, 3)) for i in range(8)])
OPTIONS = {"n_init": 8, "batch_size": 6, "n_samples": 16, "n_random": 200}


def metrics(config) -> dict[str, float]:
    v = np.array([config[f"g{i}"] for i in range(8)], dtype=float)
    size = float(v @ np.arange(1, 9))
    return {"accuracy": round(1.0 - 1.0 / (1.0 + size / 20.0) + 0.003 * np.sin(3 * v).sum(), 6),
            "latency_ms": 1.0 + size + 0.5 * v[::2].sum()}


def problem_(budget_ms: float = 1e6):
    return accuracy_latency_problem(SPACE, budget_ms=budget_ms)


def drive(algo, rounds: int) -> list[list]:
    asked = []
    for _ in range(rounds):
        configs = algo.ask()
        asked.append(configs)
        algo.tell(configs, [metrics(c) for c in configs])
    return asked


def test_studies_that_stored_hybrid_or_ehvi_replay_them() -> None:
    assert ALGORITHMS.entry("hybrid").factory is HybridSearch
    assert canonical_algorithm("hybrid") == "hybrid"  # the default before screened
    assert canonical_algorithm("ehvi") == "ehvi"  # the default before hybrid


@pytest.mark.parametrize(("option", "value", "message"), [
    ("handover", -1, "handover must be an integer >= 0"),
    ("handover", 2.5, "handover must be an integer >= 0"),
    ("pop_size", 1, "pop_size must be an integer >= 2"),
    ("model", "ridge", "model must be a predictor with an uncertainty"),
])
def test_bad_options_are_rejected(option: str, value, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        get_algorithm("hybrid", problem_(), seed=0, **{option: value})


def test_before_the_handover_the_asks_are_ehvis() -> None:
    hybrid = get_algorithm("hybrid", problem_(), seed=2, handover=26, **OPTIONS)
    ehvi = get_algorithm("ehvi", problem_(), seed=2, **OPTIONS)
    first = [c.to_json() for b in drive(hybrid, 4) for c in b]  # 8 + 3 x 6 = 26 told
    assert first == [c.to_json() for b in drive(ehvi, 4) for c in b]
    assert hybrid.ga_ is None
    assert [c.to_json() for c in hybrid.ask()] != [c.to_json() for c in ehvi.ask()]


def test_nsga2_starts_from_everything_measured_and_proposes_only_new_configs() -> None:
    algo = get_algorithm("hybrid", problem_(), seed=0, handover=20, pop_size=6, **OPTIONS)
    measured = {c for b in drive(algo, 3) for c in b}  # 8 + 6 + 6 = 20 told
    children = algo.ask()
    assert algo.ga_ is not None
    first_population = {algo.ga_._encoding.decode(x) for x in algo.ga_.algorithm_.pop.get("X")}
    assert first_population == measured  # ranked by its survival, nothing dropped yet
    assert len(children) == 6 and not set(children) & measured
    assert len(set(children)) == len(children)
    algo.tell(children, [metrics(c) for c in children])
    later = [c for b in drive(algo, 3) for c in b]
    assert not set(later) & (measured | set(children)) and len(set(later)) == len(later)
    assert len(algo.ga_.algorithm_.pop) == 6  # back to pop_size after a generation


def test_resume_across_the_handover_replays_the_same_configs() -> None:
    def search(storage, n):
        problem = problem_()
        meta = StudyMeta.for_problem(problem, supernet="wide", checkpoint_hash="c",
                                     hardware="hw", hardware_fingerprint="hw-v1", seed=1,
                                     algorithm="hybrid")
        study = open_study("s", storage, meta=meta, space=SPACE)
        algo = get_algorithm("hybrid", problem, seed=1, handover=14, pop_size=6, **OPTIONS)
        run_search(problem, algo, FunctionEvaluator(SPACE, metrics, fingerprint="f"), study,
                   n_evals=n, progress=False)
        return [t.config for t in study.trials()]

    whole = search(InMemoryStorage(), 32)
    parts = InMemoryStorage()
    search(parts, 14)  # stops at the handover
    assert search(parts, 32) == whole


def test_nan_and_infeasible_results_survive_the_handover() -> None:
    algo = get_algorithm("hybrid", problem_(budget_ms=5.0), seed=0, handover=8, pop_size=4,
                         **OPTIONS)
    for i in range(4):
        configs = algo.ask()
        assert configs
        results = [metrics(c) for c in configs]
        if i == 1:
            results = [{"accuracy": float("nan"), "latency_ms": float("nan")} for _ in configs]
        algo.tell(configs, results)
    assert algo.ga_ is not None
