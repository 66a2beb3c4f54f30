"""Predictor-guided search that picks each batch by expected hypervolume improvement.

Beyond LINAS (which evaluates whatever NSGA-II finds on the predictors' *means*), this
search uses the predictors' *uncertainty*: a candidate is worth what it is expected to
add to the measured front, integrating over what it might turn out to be (EHVI; see
:mod:`nas.algorithms._acquisition`). A candidate predicted just behind the front but
uncertain is worth evaluating; one predicted on the front but certain to add little
is not. That is the exploration/exploitation trade-off of Bayesian optimisation, here
with the platform's predictors (a Gaussian process by default).

Each ask, after a random initial design:

1. fit one predictor per metric on every config told so far;
2. score the candidates (every config of a space of up to ``max_enumerate`` configs;
   otherwise ``n_random`` uniform draws plus every neighbour of the measured front)
   by EHVI times the probability that the budgets hold;
3. take the batch greedily: the best candidate joins the front at its predicted mean
   ("Kriging believer"), which lowers the worth of candidates it would duplicate, so
   the batch spreads along the front. Improvement can only fall as the front grows, so
   stale scores are upper bounds and only the leaders need rescoring (lazy greedy).

It was the platform's ``default`` search until issue 16 (studies that stored ``ehvi``
still replay it); the default became :mod:`nas.algorithms.hybrid` (this search for 250
evaluations, then NSGA-II), and then :mod:`nas.algorithms.screened` (NSGA-II whose
children this search's acquisition screens); see the README's figures.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nas._problem import Problem
from nas._space import Config, space_features
from nas.algorithms._acquisition import (
    Normaliser,
    expected_hv_improvement,
    expected_scalar_improvement,
)
from nas.algorithms._base import ALGORITHMS, Algorithm, check_int
from nas.algorithms._surrogate import (
    History,
    MetricModels,
    Prediction,
    candidate_pool,
    enumerate_space,
    fit_metric_models,
    random_unseen,
)

_RESCORE = 16  # candidates rescored together in the lazy greedy step
_ANCHOR_MARGIN = 0.01  # normalised; see _anchors


@ALGORITHMS.register(
    "ehvi", description="Predictors with uncertainty; batches by expected hypervolume gain"
)
class EHVISearch(Algorithm):
    """Batch Bayesian optimisation with the platform's predictors and EHVI.

    Args:
        problem: objectives and budgets.
        seed: seeds the initial design, the candidate draws and the predictors.
        model: a predictor that gives an uncertainty (``gp``, ``ensemble``).
        n_init: random configs evaluated before the predictors take over.
        batch_size: configs per ask.
        n_samples: Monte-Carlo draws per candidate for the expected improvement.
        max_enumerate: spaces with at most this many configs are scored whole.
        n_random: uniform candidates per ask in larger spaces (plus the front's
            neighbours).

    Raises:
        ValueError: an option out of its range, or a model without uncertainty.
    """

    name = "ehvi"

    def __init__(
        self,
        problem: Problem,
        *,
        seed: int,
        model: str = "gp",
        n_init: int = 20,
        batch_size: int = 10,
        n_samples: int = 64,
        max_enumerate: int = 20_000,
        n_random: int = 2_000,
    ) -> None:
        from nas.predictors import PREDICTORS

        for option, value, least in (("n_init", n_init, 2), ("batch_size", batch_size, 1),
                                     ("n_samples", n_samples, 1),
                                     ("max_enumerate", max_enumerate, 0),
                                     ("n_random", n_random, 1)):
            check_int(option, value, least=least)
        if model not in PREDICTORS or not PREDICTORS.entry(model).factory.has_std:
            with_std = [n for n in PREDICTORS.names() if PREDICTORS.entry(n).factory.has_std]
            raise ValueError(f"model must be a predictor with an uncertainty "
                             f"({', '.join(with_std)}), got {model!r}")
        super().__init__(problem, seed=seed, model=model, n_init=n_init,
                         batch_size=batch_size, n_samples=n_samples,
                         max_enumerate=max_enumerate, n_random=n_random)
        self.model = model
        self.n_init = n_init
        self.batch_size = batch_size
        self.n_samples = n_samples
        self.max_enumerate = max_enumerate
        self.n_random = n_random
        self.history_ = History(problem)
        self.rng_: np.random.Generator | None = None
        self._all: list[Config] | None = None
        self._all_X: np.ndarray | None = None
        self._enumerated = False

    # -- ask/tell --------------------------------------------------------------------------

    def _ask(self) -> Sequence[Config]:
        space, history = self.problem.space, self.history_
        if self.rng_ is None:
            self.rng_ = np.random.default_rng(self.seed)
        if len(history) < self.n_init or np.isfinite(history.objectives()).all(1).sum() < 2:
            n = max(self.n_init - len(history), self.batch_size)
            return random_unseen(space, self.rng_, history.known, n)
        candidates, X = self._candidates()
        if not candidates:
            return []
        models = self._fit_models()
        draws = self.rng_.standard_normal((self.n_samples, len(self.problem.metric_names)))
        picks = self._select(models.sample(X, draws))
        return [candidates[i] for i in picks]

    def _fit_models(self) -> MetricModels:
        """One predictor per metric on everything told so far (a seam for diagnostics
        that swap in other models, e.g. ``benchmarks/bench_nb201_noise_limit.py``)."""
        history = self.history_
        return fit_metric_models(history, space_features(self.problem.space, history.configs),
                                 model=self.model, seed=self.seed + len(history))

    def _tell(self, configs: list[Config], results: list[dict[str, float]]) -> None:
        self.history_.add(configs, results)

    # -- candidates and selection ---------------------------------------------------------

    def _candidates(self) -> tuple[list[Config], np.ndarray]:
        space, known = self.problem.space, self.history_.known
        if not self._enumerated:
            self._enumerated = True
            self._all = enumerate_space(space, self.max_enumerate)
            if self._all is not None:
                self._all_X = space_features(space, self._all)
        if self._all is not None:
            rows = [i for i, c in enumerate(self._all) if c not in known]
            assert self._all_X is not None
            return [self._all[i] for i in rows], self._all_X[rows]
        assert self.rng_ is not None
        front = [self.history_.configs[i] for i in self._front_rows()]
        pool = candidate_pool(space, self.rng_, exclude=known, n_random=self.n_random,
                              around=front)
        return pool, space_features(space, pool)

    def _front_rows(self) -> np.ndarray:
        from nas._pareto import pareto_front

        Y, feasible = self.history_.objectives(), self.history_.feasible()
        rows = np.flatnonzero(feasible)
        return rows[pareto_front(Y[rows])] if len(rows) else rows

    def _select(self, prediction: Prediction, size: int | None = None) -> list[int]:
        """Up to ``size`` (default ``batch_size``) candidates, in the order picked."""
        Y, feasible = self.history_.objectives(), self.history_.feasible()
        k = min(self.batch_size if size is None else size, len(prediction.median))
        p_feasible = prediction.p_feasible
        if not feasible.any():  # nothing feasible measured yet: find feasibility first
            return [int(i) for i in np.argsort(-p_feasible, kind="stable")[:k]]
        norm = Normaliser(np.vstack([Y[feasible], prediction.median]))
        samples, median, observed = norm(prediction.samples), norm(prediction.median), norm(
            Y[feasible])
        if median.shape[1] == 2:
            anchors = _anchors(median, p_feasible, observed)[:k]
            return _lazy_greedy_ehvi(samples, median, p_feasible, observed, k, anchors)
        assert self.rng_ is not None
        picks: list[int] = []
        for weights in self.rng_.dirichlet(np.ones(median.shape[1]), size=k):
            score = expected_scalar_improvement(samples, observed, weights) * p_feasible
            score[picks] = -np.inf
            picks.append(int(np.argmax(score)))
        return picks


def _anchors(median: np.ndarray, p_feasible: np.ndarray, observed: np.ndarray) -> list[int]:
    """Per objective, the likely-feasible candidate predicted best on it, when it beats
    the best value observed by more than :data:`_ANCHOR_MARGIN` of the range.

    The front's ends carry a large share of the hypervolume but EHVI undervalues them
    while the observations do not reach that far (the reference point is set from what
    is seen); evaluating the predicted extremes fixes the box in a few evaluations.
    """
    picks: list[int] = []
    likely = p_feasible >= 0.5
    for j in range(median.shape[1]):
        scores = np.where(likely, median[:, j], np.inf)
        best = int(np.argmin(scores))
        if scores[best] < observed[:, j].min() - _ANCHOR_MARGIN and best not in picks:
            picks.append(best)
    return picks


def _lazy_greedy_ehvi(samples: np.ndarray, median: np.ndarray, p_feasible: np.ndarray,
                      observed: np.ndarray, k: int, anchors: list[int]) -> list[int]:
    """``k`` candidates: the ``anchors``, then each maximising EHVI x P(feasible) over
    the observed front plus the predicted medians of those already picked."""
    picks: list[int] = list(anchors)
    front = np.vstack([observed, median[picks]]) if picks else observed
    bound = expected_hv_improvement(samples, front) * p_feasible
    bound[picks] = -np.inf
    while len(picks) < k:
        leaders = np.argsort(-bound, kind="stable")[:_RESCORE]
        leaders = leaders[bound[leaders] > -np.inf]  # few candidates: never a pick again
        if bound[leaders[0]] <= 0:  # nothing is expected to improve: spread by distance
            rest = [int(i) for i in np.argsort(-_distance_to(median, front), kind="stable")
                    if i not in picks]
            return picks + rest[: k - len(picks)]
        fresh = expected_hv_improvement(samples[leaders], front)
        bound[leaders] = fresh * p_feasible[leaders]
        best = int(np.argmax(bound))
        if best in leaders:
            picks.append(best)
            bound[best] = -np.inf
            front = np.vstack([front, median[best]])
    return picks


def _distance_to(points: np.ndarray, front: np.ndarray) -> np.ndarray:
    """Distance of each point to its nearest front point (normalised objectives)."""
    return np.sqrt(((points[:, None, :] - front[None, :, :]) ** 2).sum(-1)).min(axis=1)
