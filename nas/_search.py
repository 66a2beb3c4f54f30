"""The search loop: ask the algorithm, evaluate what is new, record it, tell the results.

Durability rule: new evaluations are committed to the study in batches, as soon as the
oldest uncommitted one started ``commit_seconds`` (1 s) ago or 1,000 wait, checked after
every evaluation and every ask/tell, and always when the run ends or fails. An evaluation
that takes a second or more is therefore committed on its own before the next starts,
while a cheap evaluator (a predictor, a lookup table) writes a second's worth at once:
a search killed at any moment (even by SIGKILL) loses at most the last second of work
plus the step in flight, and a rerun replays it. ``commit_seconds=0`` commits every
evaluation before the next one starts.

The loop's own cost per evaluation does not grow with the study: known configs are
looked up in memory, the front and its hypervolume change only when a point enters the
front (:class:`nas.studies.ParetoArchive`), and the storage is re-read for other
workers' trials at most once a second.

Resuming is replay: algorithms are deterministic given their seed and the results they
are told, so rerunning the same search asks the same configs again; those already in
the study are served from it (not re-evaluated, not counted as new) and the run carries
on where the killed one stopped, ending with the same study an uninterrupted run would
have produced.
"""

from __future__ import annotations

import datetime
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from nas._driver import QueueDriver
from nas._evaluator import BaseEvaluator
from nas._pareto import ParetoArchive, hypervolume_defined, normaliser
from nas._problem import Problem
from nas._space import Config
from nas.algorithms._base import Algorithm
from nas.studies._pareto import ParetoPoint, pareto_points, search_hypervolume
from nas.studies._study import NewTrial, Study, TrialRecord

COMMIT_SECONDS = 1.0
"""The most work (seconds since the oldest uncommitted evaluation started) a kill may
lose; see the module docstring."""
COMMIT_BATCH = 1000
"""The most evaluations one commit writes: bounds the buffer and a transaction's size,
and spreads a cheap search's writes evenly over its run."""

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
        seconds: the run's wall-clock time.
        requested: ``n_evals``.
        cache_hits: configs served from the study instead of evaluated.
        algorithm_seconds: time spent in the algorithm's ``ask`` and ``tell``.
        evaluator_seconds: time spent evaluating new configs.
        commits: writes to the storage (each a batch of evaluations).
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
    algorithm_seconds: float = 0.0
    evaluator_seconds: float = 0.0
    commits: int = 0

    @property
    def overhead_us(self) -> float:
        """The search loop's own time per new evaluation in microseconds: everything but
        the algorithm and the evaluator (lookups, records, storage writes, progress)."""
        own = self.seconds - self.algorithm_seconds - self.evaluator_seconds
        return 1e6 * own / max(self.new_evaluations, 1)

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
    commit_seconds: float = COMMIT_SECONDS,
    workers: QueueDriver | None = None,
) -> SearchResult:
    """Search until ``study`` holds ``n_evals`` evaluated subnets.

    ``n_evals`` counts the study's total, earlier runs included: rerunning a finished
    search does nothing, and rerunning a killed one finishes it.

    Args:
        problem: objectives and budgets (the study's objectives must be the same).
        algorithm: a fresh algorithm (it is replayed from its first ask).
        evaluator: computes metrics; its cache is filled from the study first.
        study: where every evaluated subnet is recorded (see the durability rule in
            the module docstring).
        n_evals: the number of evaluated subnets the study should hold at the end.
        progress: True for a live progress bar (evaluations, best feasible value of the
            first objective, hypervolume), False for none, or a callback that receives a
            :class:`SearchProgress` after each new evaluation.
        max_fruitless_asks: stop (``stopped_early``) after this many asks in a row that
            bring nothing new to evaluate, e.g. once the space is exhausted.
        commit_seconds: commit new evaluations once the oldest uncommitted one started
            this many seconds ago (0: each one before the next starts).
        workers: evaluate new configs by workers through the study's queue instead of
            here (:class:`nas._driver.QueueDriver`); the workers record the trials, and
            the algorithm is told each batch in its own order, so the search asks what
            it asks without workers.

    Returns:
        A :class:`SearchResult`.

    Raises:
        ValueError: a bad ``n_evals``, ``max_fruitless_asks`` or ``commit_seconds``, a
            study or evaluator over another space, or a study with other objectives
            than ``problem``.
        QueueError: with ``workers``, a config failed for good (one line).
    """
    _validate(problem, algorithm, evaluator, study, n_evals, max_fruitless_asks)
    if not (isinstance(progress, bool) or callable(progress)):
        raise ValueError(f"progress must be True, False or a callable, got {progress!r}")
    if isinstance(commit_seconds, bool) or not isinstance(commit_seconds, int | float) \
            or not 0 <= commit_seconds <= 3600:
        raise ValueError(f"commit_seconds must be a number of seconds from 0 to 3600, got "
                         f"{commit_seconds!r}")
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

    recorder = _Recorder(study, problem, commit_seconds)
    evaluations = len(records)
    new = 0
    hits = 0
    fruitless = 0
    algorithm_seconds = evaluator_seconds = 0.0
    proposed: set[Config] = set()  # every config asked in this run
    stop_reason: str | None = None
    reporter = _make_reporter(progress, total=n_evals, initial=evaluations, tracker=tracker)
    served: dict[str, dict[str, float]] = {}  # what workers evaluated in this run
    initial = evaluations
    arrived = 0
    queued_configs: list[Config] = []

    def on_result(index: int, metrics: dict[str, float], seconds: float) -> None:
        nonlocal new, arrived
        new += 1
        arrived += 1
        tracker.add(metrics)
        reporter(SearchProgress(evaluations=initial + arrived, total=n_evals,
                                new_evaluations=new, best=tracker.best,
                                hypervolume=tracker.hypervolume,
                                config=queued_configs[index].to_dict(),
                                metrics=dict(metrics)))

    if workers is not None:
        workers.queue.open()
    try:
        while evaluations < n_evals:
            clock = time.perf_counter()
            configs = algorithm.ask()
            algorithm_seconds += time.perf_counter() - clock
            # Fruitful: proposes a config not proposed before in this run. Configs served
            # from the study while a resumed run replays count as fruitful.
            fruitful = any(config not in proposed for config in configs)
            proposed.update(configs)
            results: list[dict[str, float]] = []
            batch: dict[Config, dict[str, float]] = {}
            queued: list[tuple[int, Config, str]] = []  # (place in results, config, key)
            finished_batch = True
            for config in configs:
                if config in batch:  # a duplicate within the batch: evaluated once
                    # (a queued one's dict is filled when its result comes, below)
                    results.append(dict(batch[config]) if workers is None else batch[config])
                    continue
                key = evaluator.cache_key(config)
                known = recorder.lookup(key) if workers is None else (
                    served.get(key) or recorder.lookup(key))
                if known is not None:
                    metrics = dict(known)
                    hits += 1
                else:
                    if evaluations >= n_evals:
                        finished_batch = False
                        break
                    if workers is not None:
                        metrics = {}
                        queued.append((len(results), config, key))
                        evaluations += 1
                        batch[config] = metrics
                        results.append(metrics)
                        continue
                    metrics, seconds = _timed(evaluator, config)
                    evaluator_seconds += seconds
                    _check_metrics(problem, metrics)
                    recorder.add(config, metrics, key, seconds)
                    # the study's count, so that workers sharing a study stop together
                    evaluations = len(recorder)
                    new += 1
                    tracker.add(metrics)
                    logger.debug("evaluation %d: %s -> %s", evaluations, config.to_json(),
                                 metrics)
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
            if queued:
                assert workers is not None
                queued_configs[:] = [config for _, config, _ in queued]
                clock = time.perf_counter()
                outcomes = workers.run_batch([(c, k) for _, c, k in queued], on_result)
                evaluator_seconds += time.perf_counter() - clock
                for (place, _, key), (metrics, _) in zip(queued, outcomes, strict=True):
                    _check_metrics(problem, metrics)
                    results[place].update(metrics)  # duplicates in the batch share it
                    served[key] = dict(metrics)
                results = [dict(r) for r in results]
            if not finished_batch:
                break  # the study is full; the rest of the batch is for a longer run
            clock = time.perf_counter()
            algorithm.tell(configs, results)
            algorithm_seconds += time.perf_counter() - clock
            recorder.commit_if_due()
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
        recorder.commit()
        reporter.close()
        if workers is not None:
            workers.queue.close()

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
        algorithm_seconds=algorithm_seconds,
        evaluator_seconds=evaluator_seconds,
        commits=recorder.commits,
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


class _Recorder:
    """New evaluations on their way to the study, committed by the durability rule of
    the module docstring; lookups and the count see them before they are committed."""

    def __init__(self, study: Study, problem: Problem, commit_seconds: float, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.study = study
        self.problem = problem
        self.commit_seconds = commit_seconds
        self.clock = clock
        self.commits = 0
        self._pending: dict[str, NewTrial] = {}
        self._oldest_start: float | None = None

    def __len__(self) -> int:
        return len(self.study) + len(self._pending)

    def lookup(self, key: str) -> dict[str, float] | None:
        waiting = self._pending.get(key)
        if waiting is not None:
            return dict(waiting.metrics)
        record: TrialRecord | None = self.study.lookup(key)
        return None if record is None else dict(record.metrics)

    def add(self, config: Config, metrics: dict[str, float], key: str, seconds: float) -> None:
        if self._oldest_start is None:
            self._oldest_start = self.clock() - seconds
        self._pending[key] = NewTrial(config, metrics, feasible=self.problem.is_feasible(metrics),
                                      cache_key=key, eval_seconds=seconds,
                                      finished=datetime.datetime.now())
        self.commit_if_due()

    def commit_if_due(self) -> None:
        if self._oldest_start is not None and (
                self.clock() - self._oldest_start >= self.commit_seconds
                or len(self._pending) >= COMMIT_BATCH):
            self.commit()

    def commit(self) -> None:
        if not self._pending:
            return
        self.study.add_many(list(self._pending.values()))
        self._pending.clear()
        self._oldest_start = None
        self.commits += 1


class _Tracker:
    """Best feasible value and hypervolume, updated incrementally (front only)."""

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        self.best: float | None = None
        self._archive = ParetoArchive(np.ones(len(problem.objectives)))
        self._normalise = normaliser(problem) if hypervolume_defined(problem) else None

    @property
    def hypervolume(self) -> float | None:
        return self._archive.hypervolume if self._normalise is not None else None

    def add(self, metrics: dict[str, float]) -> None:
        problem = self.problem
        if any(name not in metrics for name in problem.metric_names):
            return
        values = problem.objective_values(metrics)
        if any(math.isnan(v) for v in values) or not problem.is_feasible(metrics):
            return
        first = problem.objectives[0]
        value = values[0]
        if self.best is None or (value > self.best if first.direction == "maximize"
                                 else value < self.best):
            self.best = value
        if self._normalise is not None:
            self._archive.add(self._normalise(metrics))


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
