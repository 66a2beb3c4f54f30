"""LINAS: lightweight iterative NAS with predictors in the inner loop.

Cummings et al., "Accelerating Neural Architecture Exploration Across Modalities Using
Genetic Algorithms" (GECCO 2022), as in Intel's DyNAS-T: evaluate a population, refit
one predictor per metric on everything measured so far, run NSGA-II on the predictors
only (thousands of cheap predicted evaluations), evaluate its final population, repeat.

Two departures, both because a study counts unique subnets: members of the final
population measured in an earlier loop are not measured again, and the batch is topped
up with unseen random configs so that every loop measures ``population`` new subnets.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from nas._problem import Problem
from nas._space import Config, space_features
from nas.algorithms._base import ALGORITHMS, Algorithm, check_int
from nas.algorithms._pymoo import BIG, Encoding, ga_operators
from nas.algorithms._surrogate import History, MetricModels, fit_metric_models, random_unseen


@ALGORITHMS.register("linas", description="DyNAS-T's LINAS: NSGA-II on predictors, then measure")
class LINASSearch(Algorithm):
    """LINAS, seeded.

    Args:
        problem: objectives and budgets.
        seed: seeds the random population, the inner NSGA-II and the predictors.
        population: configs measured per loop (DyNAS-T's default is 50).
        inner_evals: predicted evaluations of the inner NSGA-II per loop (DyNAS-T uses
            5,000 to 20,000 depending on the supernet).
        model: the predictor fitted per metric (a :data:`nas.predictors.PREDICTORS` name).

    Raises:
        ValueError: an option out of its range.
    """

    name = "linas"

    def __init__(self, problem: Problem, *, seed: int, population: int = 50,
                 inner_evals: int = 5_000, model: str = "svr") -> None:
        from nas.predictors import PREDICTORS

        check_int("population", population, least=2)
        check_int("inner_evals", inner_evals, least=1)
        if model not in PREDICTORS:
            raise ValueError(f"model must be a predictor ({', '.join(PREDICTORS.names())}), "
                             f"got {model!r}")
        super().__init__(problem, seed=seed, population=population, inner_evals=inner_evals,
                         model=model)
        self.population = population
        self.inner_evals = inner_evals
        self.model = model
        self.history_ = History(problem)
        self.rng_: np.random.Generator | None = None

    def _ask(self) -> Sequence[Config]:
        space, history = self.problem.space, self.history_
        if self.rng_ is None:
            self.rng_ = np.random.default_rng(self.seed)
        batch: list[Config] = []
        if np.isfinite(history.objectives()).all(axis=1).sum() >= 2:
            models = fit_metric_models(history, space_features(space, history.configs),
                                       model=self.model, seed=self.seed + len(history))
            proposed = self._inner_nsga2(models)
            batch = list(dict.fromkeys(c for c in proposed if c not in history.known))
        return batch + random_unseen(space, self.rng_, history.known | set(batch),
                                     self.population - len(batch))

    def _tell(self, configs: list[Config], results: list[dict[str, float]]) -> None:
        self.history_.add(configs, results)

    def _inner_nsga2(self, models: MetricModels) -> list[Config]:
        """The final population of NSGA-II run on the predictors alone."""
        from pymoo.algorithms.moo.nsga2 import NSGA2
        from pymoo.core.problem import Problem as PymooProblem
        from pymoo.optimize import minimize

        encoding = Encoding(self.problem.space)
        if encoding.n_free == 0:
            return []
        problem = self.problem

        class Predicted(PymooProblem):
            def _evaluate(self, X: np.ndarray, out: dict[str, Any], *args: Any,
                          **kwargs: Any) -> None:
                configs = [encoding.decode(x) for x in X]
                medians = models.medians(space_features(problem.space, configs))
                rows = [{k: float(v[i]) for k, v in medians.items()} for i in range(len(X))]
                out["F"] = np.nan_to_num(np.array([problem.to_minimization(r) for r in rows]),
                                         nan=BIG, posinf=BIG, neginf=-BIG)
                if problem.constraints:
                    out["G"] = np.array([problem.constraint_values(r) for r in rows])

        pymoo_problem = Predicted(
            n_var=encoding.n_free, n_obj=len(problem.objectives),
            n_ieq_constr=len(problem.constraints), xl=encoding.xl, xu=encoding.xu, vtype=int,
        )
        algorithm = NSGA2(pop_size=self.population, **ga_operators(
            encoding, crossover_prob=0.9, crossover_eta=3.0, mutation_eta=3.0,
            skip_known=False,
        ))
        n_gen = max(1, self.inner_evals // self.population)
        result = minimize(pymoo_problem, algorithm, termination=("n_gen", n_gen),
                          seed=self.seed + len(self.history_), verbose=False)
        return [encoding.decode(x) for x in result.pop.get("X")]
