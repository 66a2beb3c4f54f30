"""Shared machinery of the pymoo genetic algorithms (NSGA-II, AGE-MOEA, NSGA-III).

Genes are choice indices (``SearchSpace.to_vector``); genes with a single choice are left
out of the encoding. Variation is SBX crossover and polynomial mutation with rounding,
then a repair that canonicalises each vector (inactive genes read 0), so two vectors
that describe the same subnet are equal and pymoo's duplicate elimination works on
subnets. Offspring equal to a config evaluated in an earlier generation are rejected as
duplicates too (``skip_known``), so every ask proposes new subnets while the space has
them. Budgets become pymoo inequality constraints ``G <= 0`` (relative excess), which
the algorithms' constrained domination handles.

A subclass states only which pymoo algorithm to build (:meth:`PymooSearch._build`).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any

import numpy as np

from nas._problem import Problem
from nas._space import Config, SearchSpace
from nas.algorithms._base import Algorithm

BIG = 1e12  # stands for NaN or infinite objectives and violations inside pymoo


def check_ga_options(
    *,
    pop_size: int,
    n_offsprings: int | None,
    crossover_prob: float,
    crossover_eta: float,
    mutation_eta: float,
) -> None:
    """Validate the options every pymoo genetic algorithm here takes.

    Raises:
        ValueError: an option out of its range.
    """
    if isinstance(pop_size, bool) or not isinstance(pop_size, int) or pop_size < 2:
        raise ValueError(f"pop_size must be an integer >= 2, got {pop_size!r}")
    if n_offsprings is not None and (
        isinstance(n_offsprings, bool) or not isinstance(n_offsprings, int) or n_offsprings < 1
    ):
        raise ValueError(
            f"n_offsprings must be a positive integer or None, got {n_offsprings!r}"
        )
    if not 0.0 <= crossover_prob <= 1.0:
        raise ValueError(f"crossover_prob must be in [0, 1], got {crossover_prob!r}")
    for option, value in (("crossover_eta", crossover_eta), ("mutation_eta", mutation_eta)):
        if not value > 0:
            raise ValueError(f"{option} must be positive, got {value!r}")


class PymooSearch(Algorithm):
    """A pymoo genetic algorithm, seeded, on the integer vector encoding of the space.

    The first ask returns up to ``pop_size`` distinct uniformly random configs; every
    later ask returns the children of the current population. This ``__init__`` validates
    and stores the options every GA here shares; subclasses implement :meth:`_build`.

    Args:
        problem: objectives and budgets.
        seed: seeds pymoo's generator (the global numpy generator is never touched).
        pop_size: the population size (20 suits searches of a few hundred evaluations).
        n_offsprings: children per generation (``pop_size`` if None).
        crossover_prob: probability that a pair of parents is crossed over (SBX).
        crossover_eta: SBX distribution index (small values spread children further).
        mutation_eta: polynomial mutation distribution index.
        skip_known: never propose a config evaluated in an earlier generation.

    Raises:
        ValueError: an option out of its range, or a single-objective problem where
            :attr:`multi_objective_only`.
        ImportError: ``numba`` is not installed (on the first ask).
    """

    pop_size: int
    n_offsprings: int
    crossover_prob: float
    crossover_eta: float
    mutation_eta: float
    skip_known: bool

    multi_objective_only: bool = False
    """Reject single-objective problems (NSGA-III and AGE-MOEA need two objectives)."""

    def __init__(
        self,
        problem: Problem,
        *,
        seed: int,
        pop_size: int = 20,
        n_offsprings: int | None = None,
        crossover_prob: float = 0.9,
        crossover_eta: float = 3.0,
        mutation_eta: float = 3.0,
        skip_known: bool = True,
    ) -> None:
        check_ga_options(
            pop_size=pop_size, n_offsprings=n_offsprings, crossover_prob=crossover_prob,
            crossover_eta=crossover_eta, mutation_eta=mutation_eta,
        )
        super().__init__(
            problem, seed=seed, pop_size=pop_size, n_offsprings=n_offsprings,
            crossover_prob=crossover_prob, crossover_eta=crossover_eta,
            mutation_eta=mutation_eta, skip_known=skip_known,
        )
        n_obj = len(problem.objectives)
        if self.multi_objective_only and n_obj < 2:
            raise ValueError(
                f"{self.name} needs a problem with two or more objectives, got {n_obj}; "
                "use 'nsga2' or 'evo' for one objective"
            )
        self.pop_size = pop_size
        self.n_offsprings = n_offsprings or pop_size
        self.crossover_prob = crossover_prob
        self.crossover_eta = crossover_eta
        self.mutation_eta = mutation_eta
        self.skip_known = skip_known
        self.algorithm_: Any = None
        self._encoding: Encoding | None = None
        self._infills: Any = None
        self._only_config_asked = False

    @abc.abstractmethod
    def _build(self, operators: dict[str, Any]) -> Any:
        """The pymoo algorithm, built with ``**operators`` (sampling, crossover, mutation,
        repair, eliminate_duplicates) and this search's seed; ``setup`` is done here."""

    # -- ask/tell --------------------------------------------------------------------------

    def _ask(self) -> Sequence[Config]:
        encoding = self._setup()
        if encoding.n_free == 0:  # a space of one config: nothing to evolve
            if self._only_config_asked:
                return []
            self._only_config_asked = True
            return [encoding.space.from_vector(np.zeros(len(encoding.space), dtype=int))]
        infills = self.algorithm_.ask()
        if infills is None or len(infills) == 0:
            self._infills = None
            return []
        self._infills = infills
        return encoding.decode_rows(infills.get("X"))

    def _tell(self, configs: list[Config], results: list[dict[str, float]]) -> None:
        if self._infills is None or not configs:
            return
        from pymoo.core.evaluator import Evaluator as PymooEvaluator
        from pymoo.problems.static import StaticProblem

        F = np.array([self.problem.to_minimization(r) for r in results], dtype=float)
        out: dict[str, np.ndarray] = {"F": np.nan_to_num(F, nan=BIG, posinf=BIG, neginf=-BIG)}
        if self.problem.constraints:
            G = np.array([self.problem.constraint_values(r) for r in results], dtype=float)
            out["G"] = np.nan_to_num(G, nan=BIG, posinf=BIG, neginf=-BIG)
        PymooEvaluator().eval(StaticProblem(self.algorithm_.problem, **out), self._infills)
        self.algorithm_.tell(infills=self._infills)
        assert self._encoding is not None
        self._encoding.known.update(map(tuple, _int_rows(self._infills.get("X"))))
        self._infills = None

    def keep_only(self, rows: Sequence[int], extra: Sequence[Config] = ()) -> list[Config]:
        """Narrow the last ask to its configs at ``rows`` (a pre-selection), plus
        ``extra`` configs bred elsewhere (new ones): only they are told, and only they
        enter the survival; the others may be bred again.

        Returns:
            The configs kept, then the extra ones; tell exactly these.

        Raises:
            RuntimeError: nothing was asked, or it was told already.
        """
        if self._pending is None or self._infills is None or self._encoding is None:
            raise RuntimeError(f"{type(self).__name__}.keep_only: nothing asked to narrow")
        from pymoo.core.population import Population

        rows = list(rows)
        infills = self._infills[rows]
        if extra:
            X = np.array([self._encoding.encode(c) for c in extra], dtype=int)
            infills = Population.merge(infills, Population.new(X=X))
        self._infills = infills
        self._pending = [self._pending[i] for i in rows] + list(extra)
        return list(self._pending)

    # -- pymoo set-up -----------------------------------------------------------------------

    def _setup(self) -> Encoding:
        if self._encoding is not None:
            return self._encoding
        encoding = Encoding(self.problem.space)
        self._encoding = encoding
        if encoding.n_free == 0:
            return encoding

        from pymoo.core.problem import Problem as PymooProblem
        from pymoo.core.termination import NoTermination

        pymoo_problem = PymooProblem(
            n_var=encoding.n_free,
            n_obj=len(self.problem.objectives),
            n_ieq_constr=len(self.problem.constraints),
            xl=encoding.xl,
            xu=encoding.xu,
            vtype=int,
        )
        algorithm = self._build(ga_operators(
            encoding, crossover_prob=self.crossover_prob, crossover_eta=self.crossover_eta,
            mutation_eta=self.mutation_eta, skip_known=self.skip_known,
        ))
        algorithm.setup(pymoo_problem, termination=NoTermination(), seed=self.seed)
        self.algorithm_ = algorithm
        return encoding


class Encoding:
    """Choice-index vectors of the genes that have more than one choice."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        lower, upper = space.bounds()
        self.free = np.flatnonzero(upper > lower)
        self.n_free = len(self.free)
        self.xl = lower[self.free]
        self.xu = upper[self.free]
        self.known: set[tuple[int, ...]] = set()

    def decode(self, x: np.ndarray) -> Config:
        full = np.zeros(len(self.space), dtype=int)
        full[self.free] = np.asarray(x).round().astype(int)
        return self.space.from_vector(full)

    def encode(self, config: Config) -> np.ndarray:
        return self.space.to_vector(config)[self.free]

    def decode_rows(self, X: np.ndarray) -> list[Config]:
        """:meth:`decode` for every row of ``X``."""
        return self.space.from_vectors(self._full(X))

    def canonical_rows(self, X: np.ndarray) -> np.ndarray:
        """Rows rounded, clipped to the bounds and canonicalised (inactive genes 0)."""
        X = np.asarray(X, dtype=float).reshape(-1, self.n_free)
        clipped = np.clip(X.round(), self.xl, self.xu).astype(int)
        return self.space.canonical_vectors(self._full(clipped))[:, self.free]

    def _full(self, X: np.ndarray) -> np.ndarray:
        full = np.zeros((len(X), len(self.space)), dtype=int)
        full[:, self.free] = np.asarray(X).round().astype(int)
        return full


def ga_operators(encoding: Encoding, *, crossover_prob: float, crossover_eta: float,
                 mutation_eta: float, skip_known: bool) -> dict[str, Any]:
    """The keyword operators of a pymoo GA on ``encoding``: uniform distinct sampling,
    SBX and polynomial mutation with rounding, canonical repair, duplicate elimination."""
    from pymoo.operators.crossover.sbx import SBX
    from pymoo.operators.mutation.pm import PM
    from pymoo.operators.repair.rounding import RoundingRepair

    return {
        "sampling": make_sampling(encoding),
        "crossover": SBX(prob=crossover_prob, eta=crossover_eta, vtype=float,
                         repair=RoundingRepair()),
        "mutation": PM(eta=mutation_eta, vtype=float, repair=RoundingRepair()),
        "repair": make_repair(encoding),
        "eliminate_duplicates": make_elimination(encoding, skip_known=skip_known),
    }


def make_sampling(encoding: Encoding) -> Any:
    from pymoo.core.sampling import Sampling

    class SpaceSampling(Sampling):
        """Distinct uniform configs (uniform per active gene), canonically encoded."""

        def _do(self, problem: Any, n_samples: int, *args: Any, random_state: Any = None,
                **kwargs: Any) -> np.ndarray:
            rows: dict[tuple[int, ...], None] = {}
            for _ in range(50 * n_samples):
                if len(rows) == n_samples:
                    break
                row = tuple(int(v) for v in encoding.encode(encoding.space.sample(random_state)))
                rows.setdefault(row, None)
            return np.array(list(rows), dtype=int).reshape(len(rows), encoding.n_free)

    return SpaceSampling()


def make_repair(encoding: Encoding) -> Any:
    from pymoo.core.repair import Repair

    class CanonicalRepair(Repair):
        """Round, clip and canonicalise: inactive genes read 0, so equal subnets are
        equal vectors."""

        def _do(self, problem: Any, X: np.ndarray, **kwargs: Any) -> np.ndarray:
            return encoding.canonical_rows(X)

    return CanonicalRepair()


def make_elimination(encoding: Encoding, *, skip_known: bool) -> Any:
    from pymoo.core.duplicate import DuplicateElimination

    class KnownElimination(DuplicateElimination):
        """Exact duplicates of each other, of the population, and (``skip_known``) of
        every config told so far."""

        def _do(self, pop: Any, other: Any, is_duplicate: np.ndarray) -> np.ndarray:
            rows = list(map(tuple, _int_rows(pop.get("X"))))
            if other is None:
                known = encoding.known if skip_known else frozenset()
                seen: set[tuple[int, ...]] = set()  # not a copy of known: that grows
                for i, row in enumerate(rows):
                    if row in seen or row in known:
                        is_duplicate[i] = True
                    seen.add(row)
            else:
                others = set(map(tuple, _int_rows(other.get("X"))))
                for i, row in enumerate(rows):
                    if row in others:
                        is_duplicate[i] = True
            return is_duplicate

    return KnownElimination()


def _int_rows(X: np.ndarray) -> list[list[int]]:
    """Rows of plain ints (hashable once made tuples; numpy scalars hash slowly)."""
    return np.asarray(X).round().astype(int).tolist()
