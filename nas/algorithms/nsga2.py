"""NSGA-II over the integer encoding of the search space, driven by ask/tell.

Deb et al., "A Fast and Elitist Multiobjective Genetic Algorithm: NSGA-II", IEEE TEC
2002; the implementation is pymoo's (Blank & Deb, "pymoo: Multi-Objective Optimization
in Python", IEEE Access 2020), used through its ask/tell interface.

Genes are choice indices (``SearchSpace.to_vector``); genes with a single choice are left
out of the encoding. Variation is SBX crossover and polynomial mutation with rounding,
then a repair that canonicalises each vector (inactive genes read 0), so two vectors
that describe the same subnet are equal and pymoo's duplicate elimination works on
subnets. Offspring equal to a config evaluated in an earlier generation are rejected as
duplicates too (``skip_known``), so every ask proposes new subnets while the space has
them. Budgets become pymoo inequality constraints ``G <= 0`` (relative excess), which
NSGA-II's constrained domination handles. The shared machinery is in
:mod:`nas.algorithms._pymoo`.
"""

from __future__ import annotations

from typing import Any

from nas.algorithms._base import ALGORITHMS
from nas.algorithms._pymoo import PymooSearch


@ALGORITHMS.register("nsga2", description="NSGA-II (pymoo) on the integer encoding")
class NSGA2Search(PymooSearch):
    """NSGA-II, seeded, on the integer vector encoding of the space; options as
    :class:`~nas.algorithms._pymoo.PymooSearch`."""

    name = "nsga2"

    def _build(self, operators: dict[str, Any]) -> Any:
        from pymoo.algorithms.moo.nsga2 import NSGA2

        return NSGA2(
            pop_size=self.pop_size, n_offsprings=self.n_offsprings, seed=self.seed, **operators
        )

