"""The search loop: ask the algorithm, evaluate what is new, record it, tell the results.

Every new evaluation is committed to the study before the next one starts, so a search
killed at any moment (even by SIGKILL) loses at most the evaluation in flight.

Resuming is replay: algorithms are deterministic given their seed and the results they
are told, so rerunning the same search asks the same configs again; those already in
the study are served from it (not re-evaluated, not counted as new) and the run carries
on where the killed one stopped, ending with the same study an uninterrupted run would
have produced.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from nas._evaluator import BaseEvaluator
from nas._problem import Problem
from nas._space import Config
from nas.algorithms._base import Algorithm
from nas.studies._pareto import (
    ParetoPoint,
    hypervolume,
    hypervolume_defined,
    normalised_points,
    pareto_front,
    pareto_points,
    search_hypervolume,
)
from nas.studies._study import Study

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchProgress:
    """What a progress callback receives after each new evaluation.

    ``best`` is the best feasible value of the first objective (accuracy for the main
    job), None while no evaluated subnet is feasible; ``hypervolume`` is None when the
    problem has no normalised hypervolume (a minimised objective without a budget).
    """

    evaluations: int
    total: int
    new_evaluations: int
    best: float | None
    hypervolume: float | None
    config: dict[str, Any]
    metrics: dict[str, float]


@dataclass(frozen=True)
class SearchResult:
    """The outcome of :func:`run_search`.

    Attributes:
        study: the study name.
        storage: the storage URL of the study.
        evaluations: evaluated subnets in the study now (its total, earlier runs included).
        new_evaluations: subnets evaluated by this run.
        pareto: the feasible Pareto front, sorted by the first minimised objective.
        hypervolume: of the feasible trials, in the normalised space of
            :func:`nas.studies.search_hypervolume` (NaN when it is not defined).
        stopped_early: the run ended before ``n_evals`` evaluations.
        stop_reason: why it stopped early, in words (None otherwise).
    """

    study: str
    storage: str
    evaluations: int
    new_evaluations: int
    pareto: list[ParetoPoint]
    hypervolume: float
    stopped_early: bool = False
    stop_reason: str | None = None
    seconds: float = 0.0
    requested: int = 0
    cache_hits: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-able (for ``--json``); a NaN hypervolume becomes None."""
        data = asdict(self)
        if np.isnan(self.hypervolume):
            data["hypervolume"] = None
        return data


ProgressCallback = Callable[[SearchProgress], None]


def run_search(
    problem: Problem,
    algorithm: Algorithm,
    evaluator: BaseEvaluator,
    study: Study,
    *,
    n_evals: int,
    progress: bool | ProgressCallback = True,
    max_fruitless_asks: int = 20,
) -> SearchResult:
    """Search until ``study`` holds ``n_evals`` evaluated subnets.

    ``n_evals`` counts the study's total, earlier runs included: rerunning a finished
    search does nothing, and rerunning a killed one finishes it.

    Args:
        problem: objectives and budgets (the study's objectives must be the same).
        algorithm: a fresh algorithm (it is replayed from its first ask).
        evaluator: computes metrics; its cache is filled from the study first.
        study: where every evaluated subnet is recorded, immediately.
        n_evals: the number of evaluated subnets the study should hold at the end.
        progress: True for a live progress bar (evaluations, best feasible value of the
            first objective, hypervolume), False for none, or a callback that receives a
            :class:`SearchProgress` after each new evaluation.
        max_fruitless_asks: stop (``stopped_early``) after this many asks in a row that
            bring nothing new to evaluate, e.g. once the space is exhausted.

    Returns:
        A :class:`SearchResult`.

    Raises:
        ValueError: a bad ``n_evals`` or ``max_fruitless_asks``, a study or evaluator over
            another space, or a study with other objectives than ``problem``.
    """
    _validate(problem, algorithm, evaluator, study, n_evals, max_fruitless_asks)
    if not (isinstance(progress, bool) or callable(progress)):
        raise ValueError(f"progress must be True, False or a callable, got {progress!r}")
    start = time.perf_counter()
    if study.space is None:
        study.attach_space(problem.space)
    records = study.trials()
    for record in records:
        if record.cache_key:
            evaluator.remember(record.cache_key, record.metrics)
    tracker = _Tracker(problem)
    for record in records:
        if not record.failed:
            tracker.add(record.metrics)

    evaluations = len(records)
    new = 0
    hits = 0
    fruitless = 0
    proposed: set[Config] = set()  # every config asked in this run
    stop_reason: str | None = None
    reporter = _make_reporter(progress, total=n_evals, initial=evaluations, tracker=tracker)
    try:
        while evaluations < n_evals:
            configs = algorithm.ask()
            # Fruitful: proposes a config not proposed before in this run. Configs served
            # from the study while a resumed run replays count as fruitful.
            fruitful = any(config not in proposed for config in configs)
            proposed.update(configs)
            results: list[dict[str, float]] = []
            batch: dict[Config, dict[str, float]] = {}
            finished_batch = True
            for config in configs:
                if config in batch:  # a duplicate within the batch: evaluated once
                    results.append(dict(batch[config]))
                    continue
                key = evaluator.cache_key(config)
                record = study.lookup(key)
                if record is not None:
                    metrics = dict(record.metrics)
                    hits += 1
                else:
                    if evaluations >= n_evals:
                        finished_batch = False
                        break
                    metrics, seconds = _timed(evaluator, config)
                    _check_metrics(problem, metrics)
                    number = study.add(
                        config,
                        metrics,
                        feasible=problem.is_feasible(metrics),
                        cache_key=key,
                        eval_seconds=seconds,
                    )
                    # the study's count, so that workers sharing a study stop together
                    evaluations = len(study)
                    new += 1
                    tracker.add(metrics)
                    logger.debug("trial %d: %s -> %s", number, config.to_json(), metrics)
                    reporter(
                        SearchProgress(
                            evaluations=evaluations,
                            total=n_evals,
                            new_evaluations=new,
                            best=tracker.best,
                            hypervolume=tracker.hypervolume,
                            config=config.to_dict(),
                            metrics=dict(metrics),
                        )
                    )
                batch[config] = metrics
                results.append(dict(metrics))
            if not finished_batch:
                break  # the study is full; the rest of the batch is for a longer run
            algorithm.tell(configs, results)
            fruitless = 0 if fruitful else fruitless + 1
            if evaluations < n_evals and fruitless >= max_fruitless_asks:
                stop_reason = (
                    f"the algorithm proposed no new config in {fruitless} asks in a row "
                    f"(the study holds {evaluations} subnets; the space has "
                    f"{_cardinality(problem)})"
                )
                logger.warning("search stopped early: %s", stop_reason)
                break
    finally:
        reporter.close()

    final = study.trials()
    hv = search_hypervolume(final, problem) if hypervolume_defined(problem) else float("nan")
    return SearchResult(
        study=study.name,
        storage=study.storage,
        evaluations=len(final),
        new_evaluations=new,
        pareto=pareto_points(final, problem),
        hypervolume=hv,
        stopped_early=stop_reason is not None,
        stop_reason=stop_reason,
        seconds=time.perf_counter() - start,
        requested=n_evals,
        cache_hits=hits,
    )


# -- helpers ---------------------------------------------------------------------------


def _validate(
    problem: Problem,
    algorithm: Algorithm,
    evaluator: BaseEvaluator,
    study: Study,
    n_evals: int,
    max_fruitless_asks: int,
) -> None:
    if isinstance(n_evals, bool) or not isinstance(n_evals, int) or n_evals < 1:
        raise ValueError(f"n_evals must be a positive integer, got {n_evals!r}")
    if (
        isinstance(max_fruitless_asks, bool)
        or not isinstance(max_fruitless_asks, int)
        or max_fruitless_asks < 1
    ):
        raise ValueError(
            f"max_fruitless_asks must be a positive integer, got {max_fruitless_asks!r}"
        )
    space = problem.space.name
    for what, name in (
        ("algorithm", algorithm.problem.space.name),
        ("evaluator", evaluator.space.name),
        ("study", study.meta.space),
    ):
        if name != space:
            raise ValueError(f"the {what} searches space {name!r}, the problem {space!r}")
    if tuple(study.meta.objectives) != problem.objectives_dicts():
        raise ValueError(
            f"study {study.name!r} has objectives {list(study.meta.objectives)}, the problem "
            f"{list(problem.objectives_dicts())}"
        )


def _timed(evaluator: BaseEvaluator, config: Config) -> tuple[dict[str, float], float]:
    start = time.perf_counter()
    metrics = evaluator.evaluate(config)
    return metrics, time.perf_counter() - start


def _check_metrics(problem: Problem, metrics: dict[str, float]) -> None:
    missing = [name for name in problem.metric_names if name not in metrics]
    if missing:
        raise ValueError(
            f"the evaluator returned no {', '.join(map(repr, missing))} metric, which the "
            f"problem needs; it returned {sorted(metrics)}"
        )


def _cardinality(problem: Problem) -> str:
    try:
        return f"{problem.space.cardinality()} distinct configs"
    except Exception:
        return "an unknown number of configs"


class _Tracker:
    """Best feasible value and hypervolume, updated incrementally (front only)."""

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        self.best: float | None = None
        self._front = np.zeros((0, len(problem.objectives)))
        self._with_hv = hypervolume_defined(problem)
        self.hypervolume: float | None = 0.0 if self._with_hv else None

    def add(self, metrics: dict[str, float]) -> None:
        problem = self.problem
        if any(name not in metrics for name in problem.metric_names):
            return
        values = problem.objective_values(metrics)
        if any(np.isnan(values)) or not problem.is_feasible(metrics):
            return
        first = problem.objectives[0]
        value = values[0]
        if self.best is None or (value > self.best if first.direction == "maximize"
                                 else value < self.best):
            self.best = value
        if self._with_hv:
            point = normalised_points([metrics], problem)
            points = np.vstack([self._front, point])
            self._front = points[pareto_front(points)]
            self.hypervolume = hypervolume(self._front, np.ones(points.shape[1]))


class _Reporter:
    def __call__(self, state: SearchProgress) -> None: ...

    def close(self) -> None: ...


class _CallbackReporter(_Reporter):
    def __init__(self, callback: ProgressCallback) -> None:
        self.callback = callback

    def __call__(self, state: SearchProgress) -> None:
        self.callback(state)


class _BarReporter(_Reporter):
    def __init__(self, *, total: int, initial: int, tracker: _Tracker) -> None:
        from nas._progress import progress_bar

        self.bar = progress_bar(total=total, initial=min(initial, total), desc="search",
                                unit="eval", dynamic_ncols=True)
        self.label = tracker.problem.objectives[0].name
        self._show(tracker.best, tracker.hypervolume)

    def _show(self, best: float | None, hv: float | None) -> None:
        self.bar.set_postfix_str(
            f"best feasible {self.label} {'-' if best is None else f'{best:.4f}'}, "
            f"hv {'-' if hv is None else f'{hv:.4f}'}",
            refresh=False,
        )

    def __call__(self, state: SearchProgress) -> None:
        self._show(state.best, state.hypervolume)
        self.bar.update(min(state.evaluations, self.bar.total) - self.bar.n)

    def close(self) -> None:
        self.bar.close()


def _make_reporter(
    progress: bool | ProgressCallback, *, total: int, initial: int, tracker: _Tracker
) -> _Reporter:
    if progress is True:
        return _BarReporter(total=total, initial=initial, tracker=tracker)
    if progress is False:
        return _Reporter()
    return _CallbackReporter(progress)
