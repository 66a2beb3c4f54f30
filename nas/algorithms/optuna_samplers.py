"""Optuna's samplers as ask/tell algorithms: TPE, NSGA-II, NSGA-III and GP.

Each search keeps a private in-memory Optuna study used only for sampling (the record of
the search is the project's own study). ``ask`` opens ``batch_size`` trials and asks each
for a config with :meth:`SearchSpace.suggest` (define-by-run: a conditional gene is
suggested only while it is active); ``tell`` reports the objective values in the
problem's directions and the relative budget excesses (``<= 0`` is feasible) with
``Trial.set_constraint`` (Optuna >= 5; keys ``"<index>:<metric>"``), or on older Optuna
through the samplers' ``constraints_func``, read back from the trial's user attribute
``"constraints"``. A result with a NaN or infinite objective is told as a failed trial.

Samplers:

* ``tpe`` (alias ``optuna-tpe``): multivariate TPE (Bergstra et al., "Algorithms for
  Hyper-Parameter Optimization", NeurIPS 2011; Falkner et al., BOHB, ICML 2018 for the
  multivariate kernel), MOTPE for several objectives (Ozaki et al., "Multiobjective
  Tree-Structured Parzen Estimator", JAIR 2022); ``group=True`` decomposes the
  conditional space into the subspaces that occur together.
* ``optuna-nsga2``: :class:`optuna.samplers.NSGAIISampler` (Deb et al., IEEE TEC 2002).
* ``optuna-nsga3``: :class:`optuna.samplers.NSGAIIISampler` (Deb & Jain, IEEE TEC 2014).
* ``optuna-gp``: :class:`optuna.samplers.GPSampler`, Gaussian-process Bayesian
  optimisation (log EI, or log EHVI for several objectives); needs torch and scipy,
  and its cost grows with the number of trials (suits budgets of a few hundred).

All are deterministic given the seed and the told results (a test replays them).
"""

from __future__ import annotations

import abc
import math
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from nas._problem import Problem
from nas._space import Config
from nas.algorithms._base import ALGORITHMS, Algorithm, check_int

if TYPE_CHECKING:
    import optuna

_CONSTRAINTS_ATTR = "constraints"
_BIG = 1e12  # stands for a NaN budget excess


def _has_set_constraint() -> bool:
    """Optuna >= 5 records constraints with ``Trial.set_constraint`` (and deprecates the
    samplers' ``constraints_func``)."""
    from optuna.trial import Trial

    return hasattr(Trial, "set_constraint")


def _constraints_of(trial: optuna.trial.FrozenTrial) -> Sequence[float]:
    """The samplers' ``constraints_func`` before Optuna 5: the excesses
    :meth:`OptunaSearch._tell` stored in the trial's user attributes."""
    return list(trial.user_attrs.get(_CONSTRAINTS_ATTR, ()))


def _check_positive_int(option: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{option} must be a positive integer, got {value!r}")


class OptunaSearch(Algorithm):
    """An Optuna sampler driven through a private in-memory study.

    Subclasses implement :meth:`_make_sampler`. ``__init__`` stores options only; the
    study is created on the first ask.

    With ``skip_known``, a suggestion equal to a config already told is told at once with
    its known result (the sampler learns it again, as if re-evaluated) and another trial
    is asked, up to :attr:`max_redraws` times per slot of the batch; after that the
    duplicate is proposed (the search serves it from the study). Optuna's genetic
    samplers have no duplicate elimination, so on small spaces they would otherwise
    propose evaluated configs over and over.

    Args:
        problem: objectives and budgets.
        seed: seeds the sampler.
        batch_size: trials opened per ask (pending trials are known to the sampler, e.g.
            TPE's constant liar).
        skip_known: redraw suggestions equal to configs told before (see above).
        **options: sampler options, recorded in :attr:`options`.
    """

    max_redraws = 50

    def __init__(self, problem: Problem, *, seed: int, batch_size: int = 1,
                 skip_known: bool = True, **options: Any) -> None:
        _check_positive_int("batch_size", batch_size)
        super().__init__(problem, seed=seed, batch_size=batch_size, skip_known=skip_known,
                         **options)
        self.batch_size = batch_size
        self.skip_known = skip_known
        self.study_: optuna.Study | None = None
        self._trials: list[optuna.trial.Trial] = []
        self._known: dict[Config, dict[str, float]] = {}

    @abc.abstractmethod
    def _make_sampler(self) -> optuna.samplers.BaseSampler:
        """The seeded sampler; pass ``constraints_func=self._constraints_func``."""

    @property
    def _constraints_func(self) -> Any:
        """None when there is no budget or the trial records constraints itself."""
        if not self.problem.constraints or _has_set_constraint():
            return None
        return _constraints_of

    def _study(self) -> optuna.Study:
        if self.study_ is None:
            import optuna

            from nas.studies._storage import quiet_optuna

            quiet_optuna()
            with warnings.catch_warnings():  # multivariate/group TPE, GP: experimental
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                sampler = self._make_sampler()
            self.study_ = optuna.create_study(
                storage=optuna.storages.InMemoryStorage(),
                sampler=sampler,
                directions=[o.direction for o in self.problem.objectives],
            )
        return self.study_

    def _ask(self) -> Sequence[Config]:
        study = self._study()
        self._trials = []
        configs: list[Config] = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "falls back to independent sampling"
            for _ in range(self.batch_size):
                for draw in range(self.max_redraws + 1):
                    trial = study.ask()
                    config = self.problem.space.suggest(trial)
                    known = self._known.get(config) if self.skip_known else None
                    if known is None or draw == self.max_redraws:
                        break
                    self._report(study, trial, known)
                self._trials.append(trial)
                configs.append(config)
        return configs

    def _tell(self, configs: list[Config], results: list[dict[str, float]]) -> None:
        study = self._study()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for trial, config, metrics in zip(self._trials, configs, results, strict=True):
                self._report(study, trial, metrics)
                self._known.setdefault(config, metrics)
        self._trials = []

    def _report(self, study: optuna.Study, trial: optuna.trial.Trial,
                metrics: dict[str, float]) -> None:
        """Tell ``trial`` its objective values and budget excesses (NaN: a failed trial)."""
        from optuna.trial import TrialState

        if self.problem.constraints:
            excess = np.nan_to_num(
                self.problem.constraint_values(metrics), nan=_BIG, posinf=_BIG, neginf=-_BIG,
            )
            if _has_set_constraint():
                for i, (constraint, value) in enumerate(
                    zip(self.problem.constraints, excess, strict=True)
                ):
                    trial.set_constraint(f"{i}:{constraint.metric}", float(value))
            else:
                trial.set_user_attr(_CONSTRAINTS_ATTR, [float(v) for v in excess])
        values = self.problem.objective_values(metrics)
        if all(math.isfinite(v) for v in values):
            study.tell(trial, values)
        else:
            study.tell(trial, state=TrialState.FAIL)


@ALGORITHMS.register("tpe", description="Optuna's multivariate TPE (MOTPE for several "
                     "objectives)")
class TPESearch(OptunaSearch):
    """Multivariate TPE through Optuna, seeded.

    Args:
        problem: objectives and budgets.
        seed: seeds the sampler.
        batch_size: trials per ask (pending ones are handled by the constant liar).
        skip_known: redraw suggestions equal to configs told before.
        n_startup_trials: random trials before the Parzen estimators take over.
        n_ei_candidates: candidates scored per suggestion.
        group: decompose the conditional space into groups of genes that occur
            together (better for spaces with conditional genes).

    Raises:
        ValueError: an option out of its range.
    """

    name = "tpe"

    def __init__(self, problem: Problem, *, seed: int, batch_size: int = 1,
                 skip_known: bool = True, n_startup_trials: int = 10,
                 n_ei_candidates: int = 24, group: bool = True) -> None:
        _check_positive_int("n_startup_trials", n_startup_trials)
        _check_positive_int("n_ei_candidates", n_ei_candidates)
        super().__init__(problem, seed=seed, batch_size=batch_size, skip_known=skip_known,
                         n_startup_trials=n_startup_trials, n_ei_candidates=n_ei_candidates,
                         group=group)
        self.n_startup_trials = n_startup_trials
        self.n_ei_candidates = n_ei_candidates
        self.group = group

    def _make_sampler(self) -> optuna.samplers.BaseSampler:
        from optuna.samplers import TPESampler

        return TPESampler(
            seed=self.seed, multivariate=True, group=self.group,
            n_startup_trials=self.n_startup_trials, n_ei_candidates=self.n_ei_candidates,
            constant_liar=self.batch_size > 1, constraints_func=self._constraints_func,
        )


ALGORITHMS.register("optuna-tpe", description="Alias of 'tpe'")(TPESearch)


class _OptunaGASearch(OptunaSearch):
    """Optuna's genetic samplers: a population, crossover and mutation over the genes.

    Args:
        problem: objectives and budgets.
        seed: seeds the sampler.
        batch_size: trials per ask.
        skip_known: redraw suggestions equal to configs told before.
        population_size: individuals per generation (20 suits a few hundred evaluations).
        crossover_prob: probability that a child is a crossover of parents.
        swapping_prob: per-gene probability of taking the other parent's value.
        mutation_prob: per-gene mutation probability (None: ``1 / number of genes``).

    Raises:
        ValueError: an option out of its range.
    """

    def __init__(self, problem: Problem, *, seed: int, batch_size: int = 1,
                 skip_known: bool = True, population_size: int = 20, crossover_prob: float = 0.9,
                 swapping_prob: float = 0.5, mutation_prob: float | None = None) -> None:
        check_int("population_size", population_size, least=2)
        for option, value in (("crossover_prob", crossover_prob),
                              ("swapping_prob", swapping_prob)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{option} must be in [0, 1], got {value!r}")
        if mutation_prob is not None and not 0.0 <= mutation_prob <= 1.0:
            raise ValueError(f"mutation_prob must be in [0, 1] or None, got {mutation_prob!r}")
        super().__init__(problem, seed=seed, batch_size=batch_size, skip_known=skip_known,
                         population_size=population_size, crossover_prob=crossover_prob,
                         swapping_prob=swapping_prob, mutation_prob=mutation_prob)
        self.population_size = population_size
        self.crossover_prob = crossover_prob
        self.swapping_prob = swapping_prob
        self.mutation_prob = mutation_prob

    def _ga_options(self) -> dict[str, Any]:
        return {
            "population_size": self.population_size,
            "crossover_prob": self.crossover_prob,
            "swapping_prob": self.swapping_prob,
            "mutation_prob": self.mutation_prob,
            "seed": self.seed,
            "constraints_func": self._constraints_func,
        }


@ALGORITHMS.register("optuna-nsga2", description="Optuna's NSGAIISampler")
class OptunaNSGA2Search(_OptunaGASearch):
    """NSGA-II as Optuna implements it (uniform crossover over the genes by default);
    options as :class:`_OptunaGASearch`."""

    name = "optuna-nsga2"

    def _make_sampler(self) -> optuna.samplers.BaseSampler:
        from optuna.samplers import NSGAIISampler

        return NSGAIISampler(**self._ga_options())


@ALGORITHMS.register("optuna-nsga3", description="Optuna's NSGAIIISampler")
class OptunaNSGA3Search(_OptunaGASearch):
    """NSGA-III as Optuna implements it (reference points on the normalised front);
    options as :class:`_OptunaGASearch`."""

    name = "optuna-nsga3"

    def _make_sampler(self) -> optuna.samplers.BaseSampler:
        from optuna.samplers import NSGAIIISampler

        return NSGAIIISampler(**self._ga_options())


@ALGORITHMS.register("optuna-gp", description="Optuna's GPSampler (Gaussian-process BO)")
class OptunaGPSearch(OptunaSearch):
    """Gaussian-process Bayesian optimisation through Optuna's ``GPSampler``.

    Args:
        problem: objectives and budgets.
        seed: seeds the sampler.
        batch_size: trials per ask.
        skip_known: redraw suggestions equal to configs told before.
        n_startup_trials: random trials before the GP takes over.

    Raises:
        ValueError: an option out of its range.
    """

    name = "optuna-gp"

    def __init__(self, problem: Problem, *, seed: int, batch_size: int = 1,
                 skip_known: bool = True, n_startup_trials: int = 10) -> None:
        _check_positive_int("n_startup_trials", n_startup_trials)
        super().__init__(problem, seed=seed, batch_size=batch_size, skip_known=skip_known,
                         n_startup_trials=n_startup_trials)
        self.n_startup_trials = n_startup_trials

    def _make_sampler(self) -> optuna.samplers.BaseSampler:
        from optuna.samplers import GPSampler

        return GPSampler(
            seed=self.seed, n_startup_trials=self.n_startup_trials,
            constraints_func=self._constraints_func, deterministic_objective=True,
            warn_independent_sampling=False,
        )
