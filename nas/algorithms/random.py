"""Random search: uniform samples of the space, without replacement.

The baseline every NAS method must beat (Li & Talwalkar, "Random Search and
Reproducibility for Neural Architecture Search", UAI 2019).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nas._problem import Problem
from nas._space import Config
from nas.algorithms._base import ALGORITHMS, Algorithm
from nas.algorithms._surrogate import random_unseen


@ALGORITHMS.register("random", description="Uniform random configs, never one twice")
class RandomSearch(Algorithm):
    """Uniformly random configs (each active gene uniform over its choices), no repeats.

    Args:
        problem: the problem; only its space is used.
        seed: seeds the sampler.
        batch_size: configs per ask.
        max_draws: draws per ask before giving up on finding unseen configs (a nearly
            exhausted space then gives a short or empty batch).

    Raises:
        ValueError: ``batch_size`` or ``max_draws`` is not a positive integer.
    """

    name = "random"

    def __init__(
        self, problem: Problem, *, seed: int, batch_size: int = 10, max_draws: int = 1000
    ) -> None:
        for option, value in (("batch_size", batch_size), ("max_draws", max_draws)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{option} must be a positive integer, got {value!r}")
        super().__init__(problem, seed=seed, batch_size=batch_size, max_draws=max_draws)
        self.batch_size = batch_size
        self.max_draws = max_draws
        self.rng_: np.random.Generator | None = None
        self.seen_: set[Config] = set()

    def _ask(self) -> Sequence[Config]:
        if self.rng_ is None:
            self.rng_ = np.random.default_rng(self.seed)
        batch = random_unseen(self.problem.space, self.rng_, self.seen_, self.batch_size,
                              max_draws=self.max_draws)
        self.seen_.update(batch)
        return batch

    def _tell(self, configs: list[Config], results: list[dict[str, float]]) -> None:
        # Random search ignores results; the batch was already marked as seen.
        return None
