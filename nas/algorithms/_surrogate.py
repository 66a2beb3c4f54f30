"""Shared machinery of the predictor-in-the-loop searches (``linas``, ``ehvi``).

Both keep everything they were told (:class:`History`), refit one predictor per metric
the problem reads on it (:func:`fit_metric_models`), and choose what to evaluate next
among candidates the predictors score (:func:`candidate_pool`). The predictors are the
platform's own (:mod:`nas.predictors`), fed the space's features
(:func:`nas._space.space_features`), so any space works without code of its own.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nas._problem import Problem
from nas._space import Config, SearchSpace


@dataclass
class History:
    """Every config told so far, with its metrics, in the order told."""

    problem: Problem
    configs: list[Config] = field(default_factory=list)
    metrics: list[dict[str, float]] = field(default_factory=list)
    known: set[Config] = field(default_factory=set)

    def add(self, configs: Sequence[Config], results: Sequence[Mapping[str, float]]) -> None:
        for config, result in zip(configs, results, strict=True):
            self.configs.append(config)
            self.metrics.append(dict(result))
            self.known.add(config)

    def __len__(self) -> int:
        return len(self.configs)

    def latest(self, n: int) -> History:
        """The last ``n`` configs told (all of them when fewer), as a history."""
        if len(self) <= n:
            return self
        configs, metrics = self.configs[-n:], self.metrics[-n:]
        return History(self.problem, list(configs), list(metrics), set(configs))

    def values(self, metric: str) -> np.ndarray:
        """The metric of every told config (NaN where it was missing)."""
        return np.array([float(m.get(metric, np.nan)) for m in self.metrics], dtype=float)

    def objectives(self) -> np.ndarray:
        """(n, n_objectives) in minimisation form; NaN rows are failed evaluations."""
        return np.array(
            [[o.sign * float(m.get(o.name, np.nan)) for o in self.problem.objectives]
             for m in self.metrics], dtype=float,
        ).reshape(len(self.metrics), len(self.problem.objectives))

    def feasible(self) -> np.ndarray:
        """Rows whose objectives are finite and every budget holds."""
        ok = np.isfinite(self.objectives()).all(axis=1)
        return ok & np.array([self.problem.is_feasible(m) if o else False
                              for m, o in zip(self.metrics, ok, strict=True)], dtype=bool)


class MetricTransform:
    """The scale a metric is modelled on, where a Gaussian error is a fair guess.

    * ``error``: accuracy-like maximised metrics in [0, 1] are modelled as
      ``log(1 - y)``, so that 94.0% vs 94.3% weighs like 60% vs 63%, and chance-level
      outliers do not swamp the differences at the top that decide the front;
    * ``log``: strictly positive metrics (latency, memory): errors are relative;
    * ``identity`` otherwise.
    """

    _FLOOR = 1e-6

    def __init__(self, kind: str) -> None:
        if kind not in ("error", "log", "identity"):
            raise ValueError(f"unknown metric transform {kind!r}")
        self.kind = kind

    @classmethod
    def for_values(cls, y: np.ndarray, *, maximised: bool) -> MetricTransform:
        if maximised and (y >= 0).all() and (y <= 1).all():
            return cls("error")
        if not maximised and (y > 0).all():
            return cls("log")
        return cls("identity")

    def forward(self, y: np.ndarray) -> np.ndarray:
        if self.kind == "error":
            return np.log(np.clip(1.0 - y, self._FLOOR, None))
        if self.kind == "log":
            return np.log(y)
        return y

    def backward(self, z: np.ndarray) -> np.ndarray:
        if self.kind == "error":
            return 1.0 - np.exp(z)
        if self.kind == "log":
            return np.exp(z)
        return z


class MetricModels:
    """One fitted predictor per metric the problem reads, on its :class:`MetricTransform`.

    :meth:`sample` draws every metric of every candidate from the predictors' Gaussian
    (mean, std) on the modelled scale and maps the draws back, so acquisitions see the
    real, possibly skewed, distribution; a model without uncertainty gives std 0.
    """

    def __init__(self, problem: Problem, models: Mapping[str, Any],
                 transforms: Mapping[str, MetricTransform]) -> None:
        self.problem = problem
        self.models = dict(models)
        self.transforms = dict(transforms)

    def _moments(self, name: str, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        model = self.models[name]
        if model.has_std:
            mean, std = model.predict(X, return_std=True)
            return np.asarray(mean, dtype=float), np.asarray(std, dtype=float)
        mean = np.asarray(model.predict(X), dtype=float)
        return mean, np.zeros_like(mean)

    def medians(self, X: np.ndarray) -> dict[str, np.ndarray]:
        """The predicted median of every metric, in its own units and direction."""
        return {name: self.transforms[name].backward(self._moments(name, X)[0])
                for name in self.problem.metric_names}

    def sample(self, X: np.ndarray, normal_draws: np.ndarray) -> Prediction:
        """Draws of every candidate's objectives, with ``normal_draws`` (S, n_metrics)
        standard normals shared by all candidates (common random numbers)."""
        names = self.problem.metric_names
        draws: dict[str, np.ndarray] = {}
        medians: dict[str, np.ndarray] = {}
        for j, name in enumerate(names):
            mean, std = self._moments(name, X)
            transform = self.transforms[name]
            z = mean[:, None] + std[:, None] * normal_draws[None, :, j]
            draws[name] = transform.backward(z)
            medians[name] = transform.backward(mean)
        objectives = self.problem.objectives
        samples = np.stack([o.sign * draws[o.name] for o in objectives], axis=-1)
        median = np.stack([o.sign * medians[o.name] for o in objectives], axis=-1)
        feasible = np.ones(samples.shape[:2], dtype=bool)
        for c in self.problem.constraints:
            feasible &= draws[c.metric] <= c.upper
        return Prediction(samples=samples, median=median, p_feasible=feasible.mean(axis=1))


@dataclass(frozen=True)
class Prediction:
    """What the predictors say about N candidates, in minimisation form.

    Attributes:
        samples: (N, S, n_objectives) draws.
        median: (N, n_objectives) the predicted medians (the "believed" outcomes).
        p_feasible: (N,) the share of draws within every budget.
    """

    samples: np.ndarray
    median: np.ndarray
    p_feasible: np.ndarray


def fit_metric_models(history: History, X: np.ndarray, *, model: str,
                      seed: int) -> MetricModels:
    """Fit predictor ``model`` (a :data:`nas.predictors.PREDICTORS` name) for every metric
    the problem reads, on its :class:`MetricTransform` scale, on the told rows where
    that metric is finite.

    Raises:
        ValueError: fewer than two finite values of some metric.
    """
    from nas.predictors import PREDICTORS

    maximised = {o.name for o in history.problem.objectives if o.direction == "maximize"}
    models, transforms = {}, {}
    for name in history.problem.metric_names:
        y = history.values(name)
        rows = np.isfinite(y)
        if rows.sum() < 2:
            raise ValueError(f"metric {name!r} has fewer than 2 finite values to fit on")
        transform = MetricTransform.for_values(y[rows], maximised=name in maximised)
        predictor = PREDICTORS.create(model, seed=seed)
        models[name] = predictor.fit(X[rows], transform.forward(y[rows]))
        transforms[name] = transform
    return MetricModels(history.problem, models, transforms)


def enumerate_space(space: SearchSpace, limit: int) -> list[Config] | None:
    """Every canonical config of ``space``, or None when it has more than ``limit``."""
    if space.cardinality() > limit:
        return None
    lower, upper = space.bounds()
    vectors = np.array(list(itertools.product(
        *(range(lo, hi + 1) for lo, hi in zip(lower, upper)))), dtype=int)
    return list(dict.fromkeys(space.from_vectors(vectors.reshape(-1, len(space)))))


def neighbours(space: SearchSpace, config: Config) -> list[Config]:
    """Every config one gene away from ``config`` (active genes only)."""
    vector = space.to_vector(config)
    lower, upper = space.bounds()
    out: dict[Config, None] = {}
    active = set(config)
    for i, name in enumerate(space.names):
        if name not in active:
            continue
        for value in range(lower[i], upper[i] + 1):
            if value != vector[i]:
                moved = vector.copy()
                moved[i] = value
                out.setdefault(space.from_vector(moved), None)
    out.pop(config, None)
    return list(out)


def candidate_pool(
    space: SearchSpace, rng: np.random.Generator, *, exclude: set[Config], n_random: int,
    around: Iterable[Config] = (),
) -> list[Config]:
    """Configs not in ``exclude``: ``n_random`` uniform draws (fewer if they repeat) plus
    every neighbour of the configs ``around`` (local moves from the current front)."""
    pool: dict[Config, None] = {}
    for config in around:
        for n in neighbours(space, config):
            if n not in exclude:
                pool.setdefault(n, None)
    for _ in range(n_random):
        config = space.sample(rng)
        if config not in exclude:
            pool.setdefault(config, None)
    return list(pool)


def random_unseen(space: SearchSpace, rng: np.random.Generator, exclude: set[Config],
                  n: int, *, max_draws: int = 1000) -> list[Config]:
    """Up to ``n`` distinct uniform configs outside ``exclude``."""
    batch: dict[Config, None] = {}
    for _ in range(max_draws):
        if len(batch) == n:
            break
        config = space.sample(rng)
        if config not in exclude:
            batch.setdefault(config, None)
    return list(batch)
