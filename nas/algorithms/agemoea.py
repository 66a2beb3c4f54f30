"""AGE-MOEA over the integer encoding of the search space, driven by ask/tell.

Panichella, "An Adaptive Evolutionary Algorithm based on Non-Euclidean Geometry for
Many-objective Optimization", GECCO 2019: NSGA-II's selection with the crowding distance
replaced by a survival score computed on an estimate of the front's geometry (its
Minkowski ``p``). The implementation is pymoo's ``AGEMOEA`` (which needs ``numba``, the
``agemoea`` extra), used through its ask/tell interface on the same encoding, canonical
repair, duplicate elimination and constraint handling as ``nsga2``
(:mod:`nas.algorithms._pymoo`).
"""

from __future__ import annotations

from typing import Any

from nas.algorithms._base import ALGORITHMS, require_algorithm
from nas.algorithms._pymoo import PymooSearch


@ALGORITHMS.register("agemoea", description="AGE-MOEA (pymoo) on the integer encoding")
class AGEMOEASearch(PymooSearch):
    """AGE-MOEA, seeded, on the integer vector encoding of the space (two or more
    objectives); options as :class:`~nas.algorithms._pymoo.PymooSearch`."""

    name = "agemoea"
    extra = "agemoea"  # pymoo's AGEMOEA needs numba
    multi_objective_only = True

    def _build(self, operators: dict[str, Any]) -> Any:
        require_algorithm(self.name)
        from pymoo.algorithms.moo.age import AGEMOEA

        return AGEMOEA(
            pop_size=self.pop_size, n_offsprings=self.n_offsprings, seed=self.seed, **operators
        )
