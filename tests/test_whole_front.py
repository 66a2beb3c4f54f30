"""`nas search` without `--budget`: the whole front, its hypervolume normalised by the
space's own latency range (the reference kept by the study), saying so."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cli_helpers import nas, one_line_error

from nas import Objective, accuracy_latency_problem
from nas._job import slowest_latency
from nas._pareto import hypervolume, pareto_front
from nas.studies import load_study
from nas.supernets.nb201 import NB201_SPACE

SEARCH = ["search", "--supernet", "nb201", "--hw", "pixel3", "--algorithm", "random"]


def search_json(*args: str) -> dict:
    result = nas(*SEARCH, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture
def storage(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 's.db'}"


def test_no_budget_searches_the_whole_front_and_says_how_it_is_normalised(storage):
    printed = nas(*SEARCH, "--evals", "30", "--storage", storage)
    assert printed.exit_code == 0, printed.output
    words = " ".join(printed.output.split())  # the console wraps long lines
    assert "no latency budget: the whole front" in words
    assert "normalised by the space's range" in words

    document = search_json("--evals", "30", "--storage", storage)
    reference = document["latency_reference_ms"]
    assert document["budget_ms"] is None and reference > 0
    trials = load_study("nb201-pixel3", storage).trials()
    assert len(trials) == 30 and all(t.feasible for t in trials)  # no budget, none dropped
    points = np.array([[1 - t.metrics["accuracy"], t.metrics["latency_ms"]] for t in trials])
    front = {trials[i].number for i in pareto_front(points)}
    assert {p["trial"] for p in document["pareto"]} == front
    normalised = points / [1.0, reference]
    assert document["hypervolume"] == pytest.approx(hypervolume(normalised, [1.0, 1.0]))


def test_the_study_keeps_its_reference_and_a_budget_needs_change_budget(storage):
    first = search_json("--evals", "10", "--storage", storage)
    again = search_json("--evals", "14", "--storage", storage)
    assert again["latency_reference_ms"] == first["latency_reference_ms"]
    assert (again["evaluations"], again["new_evaluations"]) == (14, 4)
    one_line_error(nas(*SEARCH, "--evals", "16", "--budget", "5ms", "--storage", storage),
                   "budget none (the whole front)", "--change-budget")
    changed = search_json("--evals", "16", "--budget", "5ms", "--change-budget",
                          "--storage", storage)
    assert changed["budget_ms"] == 5.0
    assert all(p["latency_ms"] <= 5.0 for p in changed["pareto"])


def test_the_reference_is_the_slowest_subnet_priced():
    from nas._job import SearchRequest, prepare_search

    prepared = prepare_search(SearchRequest(supernet="nb201", hardware="pixel3",
                                            budget_ms=None, evals=1, storage="sqlite://"))
    evaluator = prepared.evaluator
    largest = evaluator.target.latency_ms(evaluator.supernet, NB201_SPACE.largest(), None)
    # NAS-Bench-201's genes are unordered: `largest()` (all first choices) is not the slowest
    assert slowest_latency(evaluator) == prepared.request.latency_reference_ms > largest


@pytest.mark.parametrize(("direction", "reference"),
                         [("maximize", 1.0), ("minimize", 0.0), ("minimize", float("nan"))])
def test_a_reference_must_be_positive_on_a_minimised_objective(direction, reference):
    with pytest.raises(ValueError, match="reference must be a positive number"):
        Objective("latency_ms", direction, reference)


def test_a_problem_without_budget_needs_a_reference():
    with pytest.raises(ValueError, match="give reference_ms"):
        accuracy_latency_problem(NB201_SPACE, budget_ms=None)
    problem = accuracy_latency_problem(NB201_SPACE, budget_ms=None, reference_ms=20.0)
    assert problem.constraints == () and problem.reference("latency_ms") == 20.0
    budgeted = accuracy_latency_problem(NB201_SPACE, budget_ms=5.0, reference_ms=20.0)
    assert budgeted.reference("latency_ms") == 5.0  # a budget wins
