"""NSGA-III over the integer encoding of the search space, driven by ask/tell.

Deb & Jain, "An Evolutionary Many-Objective Optimization Algorithm Using
Reference-Point-Based Nondominated Sorting Approach", IEEE TEC 2014: NSGA-II's
crowding distance replaced by niching around a set of reference directions. The
implementation is pymoo's ``NSGA3`` with Das-Dennis reference directions, used through
its ask/tell interface on the same encoding, canonical repair, duplicate elimination
and constraint handling as ``nsga2`` (:mod:`nas.algorithms._pymoo`).
"""

from __future__ import annotations

from math import comb
from typing import Any

import numpy as np

from nas._problem import Problem
from nas.algorithms._base import ALGORITHMS
from nas.algorithms._pymoo import PymooSearch


def default_partitions(n_obj: int, pop_size: int) -> int:
    """The most Das-Dennis partitions whose reference directions (``C(p + m - 1, m - 1)``
    of them for ``m`` objectives) still fit in ``pop_size``, at least 1.

    Two objectives and a population of 20 give 19 partitions: 20 directions, one per
    member, evenly spread along the front.
    """
    partitions = 1
    while comb(partitions + 1 + n_obj - 1, n_obj - 1) <= pop_size:
        partitions += 1
    return partitions


@ALGORITHMS.register("nsga3", description="NSGA-III (pymoo) on the integer encoding")
class NSGA3Search(PymooSearch):
    """NSGA-III, seeded, on the integer vector encoding of the space.

    Options as :class:`~nas.algorithms._pymoo.PymooSearch` (two or more objectives;
    ``pop_size`` at least the number of reference directions), plus:

    Args:
        n_partitions: Das-Dennis partitions of the reference directions (None: the most
            whose directions fit in ``pop_size``, see :func:`default_partitions`).

    Raises:
        ValueError: an option out of its range, more reference directions than
            ``pop_size``, or a single-objective problem.
    """

    name = "nsga3"
    multi_objective_only = True

    def __init__(
        self,
        problem: Problem,
        *,
        seed: int,
        pop_size: int = 20,
        n_partitions: int | None = None,
        n_offsprings: int | None = None,
        crossover_prob: float = 0.9,
        crossover_eta: float = 3.0,
        mutation_eta: float = 3.0,
        skip_known: bool = True,
    ) -> None:
        if n_partitions is not None and (
            isinstance(n_partitions, bool) or not isinstance(n_partitions, int)
            or n_partitions < 1
        ):
            raise ValueError(
                f"n_partitions must be a positive integer or None, got {n_partitions!r}"
            )
        super().__init__(
            problem,
            seed=seed,
            pop_size=pop_size,
            n_offsprings=n_offsprings,
            crossover_prob=crossover_prob,
            crossover_eta=crossover_eta,
            mutation_eta=mutation_eta,
            skip_known=skip_known,
        )
        n_obj = len(problem.objectives)
        partitions = n_partitions or default_partitions(n_obj, pop_size)
        n_dirs = comb(partitions + n_obj - 1, n_obj - 1)
        if n_dirs > pop_size:
            raise ValueError(
                f"n_partitions={partitions} gives {n_dirs} reference directions for {n_obj} "
                f"objectives, more than pop_size={pop_size}; lower n_partitions or raise "
                "pop_size"
            )
        self.n_partitions = partitions

    def ref_dirs(self) -> np.ndarray:
        """The Das-Dennis reference directions, shape ``(n_dirs, n_objectives)``."""
        from pymoo.util.ref_dirs import get_reference_directions

        return get_reference_directions(
            "das-dennis", len(self.problem.objectives), n_partitions=self.n_partitions
        )

    def _build(self, operators: dict[str, Any]) -> Any:
        from pymoo.algorithms.moo.nsga3 import NSGA3

        return NSGA3(
            ref_dirs=self.ref_dirs(), pop_size=self.pop_size, n_offsprings=self.n_offsprings,
            seed=self.seed, **operators
        )
