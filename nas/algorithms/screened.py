"""NSGA-II whose children are screened by expected hypervolume improvement.

NSGA-II (:mod:`nas.algorithms.nsga2`) breeds its children next to the measured front,
which is where a front is refined. A model cannot tell which of the many cells near the
front is really on it (on NAS-Bench-201 hundreds of cells sit within 0.2% of the true
front's error; see :mod:`nas.algorithms.hybrid`), but it can tell a promising child from
a hopeless one. So each generation:

1. NSGA-II breeds ``screen`` x ``pop_size`` distinct new children of its population
   (binary tournament, SBX and polynomial mutation, no config measured before);
2. one predictor per metric (a Gaussian process by default) is fitted on the last
   ``max_train`` evaluations, and the children are ranked by expected hypervolume
   improvement times the probability that the budgets hold, as ``ehvi`` ranks its
   candidates (Kriging-believer greedy batch);
3. only the best ``pop_size`` children are evaluated; they, and only they, enter
   NSGA-II's survival (rank and crowding distance over parents and children).

In a space too large to enumerate (more than ``max_enumerate`` configs) the children of
20 random configs need not reach the front's ends, so the models also score ``reach``
uniform random configs, and one predicted to extend an end of the measured front beyond
1% of its range (``ehvi``'s anchors) takes a child's place in the batch and joins the
survival. On the main job (HAT, 2.4 x 10^10 subnets) this took the default at 120
evaluations from a 12.8% to a 2.7% gap; in NAS-Bench-201's 15,625 cells it cost pixel3
1.08x / 1.12x NSGA-II's gap at 100 / 500, so it is off there.

This is pre-selection, the individual-based model management of surrogate-assisted
evolution (Jin, "Surrogate-assisted evolutionary computation: recent advances and
future challenges", Swarm and Evolutionary Computation 2011). With a model that knows
nothing the screen keeps children at random and the search is NSGA-II's; with a good
one NSGA-II's evaluations go to its best children. The first ``n_init`` evaluations are
uniform random configs, which become the first population. Deterministic given the
seed and what it is told.

The constants were measured on NAS-Bench-201's five devices (issue 16, 10 seeds, the
median hypervolume gap as a multiple of NSGA-II's at 100 / 250 / 500 evaluations; see
ARCHITECTURE.md): ``screen=3`` leaves 0.40-0.82x everywhere; ``screen=5`` is better on
four devices but 1.01x on pixel3 at 250, and ``screen=10`` 1.09x there at 500; starting
from 100 ``ehvi`` evaluations instead of 20 random ones lost on pixel3 (1.36x at 250).
``max_train=250`` bounds a generation's model cost (one Gaussian process fit per metric,
about a second), so the cost per evaluation stops growing after 250 evaluations.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nas._problem import Problem
from nas._space import Config, space_features
from nas.algorithms._acquisition import Normaliser
from nas.algorithms._base import ALGORITHMS, check_int
from nas.algorithms._surrogate import MetricModels, Prediction, fit_metric_models, random_unseen
from nas.algorithms.ehvi import EHVISearch, _anchors
from nas.algorithms.nsga2 import NSGA2Search, SeededNSGA2


@ALGORITHMS.register(
    "screened",
    description="NSGA-II whose children are screened by expected hypervolume gain",
)
class ScreenedNSGA2Search(EHVISearch):
    """NSGA-II with each generation's children pre-selected by EHVI.

    Args:
        problem: objectives and budgets.
        seed: seeds the first population, NSGA-II and the predictors.
        pop_size: NSGA-II's population, and the children evaluated per generation.
        screen: children bred per child evaluated.
        n_init: random configs evaluated first (NSGA-II's first population).
        max_train: the predictors fit on at most this many of the latest evaluations
            (a Gaussian process costs the cube of its training set).
        model, n_samples: as :class:`~nas.algorithms.ehvi.EHVISearch`.

    Raises:
        ValueError: an option out of its range, or a model without uncertainty.
    """

    name = "screened"

    def __init__(
        self,
        problem: Problem,
        *,
        seed: int,
        pop_size: int = 20,
        screen: int = 3,
        n_init: int = 20,
        max_train: int = 250,
        reach: int = 1000,
        model: str = "gp",
        n_samples: int = 64,
    ) -> None:
        check_int("pop_size", pop_size, least=2)
        check_int("screen", screen, least=1)
        check_int("max_train", max_train, least=2)
        check_int("reach", reach, least=0)
        super().__init__(problem, seed=seed, model=model, n_init=n_init,
                         batch_size=pop_size, n_samples=n_samples)
        self.options = dict(pop_size=pop_size, screen=screen, n_init=n_init,
                            max_train=max_train, reach=reach, model=model,
                            n_samples=n_samples)
        self.pop_size = pop_size
        self.screen = screen
        self.max_train = max_train
        self.reach = reach
        self._large: bool | None = None
        self.ga_: NSGA2Search | None = None

    def _ask(self) -> Sequence[Config]:
        history = self.history_
        if self.ga_ is None and len(history) < self.n_init:
            return super()._ask()  # the random first population
        if self.ga_ is None:
            self.ga_ = self._start_ga()
        children = self.ga_.ask()
        if len(children) <= self.pop_size:
            return children
        if np.isfinite(history.latest(self.max_train).objectives()).all(1).sum() < 2:
            # nothing to fit the models on (failed evaluations): children in breeding
            # order, which is random
            return self.ga_.keep_only(range(self.pop_size))
        assert self.rng_ is not None
        pool = random_unseen(self.problem.space, self.rng_, history.known | set(children),
                             self.reach) if self._reaches() else []
        X = space_features(self.problem.space, children + pool)
        draws = self.rng_.standard_normal((self.n_samples, len(self.problem.metric_names)))
        prediction = self._fit_models().sample(X, draws)
        ends = self._ends(prediction) if pool else []
        extra = [pool[i - len(children)] for i in ends if i >= len(children)]
        kept = [i for i in ends if i < len(children)]
        others = [i for i in range(len(children)) if i not in kept]
        rest = Prediction(prediction.samples[others], prediction.median[others],
                          prediction.p_feasible[others])
        size = self.pop_size - len(ends)
        picks = [others[i] for i in self._select(rest, size)] if size > 0 else []
        return self.ga_.keep_only(sorted([*kept, *picks]), extra=extra)

    def _reaches(self) -> bool:
        """Whether to look for the ends beyond the children: only in a space too large to
        enumerate (``max_enumerate``), where 20 random configs and their children need
        not span the front (see the module docstring)."""
        if self._large is None:
            self._large = self.problem.space.cardinality() > self.max_enumerate
        return self.reach > 0 and self._large

    def _ends(self, prediction: Prediction) -> list[int]:
        """Candidates predicted to extend the measured front's ends (``ehvi``'s anchors),
        among the children and the random pool."""
        Y, feasible = self.history_.objectives(), self.history_.feasible()
        if Y.shape[1] != 2 or not feasible.any():
            return []
        norm = Normaliser(np.vstack([Y[feasible], prediction.median]))
        return _anchors(norm(prediction.median), prediction.p_feasible, norm(Y[feasible]))

    def _tell(self, configs: list[Config], results: list[dict[str, float]]) -> None:
        super()._tell(configs, results)
        if self.ga_ is not None:
            self.ga_.tell(configs, results)

    def _fit_models(self) -> MetricModels:
        history = self.history_.latest(self.max_train)
        return fit_metric_models(history, space_features(self.problem.space, history.configs),
                                 model=self.model, seed=self.seed + len(self.history_))

    def _start_ga(self) -> NSGA2Search:
        return SeededNSGA2.told(self.problem, seed=self.seed, pop_size=self.pop_size,
                                configs=self.history_.configs,
                                results=self.history_.metrics,
                                n_offsprings=self.screen * self.pop_size)


ALGORITHMS.register(
    "default", description="The default search: currently screened"
)(ScreenedNSGA2Search)
