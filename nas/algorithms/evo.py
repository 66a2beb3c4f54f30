"""HAT/OFA-style evolutionary search: elitist parents, gene-wise mutation and crossover.

The evolution of HAT (Wang et al., "HAT: Hardware-Aware Transformers for Efficient
Natural Language Processing", ACL 2020; ``evo_search.py`` and ``fairseq/evolution.py`` of
mit-han-lab/hardware-aware-transformers) and of OFA (Cai et al., "Once-for-All", ICLR
2020). As HAT does it:

* a first population of ``population_size`` random configs;
* each generation keeps the best ``parent_size`` of the population as parents and adds
  ``mutation_size`` mutants (a uniformly chosen parent with each gene resampled with
  probability ``mutation_prob``) and ``crossover_size`` crossovers (each gene taken from
  one of two distinct parents with probability 1/2), so that ``population_size =
  parent_size + mutation_size + crossover_size``;
* children that fail the cheap constraint check (HAT's latency predictor against the
  latency budget) are drawn again.

HAT's defaults are a population of 125 with 25 parents, 50 mutants and 50 crossovers,
``mutation_prob`` 0.3, for 30 generations; they assume thousands of cheap (predicted)
evaluations, so the defaults here are scaled down to a population of 20 for searches of
a few hundred measured evaluations, keeping HAT's mutation probability.

Differences from HAT, for measured multi-objective search: parents are ranked by
feasibility first (least total budget excess among the infeasible), then by
non-dominated rank and crowding distance (Deb et al., NSGA-II, IEEE TEC 2002) of the
minimisation vector (``Problem.to_minimization``), which for one objective is simply its
value; each ask returns only the children (the parents were evaluated already); children
equal to a config proposed before are drawn again; and the redraws stop after
``max_resample`` tries (HAT loops until it succeeds), accepting the last child and
logging it. A conditional gene that a child activates takes a fresh random value.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np

from nas._problem import Problem
from nas._space import Config, Value
from nas.algorithms._base import ALGORITHMS, Algorithm

logger = logging.getLogger(__name__)

_BIG = 1e12  # stands for NaN objectives


@ALGORITHMS.register("evo", description="HAT/OFA-style evolution (parents, mutation, "
                     "crossover)")
class EvolutionSearch(Algorithm):
    """Elitist evolution with gene-wise mutation and uniform crossover, seeded.

    The first ask returns ``population_size`` distinct random configs; every later ask
    returns ``mutation_size + crossover_size`` children of the current parents.

    Args:
        problem: objectives and budgets.
        seed: seeds the algorithm's numpy generator.
        population_size: parents plus children per generation.
        parent_size: parents kept per generation (None: a quarter of the population, at
            least 2).
        mutation_size: mutants per generation (None: half of the children, rounded up);
            the crossovers are the rest.
        mutation_prob: per-gene probability of resampling a gene in a mutant (HAT: 0.3).
        constraint_check: an optional cheap test ``config -> bool`` (e.g. a latency
            predictor against the budget); children and random configs failing it are
            drawn again.
        max_resample: draws per child before accepting one that fails the check or was
            proposed before.
        objective_elites: parents taken first as the best feasible configs by the first
            objective alone (as a single-objective evolution such as OFA's keeps them),
            before the rest are ranked as above; 0 (the default): none. Under a budget
            on the second objective the best feasible configs by the first lie at the
            budget, so the search spends more children where the budget binds while the
            other parents keep the front.

    Raises:
        ValueError: an option out of its range, or sizes that do not add up.
        TypeError: ``constraint_check`` is not callable.
    """

    name = "evo"

    def __init__(
        self,
        problem: Problem,
        *,
        seed: int,
        population_size: int = 20,
        parent_size: int | None = None,
        mutation_size: int | None = None,
        mutation_prob: float = 0.3,
        constraint_check: Callable[[Config], bool] | None = None,
        max_resample: int = 100,
        objective_elites: int = 0,
    ) -> None:
        if (isinstance(population_size, bool) or not isinstance(population_size, int)
                or population_size < 3):
            raise ValueError(f"population_size must be an integer >= 3, got {population_size!r}")
        parents = max(2, population_size // 4) if parent_size is None else parent_size
        if isinstance(parents, bool) or not isinstance(parents, int) or not (
            1 <= parents < population_size
        ):
            raise ValueError(
                f"parent_size must be an integer in [1, population_size - 1] = "
                f"[1, {population_size - 1}] or None, got {parent_size!r}"
            )
        n_children = population_size - parents
        mutants = -(-n_children // 2) if mutation_size is None else mutation_size
        if isinstance(mutants, bool) or not isinstance(mutants, int) or not (
            0 <= mutants <= n_children
        ):
            raise ValueError(
                f"mutation_size must be an integer in [0, population_size - parent_size] = "
                f"[0, {n_children}] or None, got {mutation_size!r}"
            )
        if not 0.0 <= mutation_prob <= 1.0:
            raise ValueError(f"mutation_prob must be in [0, 1], got {mutation_prob!r}")
        if constraint_check is not None and not callable(constraint_check):
            raise TypeError(
                f"constraint_check must be a callable config -> bool or None, got "
                f"{type(constraint_check).__name__}"
            )
        if isinstance(max_resample, bool) or not isinstance(max_resample, int) or (
            max_resample < 1
        ):
            raise ValueError(f"max_resample must be a positive integer, got {max_resample!r}")
        if isinstance(objective_elites, bool) or not isinstance(objective_elites, int) or not (
            0 <= objective_elites <= parents
        ):
            raise ValueError(
                f"objective_elites must be an integer in [0, parent_size] = [0, {parents}], "
                f"got {objective_elites!r}"
            )
        super().__init__(
            problem, seed=seed, population_size=population_size, parent_size=parent_size,
            mutation_size=mutation_size, mutation_prob=mutation_prob,
            constraint_check=constraint_check, max_resample=max_resample,
            objective_elites=objective_elites,
        )
        self.population_size = population_size
        self.parent_size = parents
        self.mutation_size = mutants
        self.crossover_size = n_children - mutants
        self.mutation_prob = mutation_prob
        self.constraint_check = constraint_check
        self.max_resample = max_resample
        self.objective_elites = objective_elites
        self.rng_: np.random.Generator | None = None
        self.parents_: list[tuple[Config, np.ndarray, float]] = []  # (config, F, violation)
        self.proposed_: set[Config] = set()
        self.resample_failures_ = 0

    # -- ask/tell --------------------------------------------------------------------------

    def _ask(self) -> Sequence[Config]:
        if self.rng_ is None:
            self.rng_ = np.random.default_rng(self.seed)
        if not self.parents_:  # the first generation (or nothing evaluated yet)
            return self._draw(self.population_size, self._random)
        batch = self._draw(self.mutation_size, self._mutant)
        batch += self._draw(self.crossover_size, self._crossover)
        return batch

    def _tell(self, configs: list[Config], results: list[dict[str, float]]) -> None:
        population = list(self.parents_)
        shape = (len(results), len(self.problem.objectives))
        told = np.nan_to_num(
            np.array([self.problem.to_minimization(m) for m in results]).reshape(shape),
            nan=_BIG, posinf=_BIG, neginf=-_BIG)
        for config, metrics, F in zip(configs, results, told, strict=True):
            violation = self.problem.violation(metrics)
            population.append((config, F, _BIG if np.isnan(violation) else violation))
        F = np.array([p[1] for p in population]).reshape(len(population), -1)
        violation = np.array([p[2] for p in population])
        order = rank(F, violation)
        if self.objective_elites:
            elites = objective_elites(F, violation, self.objective_elites)
            order = np.concatenate([elites, order[~np.isin(order, elites)]])
        self.parents_ = [population[i] for i in order[: self.parent_size]]

    # -- variation -------------------------------------------------------------------------

    def _draw(self, n: int, make: Callable[[], Config]) -> list[Config]:
        """``n`` children from ``make``, each redrawn (up to ``max_resample`` times) while
        it fails the constraint check or was proposed before.

        After the cap the last new child that failed the check is accepted (and logged);
        failing that, a child proposed before, except in the first generation, which then
        ends short (the space holds no new config that ``make`` finds).
        """
        batch: list[Config] = []
        for _ in range(n):
            child: Config | None = None
            fallback: Config | None = None  # new, but failed the check
            for _ in range(self.max_resample):
                child = make()
                if child in self.proposed_:
                    continue
                if self.constraint_check is None or self.constraint_check(child):
                    break
                fallback = child
            else:
                self.resample_failures_ += 1
                if fallback is not None:
                    child = fallback
                elif not self.parents_:
                    break
                logger.info(
                    "evo: no new child passing the constraint check in %d draws; "
                    "accepting %s", self.max_resample, child.to_json() if child else None,
                )
            assert child is not None
            self.proposed_.add(child)
            batch.append(child)
        return batch

    def _random(self) -> Config:
        assert self.rng_ is not None
        return self.problem.space.sample(self.rng_)

    def _mutant(self) -> Config:
        """Each gene of a random parent resampled with probability ``mutation_prob``."""
        rng = self.rng_
        assert rng is not None
        parent = self.parents_[int(rng.integers(len(self.parents_)))][0].to_dict()
        values: dict[str, Value] = {}
        for gene in self.problem.space.genes:
            fresh = gene.choices[int(rng.integers(len(gene.choices)))]
            keep = gene.name in parent and rng.random() >= self.mutation_prob
            values[gene.name] = parent[gene.name] if keep else fresh
        return self.problem.space.canonical(values)

    def _crossover(self) -> Config:
        """Each gene from one of two distinct parents, with probability 1/2 each."""
        rng = self.rng_
        assert rng is not None
        if len(self.parents_) < 2:
            return self._mutant()
        i, j = rng.choice(len(self.parents_), size=2, replace=False)
        # dicts: a Config looks a gene up by scanning its items
        first, second = self.parents_[int(i)][0].to_dict(), self.parents_[int(j)][0].to_dict()
        values: dict[str, Value] = {}
        for gene in self.problem.space.genes:
            fresh = gene.choices[int(rng.integers(len(gene.choices)))]
            pick, other = (first, second) if rng.random() < 0.5 else (second, first)
            values[gene.name] = (
                pick[gene.name] if gene.name in pick
                else other[gene.name] if gene.name in other else fresh
            )
        return self.problem.space.canonical(values)


# -- ranking -----------------------------------------------------------------------------


def rank(F: np.ndarray, violation: np.ndarray) -> np.ndarray:
    """Indices from best to worst: feasible first (infeasible by increasing violation),
    then by non-dominated front of ``F`` (minimisation), then by decreasing crowding
    distance; ties keep their order.

    Args:
        F: objective values in minimisation form, shape ``(n, n_objectives)``.
        violation: total budget excess, 0 when feasible, shape ``(n,)``.
    """
    n = len(F)
    front = np.zeros(n, dtype=int)
    crowding = np.zeros(n)
    feasible = np.flatnonzero(violation <= 0)
    for k, members in enumerate(non_dominated_fronts(F[feasible])):
        idx = feasible[members]
        front[idx] = k
        crowding[idx] = crowding_distance(F[idx])
    # keys: lexsort sorts by the last key first
    return np.lexsort((np.arange(n), -crowding, front, np.where(violation > 0, violation, 0.0),
                       violation > 0))


def objective_elites(F: np.ndarray, violation: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` best feasible rows by the first objective (minimisation),
    best first; fewer when fewer are feasible; ties keep their order."""
    feasible = np.flatnonzero(violation <= 0)
    order = feasible[np.argsort(F[feasible, 0], kind="stable")]
    return order[:k]


def non_dominated_fronts(F: np.ndarray) -> list[np.ndarray]:
    """Fronts of ``F`` (minimisation), best first, each in increasing index order, by
    repeated peeling over one domination matrix (``O(n^2 m)`` memory and time, in numpy:
    populations here are a few hundred at most)."""
    n = len(F)
    if n == 0:
        return []
    less_equal = np.all(F[None, :, :] <= F[:, None, :], axis=2)
    less = np.any(F[None, :, :] < F[:, None, :], axis=2)
    dominates = less_equal & less  # [i, j]: row j dominates row i
    dominators = dominates.sum(axis=1)
    remaining = np.ones(n, dtype=bool)
    fronts: list[np.ndarray] = []
    while remaining.any():
        front = np.flatnonzero(remaining & (dominators == 0))
        fronts.append(front)
        remaining[front] = False
        dominators -= dominates[:, front].sum(axis=1)
    return fronts


def crowding_distance(F: np.ndarray) -> np.ndarray:
    """NSGA-II's crowding distance within one front: boundary points infinite."""
    n, m = F.shape
    if n <= 2:
        return np.full(n, np.inf)
    distance = np.zeros(n)
    for j in range(m):
        order = np.argsort(F[:, j], kind="stable")
        span = F[order[-1], j] - F[order[0], j]
        distance[order[0]] = distance[order[-1]] = np.inf
        if span > 0:
            distance[order[1:-1]] += (F[order[2:], j] - F[order[:-2], j]) / span
    return distance


@ALGORITHMS.register("evo-budget", description="evolution at OFA's tutorial sizes, half "
                     "the parents the best within the budget (predicted searches)")
class BudgetEvolutionSearch(EvolutionSearch):
    """:class:`EvolutionSearch` with other defaults, for thousands of cheap (predicted)
    evaluations under a budget: the sizes of OFA's tutorial evolution (a population of
    100, a quarter of it parents, 50 mutants and 25 crossovers, mutation probability
    0.1) and half the parents (``objective_elites=12``) the best feasible configs by
    the first objective, the rest ranked by Pareto front and crowding.

    A multi-objective ranking spreads the parents over the front, so the budget's end of
    it (where the best feasible accuracy lies) holds one or two of them; a
    single-objective evolution (OFA's) keeps only that end. Half and half keeps the
    front while most children are bred where the budget binds. The name is its own so
    that studies (which store the name) replay with these defaults.
    """

    name = "evo-budget"

    def __init__(
        self,
        problem: Problem,
        *,
        seed: int,
        population_size: int = 100,
        parent_size: int | None = 25,
        mutation_size: int | None = 50,
        mutation_prob: float = 0.1,
        constraint_check: Callable[[Config], bool] | None = None,
        max_resample: int = 100,
        objective_elites: int = 12,
    ) -> None:
        super().__init__(
            problem, seed=seed, population_size=population_size, parent_size=parent_size,
            mutation_size=mutation_size, mutation_prob=mutation_prob,
            constraint_check=constraint_check, max_resample=max_resample,
            objective_elites=objective_elites,
        )
