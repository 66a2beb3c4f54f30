"""EHVI first, then NSGA-II started from everything EHVI measured (the default search
from issue 16 until :mod:`nas.algorithms.screened` replaced it; studies that stored it
replay it).

``ehvi`` (:mod:`nas.algorithms.ehvi`) finds the front's ends and its broad shape in few
evaluations: on every NAS-Bench-201 device it is ahead of NSGA-II at 100. But its
predictors are smooth, and once the front is close, which of the many cells that predict
alike is really on it is decided by detail they cannot learn (on NAS-Bench-201, hundreds
of cells sit within 0.2% of the true front's error); NSGA-II, which looks only next to
what it has measured, then catches up. So this search hands over:

1. the first ``handover`` evaluations (250) are exactly ``ehvi``'s (20 random configs,
   then batches of 10 by expected hypervolume improvement);
2. then NSGA-II (pymoo's, as ``nsga2``: SBX and polynomial mutation on the choice
   indices, duplicates and measured configs never proposed again) takes over, its first
   population *every* config measured so far, which its survival ranks by
   non-dominated rank and crowding distance; each later ask is one generation of
   ``pop_size`` children.

Measured alternatives (issue 16; figures in ARCHITECTURE.md): a share of NSGA-II-style
local moves in every batch lost to NSGA-II on pixel3 at every count (each model pick is
an evaluation the local search does not get, and late in a run they add little); handing
over at 100 beat NSGA-II at 500 on three devices but left a larger gap than ``ehvi`` at
250 on gold_6226 and titanxp_1. At 250 nothing ``ehvi`` reaches is given up.
Deterministic given the seed and what it is told, like every algorithm here (the
hand-over replays with the rest).
"""

from __future__ import annotations

from collections.abc import Sequence

from nas._problem import Problem
from nas._space import Config
from nas.algorithms._base import ALGORITHMS, check_int
from nas.algorithms.ehvi import EHVISearch
from nas.algorithms.nsga2 import NSGA2Search, SeededNSGA2


@ALGORITHMS.register(
    "hybrid", description="ehvi for the first 250 evaluations, then NSGA-II from all of them"
)
class HybridSearch(EHVISearch):
    """``ehvi`` for ``handover`` evaluations, then NSGA-II seeded with all of them.

    Args:
        problem: objectives and budgets.
        seed: seeds ``ehvi`` (initial design, candidate draws, predictors) and NSGA-II.
        handover: evaluations (told configs) after which NSGA-II takes over; ``ehvi``'s
            last batch may pass it.
        pop_size: NSGA-II's population and children per generation after the
            hand-over.
        model, n_init, batch_size, n_samples, max_enumerate, n_random: as
            :class:`~nas.algorithms.ehvi.EHVISearch`, for the first phase.

    Raises:
        ValueError: an option out of its range, or a model without uncertainty.
    """

    name = "hybrid"

    def __init__(
        self,
        problem: Problem,
        *,
        seed: int,
        handover: int = 250,
        pop_size: int = 20,
        model: str = "gp",
        n_init: int = 20,
        batch_size: int = 10,
        n_samples: int = 64,
        max_enumerate: int = 20_000,
        n_random: int = 2_000,
    ) -> None:
        check_int("handover", handover, least=0)
        check_int("pop_size", pop_size, least=2)
        super().__init__(problem, seed=seed, model=model, n_init=n_init,
                         batch_size=batch_size, n_samples=n_samples,
                         max_enumerate=max_enumerate, n_random=n_random)
        self.options.update(handover=handover, pop_size=pop_size)
        self.handover = handover
        self.pop_size = pop_size
        self.ga_: NSGA2Search | None = None

    def _ask(self) -> Sequence[Config]:
        if self.ga_ is None and (len(self.history_) < self.handover or not len(self.history_)):
            return super()._ask()
        if self.ga_ is None:
            self.ga_ = self._start_ga()
        return self.ga_.ask()

    def _tell(self, configs: list[Config], results: list[dict[str, float]]) -> None:
        super()._tell(configs, results)
        if self.ga_ is not None:
            self.ga_.tell(configs, results)

    def _start_ga(self) -> NSGA2Search:
        return SeededNSGA2.told(self.problem, seed=self.seed, pop_size=self.pop_size,
                                configs=self.history_.configs,
                                results=self.history_.metrics)
