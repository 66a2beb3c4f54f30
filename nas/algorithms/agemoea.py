"""AGE-MOEA over the integer encoding of the search space, driven by ask/tell.

Panichella, "An Adaptive Evolutionary Algorithm based on Non-Euclidean Geometry for
Many-objective Optimization", GECCO 2019: NSGA-II's selection with the crowding distance
replaced by a survival score computed on an estimate of the front's geometry (its
Minkowski ``p``). The implementation is pymoo's ``AGEMOEA`` (which needs ``numba``),
used through its ask/tell interface on the same encoding, canonical repair, duplicate
elimination and constraint handling as ``nsga2`` (:mod:`nas.algorithms._pymoo`).
"""

from __future__ import annotations

from typing import Any

from nas.algorithms._base import ALGORITHMS
from nas.algorithms._pymoo import PymooSearch


@ALGORITHMS.register("agemoea", description="AGE-MOEA (pymoo) on the integer encoding")
class AGEMOEASearch(PymooSearch):
    """AGE-MOEA, seeded, on the integer vector encoding of the space.

    The first ask returns ``pop_size`` distinct uniformly random configs; every later ask
    returns ``n_offsprings`` children of the current population.

    Args:
        problem: objectives and budgets (two or more objectives).
        seed: seeds pymoo's generator (the global numpy generator is never touched).
        pop_size: the population size (20 suits searches of a few hundred evaluations).
        n_offsprings: children per generation (``pop_size`` if None).
        crossover_prob: probability that a pair of parents is crossed over (SBX).
        crossover_eta: SBX distribution index (small values spread children further).
        mutation_eta: polynomial mutation distribution index.
        skip_known: never propose a config evaluated in an earlier generation.

    Raises:
        ValueError: an option out of its range, or a single-objective problem.
        ImportError: ``numba`` is not installed (on the first ask).
    """

    name = "agemoea"
    multi_objective_only = True

    def _build(self, operators: dict[str, Any]) -> Any:
        try:
            from pymoo.algorithms.moo.age import AGEMOEA
        except Exception as err:  # pymoo raises a bare Exception when numba is missing
            raise ImportError(
                "the 'agemoea' algorithm needs numba (pip install numba)"
            ) from err

        return AGEMOEA(
            pop_size=self.pop_size, n_offsprings=self.n_offsprings, seed=self.seed, **operators
        )
