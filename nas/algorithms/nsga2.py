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

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from nas._problem import Problem
from nas._space import Config
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


class SeededNSGA2(NSGA2Search):
    """``nsga2`` whose first ask returns ``start`` (canonical configs, e.g. everything
    another search measured) instead of random ones; not registered (a part of other
    searches)."""

    def __init__(self, problem: Problem, *, seed: int, pop_size: int,
                 start: Sequence[Config], n_offsprings: int | None = None) -> None:
        super().__init__(problem, seed=seed, pop_size=pop_size, n_offsprings=n_offsprings)
        self._start = list(start)

    @classmethod
    def told(cls, problem: Problem, *, seed: int, pop_size: int, configs: Sequence[Config],
             results: Sequence[Mapping[str, float]],
             n_offsprings: int | None = None) -> SeededNSGA2:
        """NSGA-II whose first population is ``configs`` (repeats counted once), told
        their ``results`` at once: nothing is evaluated again, and its first ask is
        the first generation of children."""
        ga = cls(problem, seed=seed, pop_size=pop_size, n_offsprings=n_offsprings,
                 start=list(dict.fromkeys(configs)))
        first = ga.ask()
        known = dict(zip(configs, results, strict=True))
        ga.tell(first, [known[c] for c in first])
        return ga

    def _build(self, operators: dict[str, Any]) -> Any:
        assert self._encoding is not None
        X = np.array([self._encoding.encode(c) for c in self._start], dtype=int).reshape(
            len(self._start), self._encoding.n_free)
        return super()._build({**operators, "sampling": X})
