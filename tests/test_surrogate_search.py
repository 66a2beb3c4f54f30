"""The predictor-guided searches' parts: hypervolume improvement, EHVI, the greedy batch,
metric transforms, the extremes rule, LINAS's inner loop and the space features hook."""

from __future__ import annotations

import numpy as np
import pytest

from nas import Gene, SearchSpace
from nas._problem import Constraint, Objective, Problem
from nas._space import SPACE_FEATURES, space_features
from nas.algorithms import get_algorithm
from nas.algorithms._acquisition import (
    Normaliser,
    chebyshev,
    expected_hv_improvement,
    expected_scalar_improvement,
    hv_improvement_2d,
)
from nas.algorithms._surrogate import (
    History,
    MetricTransform,
    enumerate_space,
    fit_metric_models,
    neighbours,
)
from nas.algorithms.ehvi import _anchors, _lazy_greedy_ehvi
from nas.studies import hypervolume

FRONT = np.array([[0.2, 0.8], [0.5, 0.5], [0.8, 0.1]])


def test_hv_improvement_by_hand() -> None:
    # (0.4, 0.4) adds the box [0.4, 0.5] x [0.4, 0.8] (0.04) and [0.5, 0.8] x [0.4, 0.5] (0.03)
    points = np.array([[0.4, 0.4], [0.9, 0.9], [0.0, 0.0], [1.2, 0.0]])
    gains = hv_improvement_2d(points, FRONT, ref=1.1)
    assert gains[0] == pytest.approx(0.07)
    assert gains[1] == 0.0  # dominated
    assert gains[3] == 0.0  # beyond the reference point
    base = hypervolume(FRONT, [1.1, 1.1])
    assert gains[2] == pytest.approx(1.1 * 1.1 - base)  # dominates everything


def test_hv_improvement_equals_the_hypervolume_difference() -> None:
    rng = np.random.default_rng(0)
    front = rng.uniform(0, 1, (12, 2))
    points = rng.uniform(-0.2, 1.2, (200, 2))
    gains = hv_improvement_2d(points, front, ref=1.1)
    base = hypervolume(front, [1.1, 1.1])
    for p, g in zip(points, gains, strict=True):
        assert g == pytest.approx(hypervolume(np.vstack([front, p]), [1.1, 1.1]) - base,
                                  abs=1e-12)
    assert hv_improvement_2d(points[:3], np.zeros((0, 2)), ref=1.1) == pytest.approx(
        [max(1.1 - p[0], 0) * max(1.1 - p[1], 0) for p in points[:3]])


def test_ehvi_of_certain_candidates_is_their_improvement() -> None:
    points = np.array([[0.4, 0.4], [0.9, 0.9]])
    samples = np.repeat(points[:, None, :], 5, axis=1)  # std 0: every draw the same
    assert expected_hv_improvement(samples, FRONT) == pytest.approx(
        hv_improvement_2d(points, FRONT))


def test_ehvi_rewards_uncertainty_behind_the_front() -> None:
    draws = np.random.default_rng(1).standard_normal((4000, 2))
    mean = np.array([[0.55, 0.55], [0.55, 0.55]])  # just behind the front
    std = np.array([[0.01, 0.01], [0.2, 0.2]])
    samples = mean[:, None, :] + std[:, None, :] * draws[None]
    certain, uncertain = expected_hv_improvement(samples, FRONT)
    assert certain == pytest.approx(0.0, abs=1e-6)
    assert uncertain > 0.01


def test_scalarised_improvement_by_hand() -> None:
    observed = np.array([[0.5, 0.5]])
    weights = np.array([0.5, 0.5])
    assert chebyshev(observed, weights)[0] == pytest.approx(0.25 + 0.05 * 0.5)
    samples = np.array([[[0.3, 0.3]], [[0.7, 0.7]]])
    gain = expected_scalar_improvement(samples, observed, weights)
    assert gain == pytest.approx([0.275 - 0.165, 0.0])


def test_normaliser_spans_the_values() -> None:
    Y = np.array([[1.0, 10.0], [3.0, 30.0], [2.0, 10.0]])
    norm = Normaliser(Y)
    assert norm(Y).min(axis=0) == pytest.approx([0, 0])
    assert norm(Y).max(axis=0) == pytest.approx([1, 1])
    assert Normaliser(np.ones((3, 2)))(np.ones((1, 2))).tolist() == [[0.0, 0.0]]


def test_lazy_greedy_matches_plain_greedy() -> None:
    rng = np.random.default_rng(2)
    median = rng.uniform(0, 1, (300, 2))
    samples = median[:, None, :] + 0.05 * rng.standard_normal((1, 16, 2))
    p_feasible = rng.uniform(0.5, 1, 300)
    observed = rng.uniform(0.3, 1, (10, 2))
    lazy = _lazy_greedy_ehvi(samples, median, p_feasible, observed, 6, [])
    front, plain = observed, []
    for _ in range(6):
        score = expected_hv_improvement(samples, front) * p_feasible
        score[plain] = -np.inf
        plain.append(int(np.argmax(score)))
        front = np.vstack([front, median[plain[-1]]])
    assert lazy == plain
    assert len(set(lazy)) == 6


def test_lazy_greedy_never_picks_twice_among_few_candidates() -> None:
    # fewer candidates than it rescores at once: the picks must stay out of the rescoring
    rng = np.random.default_rng(5)
    median = rng.uniform(0, 1, (8, 2))
    samples = median[:, None, :] + 0.2 * rng.standard_normal((1, 16, 2))
    picks = _lazy_greedy_ehvi(samples, median, np.ones(8), rng.uniform(0.3, 1, (5, 2)), 8, [])
    assert sorted(picks) == list(range(8))


def test_anchors_pick_predicted_extremes_beyond_the_observed() -> None:
    observed = np.array([[0.2, 0.5], [0.5, 0.2]])
    median = np.array([[0.1, 0.9], [0.3, 0.3], [0.9, 0.19], [0.0, 0.9]])
    p_feasible = np.array([1.0, 1.0, 1.0, 0.1])
    # candidate 3 is best on the first objective but likely infeasible; candidate 2 beats
    # the observed 0.2 on the second by only 0.01 (not more than the margin)
    assert _anchors(median, p_feasible, observed) == [0]


def test_metric_transforms_round_trip() -> None:
    acc = np.array([0.1, 0.9, 0.94])
    error = MetricTransform.for_values(acc, maximised=True)
    assert error.kind == "error"
    assert error.forward(acc) == pytest.approx(np.log(1 - acc))
    assert error.backward(error.forward(acc)) == pytest.approx(acc)
    lat = np.array([2.0, 50.0])
    assert MetricTransform.for_values(lat, maximised=False).kind == "log"
    assert MetricTransform.for_values(np.array([-1.0, 2.0]), maximised=False).kind == "identity"
    assert MetricTransform.for_values(np.array([12.0, 30.0]), maximised=True).kind == "identity"
    with pytest.raises(ValueError, match="unknown metric transform"):
        MetricTransform("sqrt")


SPACE = SearchSpace("lin", [Gene("a", (0, 1, 2, 3)), Gene("b", (0, 1, 2, 3))])


def lin_metrics(config: dict) -> dict[str, float]:
    return {"accuracy": 0.5 + 0.1 * config["a"] + 0.01 * config["b"],
            "latency_ms": 1.0 + 2.0 * config["a"] + 1.0 * config["b"]}


def test_models_predict_and_sample_in_metric_units() -> None:
    problem = Problem(SPACE, (Objective("accuracy", "maximize"),
                              Objective("latency_ms", "minimize")),
                      (Constraint("latency_ms", 4.0),))
    history = History(problem)
    configs = enumerate_space(SPACE, 100)
    history.add(configs, [lin_metrics(c) for c in configs])
    X = space_features(SPACE, configs)
    models = fit_metric_models(history, X, model="gp", seed=0)
    medians = models.medians(X)
    truth = np.array([lin_metrics(c)["latency_ms"] for c in configs])
    assert medians["latency_ms"] == pytest.approx(truth, rel=0.15)  # ms, not log-ms
    prediction = models.sample(X, np.zeros((1, 2)))
    assert prediction.median[:, 0] == pytest.approx(-medians["accuracy"])  # minimisation form
    assert prediction.samples.shape == (16, 1, 2)
    assert ((prediction.p_feasible == 1.0) == (medians["latency_ms"] <= 4.0)).all()


def test_enumerate_and_neighbours() -> None:
    assert len(enumerate_space(SPACE, 16)) == 16
    assert enumerate_space(SPACE, 15) is None
    config = SPACE.config({"a": 1, "b": 2})
    assert len(neighbours(SPACE, config)) == 6
    assert config not in neighbours(SPACE, config)


def test_linas_measures_what_nsga2_finds_on_the_predictors() -> None:
    """With metrics a predictor learns exactly, the second loop proposes the front."""
    big = SearchSpace("lin2", [Gene(f"g{i}", (0, 1, 2, 3)) for i in range(4)])

    def metrics(config: dict) -> dict[str, float]:
        s = sum(config.values())
        return {"accuracy": 1.0 - 0.5 / (1.0 + s), "latency_ms": 1.0 + s}

    problem = Problem(big, (Objective("accuracy", "maximize"),
                            Objective("latency_ms", "minimize")))
    algo = get_algorithm("linas", problem, seed=0, population=10, inner_evals=400,
                         model="ridge")
    first = algo.ask()
    algo.tell(first, [metrics(c) for c in first])
    second = algo.ask()
    assert len(second) == 10 and not set(second) & set(first)
    sums = {sum(c.values()) for c in second}
    assert len(sums) >= 5  # spread along the front (every config is Pareto optimal here)


def test_ehvi_rejects_a_model_without_uncertainty() -> None:
    problem = Problem(SPACE, (Objective("accuracy", "maximize"),))
    with pytest.raises(ValueError, match="predictor with an uncertainty"):
        get_algorithm("ehvi", problem, seed=0, model="ridge")
    with pytest.raises(ValueError, match="n_init must be an integer >= 2"):
        get_algorithm("ehvi", problem, seed=0, n_init=1)
    with pytest.raises(ValueError, match="model must be a predictor"):
        get_algorithm("linas", problem, seed=0, model="nope")


def test_ehvi_single_objective_finds_the_best() -> None:
    problem = Problem(SPACE, (Objective("accuracy", "maximize"),))
    algo = get_algorithm("ehvi", problem, seed=0, n_init=4, batch_size=2)
    told = []
    for _ in range(4):
        batch = algo.ask()
        algo.tell(batch, [lin_metrics(c) for c in batch])
        told += batch
    assert SPACE.config({"a": 3, "b": 3}) in told


def test_space_features_hook() -> None:
    from nas.supernets.nb201 import NB201_SPACE

    cell = NB201_SPACE.sample(np.random.default_rng(0))
    assert "nb201" in SPACE_FEATURES
    assert space_features(NB201_SPACE, [cell]).shape == (1, 36)
    assert space_features(SPACE, [SPACE.config({"a": 0, "b": 1})]).tolist() == [[0.0, 1.0]]
    assert space_features(SPACE, []).shape == (0, 2)
