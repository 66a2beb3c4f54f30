"""Workers: evaluate a shared study's queued trials (``nas worker``), and local pools of
them (``nas search --workers N``).

A worker rebuilds the study's evaluator from what the study stores (supernet or space,
hardware target, evaluation limit, quantization, size and memory objectives and budgets) through
:func:`nas._job.prepare_search`, so it passes the checks a search passes, and a worker
whose target measures differently (another fingerprint) is refused in one line. It then
claims WAITING trials one at a time, heartbeats while it evaluates, and completes each
(an evaluation error becomes a failed trial carrying its one-line message). Before its
first evaluation it checks that its evaluator gives the driver's cache key for the
trial: a worker that would measure something else gives the trial back and stops.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas._evaluator import MEMORY_METRIC, BaseEvaluator
from nas._job import PreparedSearch, SearchRequest, prepare_search
from nas._messages import one_line
from nas._problem import Problem
from nas.studies import StudyNotFoundError, stored_meta
from nas.studies._queue import HEARTBEAT_SECONDS, Claimed, Heartbeat, TrialQueue, worker_name
from nas.studies._storage import ENV_VAR, sqlite_path, storage_label

logger = logging.getLogger(__name__)

MAX_LOCAL_WORKERS = 32
"""Most workers ``nas search --workers`` starts: each holds up to two database
connections (its loop and its heartbeat), and a PostgreSQL server allows 100 by default;
more evaluation processes than that are better spread over hosts with ``nas worker``."""
IDLE_POLL_S = 0.05
"""How often an idle worker looks for a waiting trial."""


@dataclass(frozen=True)
class WorkerResult:
    """What a worker did before it stopped."""

    completed: int
    failed: int
    stop_reason: str


def prepare_worker(storage: str, study: str) -> PreparedSearch:
    """The study's search as its driver prepared it (evaluator, problem, study), rebuilt
    from the study's stored settings.

    Raises:
        StudyNotFoundError: no such study.
        StudyMismatchError: this host's target or supernet differs from the study's.
    """
    meta = stored_meta(study, storage)
    if meta is None:
        raise StudyNotFoundError(f"no study {study!r} in {storage_label(storage)!r} to work on")
    budgets = {c["metric"]: float(c["upper"]) for c in meta.constraints}
    objectives = {o["name"] for o in meta.objectives}
    request = SearchRequest(
        supernet=meta.supernet,
        space=meta.space.split("@", 1)[0] if not meta.supernet else None,
        accuracy_predictor=meta.accuracy_predictor or None,
        hardware=meta.hardware,
        budget_ms=budgets.get("latency_ms"),  # None: the study's whole front
        evals=1,
        seed=meta.seed,
        algorithm=meta.algorithm or None,
        study=study,
        storage=storage,
        eval_limit=meta.eval_limit,
        quantize=meta.quantize,
        size_objective="size_mb" in objectives,
        size_budget_mb=budgets.get("size_mb"),
        memory_objective=MEMORY_METRIC in objectives,
        memory_budget_mb=budgets.get(MEMORY_METRIC),
    )
    return prepare_search(request)


def run_worker(queue: TrialQueue, evaluator: BaseEvaluator, problem: Problem, *,
               max_trials: int | None = None, idle_exit: float | None = None,
               name: str | None = None,
               heartbeat: float = HEARTBEAT_SECONDS) -> WorkerResult:
    """Evaluate queued trials until ``max_trials`` are done, the queue is empty and
    closed by the driver it served (a queue an earlier run closed is waited on), or
    nothing was waiting for ``idle_exit`` seconds; a heartbeat is recorded
    every ``heartbeat`` seconds while evaluating (keep it well under the driver's
    ``stale_after``).

    Raises:
        ValueError: bad options, or the evaluator's cache key for a claimed trial is not
            the driver's (the trial is given back first).
    """
    if max_trials is not None and (isinstance(max_trials, bool) or max_trials < 1):
        raise ValueError(f"max_trials must be a positive integer, got {max_trials!r}")
    if not 0 < heartbeat <= 3600:
        raise ValueError(f"heartbeat must be in (0, 3600] seconds, got {heartbeat!r}")
    if idle_exit is not None and not idle_exit > 0:
        raise ValueError(f"idle_exit must be a positive number of seconds, got {idle_exit!r}")
    name = name or worker_name()
    completed = failed = 0
    idle_since = time.monotonic()
    checked = seen_open = False
    while max_trials is None or completed + failed < max_trials:
        claimed = queue.claim(name)
        seen_open = seen_open or claimed is not None
        if claimed is None:
            # a queue closed by an earlier run is reopened by the next driver: wait
            state = queue.state()
            seen_open = seen_open or state == "open"
            if state == "closed" and seen_open:
                return WorkerResult(completed, failed, "the search is finished")
            if idle_exit is not None and time.monotonic() - idle_since > idle_exit:
                return WorkerResult(completed, failed, f"idle for {idle_exit:g} s")
            time.sleep(IDLE_POLL_S)
            continue
        if not checked:
            _check_key(queue, evaluator, claimed)
            checked = True
        if _evaluate(queue, evaluator, problem, claimed, heartbeat):
            completed += 1
        else:
            failed += 1
        idle_since = time.monotonic()
    return WorkerResult(completed, failed, f"{max_trials} trials done")


def _check_key(queue: TrialQueue, evaluator: BaseEvaluator, claimed: Claimed) -> None:
    key = evaluator.cache_key(claimed.config)
    if key != claimed.key:
        queue.release(claimed)
        raise ValueError(
            f"this worker's evaluator gives cache key {key} for trial {claimed.number} of "
            f"study {queue.study.name!r}, the search's is {claimed.key}: it would measure "
            f"something else (another checkpoint, target calibration or eval limit)"
        )


def _evaluate(queue: TrialQueue, evaluator: BaseEvaluator, problem: Problem,
              claimed: Claimed, heartbeat: float) -> bool:
    """Evaluate one claimed trial; True when it completed."""
    config = evaluator.space.config(claimed.config)
    start = time.perf_counter()
    try:
        with Heartbeat(queue, claimed.trial_id, interval=heartbeat):
            metrics = dict(evaluator.evaluate(config))
            missing = [m for m in problem.metric_names if m not in metrics]
            if missing:
                raise ValueError(f"the evaluator returned no {', '.join(missing)} metric")
    except (KeyboardInterrupt, SystemExit):
        queue.release(claimed)  # stopped, not failed: another worker takes it
        raise
    except Exception as err:
        message = f"{type(err).__name__}: {one_line(err)}"
        logger.error("trial %d failed: %s", claimed.number, message)
        queue.fail(claimed, message)
        return False
    seconds = time.perf_counter() - start
    return queue.complete(claimed, metrics, feasible=problem.is_feasible(metrics),
                          eval_seconds=seconds)


def check_worker_storage(storage: str, *, must_exist: bool = True) -> None:
    """Workers share a study through a database file or server, never memory.

    Raises:
        ValueError: an in-memory SQLite URL, or (``must_exist``) an SQLite file that
            does not exist.
    """
    from sqlalchemy.engine import make_url

    if make_url(storage).get_backend_name() != "sqlite":
        return
    path = sqlite_path(storage)
    if path is None:
        raise ValueError(f"workers cannot share an in-memory study ({storage!r}): give "
                         f"--storage sqlite:///FILE or postgresql://...")
    if must_exist and not path.exists():
        raise ValueError(f"no study database '{path}' for workers to join")


class LocalWorkers:
    """``count`` ``nas worker`` processes on this machine for the study, their output in
    temporary files; :meth:`check` raises once all of them have exited early, and
    :meth:`stop` ends the ones still running."""

    def __init__(self, storage: str, study: str, count: int, *,
                 idle_exit: float = 600.0) -> None:
        if isinstance(count, bool) or not isinstance(count, int) \
                or not 1 <= count <= MAX_LOCAL_WORKERS:
            raise ValueError(f"--workers must be from 1 to {MAX_LOCAL_WORKERS} (each worker "
                             f"holds up to two database connections), got {count!r}")
        self._folder = tempfile.TemporaryDirectory(prefix="nas-workers-")
        self._logs: list[Path] = []
        self._procs: list[subprocess.Popen[Any]] = []
        # the URL goes by environment: a password on a command line is public (ps)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", ENV_VAR: storage}
        for i in range(count):
            log = Path(self._folder.name) / f"worker{i}.log"
            self._logs.append(log)
            with log.open("wb") as out:
                self._procs.append(subprocess.Popen(
                    [sys.executable, "-m", "nas.cli", "worker", "--study", study,
                     "--idle-exit", f"{idle_exit:g}"],
                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env))

    def check(self) -> None:
        """Raise ``RuntimeError`` (one line) when every worker has exited."""
        codes = [p.poll() for p in self._procs]
        if all(code is not None for code in codes):
            raise RuntimeError(f"all {len(codes)} workers exited (exit codes "
                               f"{', '.join(map(str, codes))}); the first said: "
                               f"{self._last_line(0)}")

    def _last_line(self, index: int) -> str:
        lines = [line for line in self._logs[index].read_text(errors="replace").splitlines()
                 if line.strip()]
        return lines[-1].strip() if lines else "nothing"

    def stop(self, *, grace: float = 10.0) -> None:
        """Wait up to ``grace`` seconds for the workers to see the closed queue, then
        end the rest (SIGTERM, then SIGKILL)."""
        deadline = time.monotonic() + grace
        for proc in self._procs:
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.01))
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGTERM)
        for proc in self._procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._folder.cleanup()

    def __enter__(self) -> LocalWorkers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
