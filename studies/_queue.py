"""A work queue of trials on a study's RDB storage: one driver enqueues, workers claim.

When many processes (or machines) share a search, the driver alone runs the algorithm
and puts each config it needs evaluated into the study as a WAITING trial; workers claim
WAITING trials, evaluate them and complete them; the driver reads the results back.
Everything lives in the study's own tables, so ``nas studies audit``, reports and
Optuna's tools see the queue as trials, and nothing but the database is shared.

* **Enqueue** (:meth:`TrialQueue.enqueue`): a WAITING trial whose params are the config's
  active genes and whose user attributes are ``config``, ``nas.key`` (the evaluation
  cache key), ``nas.batch`` and ``nas.index`` (which ask and which place in it), skipped
  for a key that already has a waiting, running or evaluated trial.
* **Claim** (:meth:`TrialQueue.claim`): ``UPDATE ... SET state = RUNNING WHERE
  trial_id = ? AND state = WAITING``, the lowest number first; the statement is atomic
  on every database, so of several workers exactly one gets a trial (Optuna's own
  ``set_trial_state_values`` makes the same check under a row lock). The claim records
  the trial's first heartbeat in the same transaction.
* **Heartbeat** (:class:`Heartbeat`): Optuna records heartbeats only inside
  ``Study.optimize``, never under ask/tell, so a worker records them itself
  (``RDBStorage.record_heartbeat``, the ``trial_heartbeats`` table) from a thread while
  it evaluates.
* **Complete** (:meth:`TrialQueue.complete`) writes the user attributes
  :class:`~nas.studies.Study` writes for any evaluated subnet (so lookups, reports and
  exports read worker trials like any other), the objective values and the state in one
  transaction, on the condition that the trial is still RUNNING; a trial failed as stale
  meanwhile is left failed (its retry evaluates the config again), so no config ever
  gets two results from one enqueue. Every write is retried with backoff for
  :data:`RETRY_SECONDS` while the database is unreachable (restarting).
* **Fail** (:meth:`TrialQueue.fail`): an evaluation error is a FAIL trial whose
  ``nas.error`` attribute holds the worker's message; it has no ``metrics``, so the
  study does not count it as an evaluated subnet and never serves it.
* **Stale trials** (:meth:`TrialQueue.requeue_stale`): RUNNING trials whose last
  heartbeat is older than a threshold (the database's clock, as Optuna measures) are
  failed and enqueued again with Optuna's ``RetryHeartbeatStaleTrialCallback``
  semantics (system attributes ``failed_trial`` and ``retry_history``), at most
  ``max_retry`` times per config.

The fast path relies on Optuna's RDB schema, as :mod:`nas.studies._bulk` does; the
queue needs an RDB storage (an SQLite file or a database server).
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import optuna
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from nas._space import Config
from nas.studies._bulk import _naive_utc, _rdb_supported
from nas.studies._study import NewTrial, Study

logger = logging.getLogger(__name__)

KEY_ATTR = "nas.key"
BATCH_ATTR = "nas.batch"
INDEX_ATTR = "nas.index"
ERROR_ATTR = "nas.error"
WORKER_ATTR = "nas.worker"
QUEUE_ATTR = "nas.queue"
"""Study attribute: ``open`` while a driver runs, ``closed`` after (idle workers exit)."""
MAX_RETRY = 3
"""Default retries of a config whose worker died (stale), after the first try."""
RETRY_SECONDS = 120.0
"""How long a write keeps retrying while the database is unreachable (a restart takes
seconds; longer is an outage the caller should hear about)."""
HEARTBEAT_SECONDS = 2.0
"""How often a worker records a heartbeat while it evaluates."""
_CLAIM_WINDOW = 8  # WAITING trials tried per claim before reading the queue again

T = TypeVar("T")


@dataclass(frozen=True)
class QueueEntry:
    """A config the driver needs evaluated: its cache key, and where it was asked."""

    config: Config
    key: str
    batch: int
    index: int


@dataclass(frozen=True)
class Claimed:
    """A trial a worker holds (RUNNING) until it completes, fails or releases it."""

    trial_id: int
    number: int
    config: dict[str, Any]
    key: str


@dataclass(frozen=True)
class Outcome:
    """Where a key stands in the queue.

    ``state`` is ``done`` (``metrics`` and ``eval_seconds`` hold the result),
    ``pending`` (waiting or running), ``failed`` (for good: an evaluation error, or more
    stale retries than allowed; ``message`` says which, naming the trial and worker) or
    ``missing`` (nothing queued: never enqueued, or a stale trial not yet re-queued).
    """

    state: str
    metrics: dict[str, float] | None = None
    eval_seconds: float = 0.0
    message: str = ""
    failures: tuple[int, ...] = ()
    """Numbers of the trials that crashed (stale) for this key, oldest first."""


class QueueError(RuntimeError):
    """A queued config failed for good; the message is one line."""


def worker_name() -> str:
    """``host:pid``, how a worker is named in trials and messages."""
    return f"{socket.gethostname()}:{os.getpid()}"


class TrialQueue:
    """The work queue of ``study`` (module docstring).

    Args:
        study: a study with its space, in an RDB storage.
        max_retry: how many times a config whose worker died is enqueued again.

    Raises:
        ValueError: the study's storage is not an RDB one (in memory, journal), the
            study has no space, or ``max_retry`` is not a non-negative integer.
    """

    def __init__(self, study: Study, *, max_retry: int = MAX_RETRY) -> None:
        storage = study._writer_storage()
        if not (isinstance(storage, RDBStorage) and _rdb_supported()):
            raise ValueError(
                f"workers share a study through a database: study {study.name!r} is in "
                f"{study.storage!r}; use an SQLite file (sqlite:///FILE) or a server "
                f"(postgresql://...) as --storage"
            )
        if study.space is None:
            raise ValueError(f"study {study.name!r} has no search space; pass space= to open it")
        if isinstance(max_retry, bool) or not isinstance(max_retry, int) or max_retry < 0:
            raise ValueError(f"max_retry must be a non-negative integer, got {max_retry!r}")
        self.study = study
        self.storage: RDBStorage = storage
        self.max_retry = max_retry
        self.study_id = study._id(storage)

    # -- the driver's side -----------------------------------------------------------------

    def enqueue(self, entries: Sequence[QueueEntry]) -> int:
        """Enqueue ``entries`` whose key has no waiting, running or evaluated trial (a
        key whose trials all crashed carries their numbers as ``retry_history``, and is
        skipped once that exceeds ``max_retry``); the number enqueued."""
        outcomes = self.outcomes(e.key for e in entries)
        done = 0
        for entry in entries:
            outcome = outcomes[entry.key]
            if outcome.state != "missing":
                continue
            retried(lambda e=entry, o=outcome: self._create(e, o.failures),
                    f"enqueueing a trial of study {self.study.name!r}")
            outcomes[entry.key] = Outcome("pending")
            done += 1
        return done

    def outcomes(self, keys: Iterable[str]) -> dict[str, Outcome]:
        """Where each of ``keys`` stands (:class:`Outcome`), read in one go."""
        wanted = list(dict.fromkeys(keys))
        views = retried(lambda: self._read(wanted), f"reading study {self.study.name!r}")
        return {key: self._judge(views.get(key, [])) for key in wanted}

    def requeue_stale(self, stale_after: float) -> list[int]:
        """Fail RUNNING trials silent for over ``stale_after`` seconds and enqueue their
        configs again (up to ``max_retry`` times); the numbers of the trials failed."""
        failed = []
        for trial_id, number, silent in retried(self._silent, "reading heartbeats"):
            if silent <= stale_after:
                continue
            message = f"no heartbeat for {silent:.0f} s (worker gone)"
            if retried(lambda t=trial_id, m=message: self._finish_failed(t, "stale", m),
                       "failing a stale trial"):
                failed.append(number)
                logger.warning("trial %d of study %r: %s; re-queued", number,
                               self.study.name, message)
        if failed:
            self._requeue(failed)
        return failed

    def open(self) -> None:
        """Mark the queue open (a driver runs)."""
        retried(lambda: self.storage.set_study_user_attr(self.study_id, QUEUE_ATTR, "open"),
                "opening the queue")

    def close(self) -> None:
        """Mark the queue closed: workers with nothing to do exit."""
        retried(lambda: self.storage.set_study_user_attr(self.study_id, QUEUE_ATTR, "closed"),
                "closing the queue")

    def state(self) -> str:
        """``open`` (a driver runs), ``closed`` (it finished) or ``new`` (none ran yet)."""
        attrs = retried(lambda: self.storage.get_study_user_attrs(self.study_id),
                        "reading the queue's state")
        return str(attrs.get(QUEUE_ATTR, "new"))

    # -- the workers' side -----------------------------------------------------------------

    def claim(self, worker: str | None = None) -> Claimed | None:
        """Take the lowest-numbered WAITING trial (RUNNING from now on, with a first
        heartbeat), or None when none is waiting."""
        worker = worker or worker_name()
        for _ in range(3):  # others may take the whole window: look again
            ids = retried(self._waiting_ids, "reading the queue")
            if not ids:
                return None
            for trial_id in ids:
                claimed = retried(lambda t=trial_id: self._claim(t, worker), "claiming a trial")
                if claimed is not None:
                    return claimed
        return None

    def heartbeat(self, trial_id: int) -> None:
        """Record that the worker holding ``trial_id`` is alive (not retried)."""
        self.storage.record_heartbeat(trial_id)

    def complete(self, claimed: Claimed, metrics: Mapping[str, float], *, feasible: bool,
                 eval_seconds: float) -> bool:
        """Record ``claimed``'s result as :class:`~nas.studies.Study` records one (a
        NaN objective makes it FAIL with its metrics, counted but never on a front).

        Returns:
            False when the trial was failed as stale meanwhile (the result is dropped;
            the config's retry evaluates it again).
        """
        frozen = self.study._frozen(NewTrial(claimed.config, metrics, feasible=feasible,
                                             cache_key=claimed.key,
                                             eval_seconds=eval_seconds))
        done = retried(lambda: self._finish(claimed.trial_id, frozen),
                       f"reporting trial {claimed.number}")
        if not done:
            logger.warning("trial %d of study %r was failed as stale before its result "
                           "came; the result is dropped", claimed.number, self.study.name)
        return done

    def fail(self, claimed: Claimed, message: str) -> bool:
        """Fail ``claimed`` for good with the worker's one-line ``message``."""
        return retried(lambda: self._finish_failed(claimed.trial_id, "evaluation", message),
                       f"failing trial {claimed.number}")

    def release(self, claimed: Claimed) -> None:
        """Give ``claimed`` back (WAITING again), e.g. when the worker cannot evaluate it."""
        retried(lambda: self._release(claimed.trial_id), f"releasing trial {claimed.number}")

    # -- internals -------------------------------------------------------------------------

    def _judge(self, views: list[_View]) -> Outcome:
        crashed: list[int] = []
        last_error = None
        for view in sorted(views, key=lambda v: v.number):
            if view.metrics is not None:
                return Outcome("done", view.metrics, view.eval_seconds)
            if view.state in (TrialState.WAITING, TrialState.RUNNING):
                return Outcome("pending")
            if view.state == TrialState.FAIL:
                error = view.error or {}
                if error.get("kind") == "evaluation":
                    return Outcome("failed", message=(
                        f"trial {view.number} failed on worker {error.get('worker', '?')}: "
                        f"{error.get('message', 'no message')}"))
                crashed.append(view.number)
                last_error = error
        if len(crashed) > self.max_retry:
            return Outcome("failed", failures=tuple(crashed), message=(
                f"trial {crashed[-1]} failed {len(crashed)} times "
                f"(retry cap {self.max_retry}; trials {', '.join(map(str, crashed))}): "
                f"{(last_error or {}).get('message', 'its worker stopped')}"))
        return Outcome("missing", failures=tuple(crashed))

    def _template(self, entry: QueueEntry, failures: Sequence[int]) -> FrozenTrial:
        params = self.study.space.config(entry.config).to_dict()
        if self.study._distributions is None:
            self.study._distributions = self.study.space.optuna_distributions()
        system = {"failed_trial": failures[0], "retry_history": list(failures)} \
            if failures else {}
        return FrozenTrial(
            number=-1, trial_id=-1, state=TrialState.WAITING, value=None, values=None,
            datetime_start=None, datetime_complete=None, params=params,
            distributions=self.study._distributions_of(tuple(params)),
            user_attrs={"config": params, KEY_ATTR: entry.key, BATCH_ATTR: entry.batch,
                        INDEX_ATTR: entry.index},
            system_attrs=system, intermediate_values={},
        )

    def _create(self, entry: QueueEntry, failures: Sequence[int]) -> None:
        self.storage.create_new_trial(self.study_id, template_trial=self._template(entry,
                                                                                   failures))

    def _requeue(self, numbers: Sequence[int]) -> None:
        """Enqueue again the configs of the failed trials ``numbers``."""
        entries = []
        for number in numbers:
            trial = retried(lambda n=number: self.storage.get_trial(
                self.storage.get_trial_id_from_study_id_trial_number(self.study_id, n)),
                "reading a failed trial")
            attrs = trial.user_attrs
            entries.append(QueueEntry(self.study.space.config(attrs["config"]),
                                      str(attrs[KEY_ATTR]), int(attrs.get(BATCH_ATTR, -1)),
                                      int(attrs.get(INDEX_ATTR, -1))))
        self.enqueue(entries)

    def _tables(self) -> tuple[Any, Any, Any, Any]:
        from optuna.storages._rdb import models

        return (models.TrialModel.__table__, models.TrialUserAttributeModel.__table__,
                models.TrialValueModel.__table__, models.TrialHeartbeatModel.__table__)

    def _read(self, keys: list[str]) -> dict[str, list[_View]]:
        import sqlalchemy as sa
        from optuna.storages._rdb.storage import _create_scoped_session

        if not keys:
            return {}
        trials, attrs, _, _ = self._tables()
        wanted = (KEY_ATTR, "metrics", "eval_seconds", ERROR_ATTR)
        with _create_scoped_session(self.storage.scoped_session) as session:
            keyed = session.execute(
                sa.select(attrs.c.trial_id).join(trials, trials.c.trial_id == attrs.c.trial_id)
                .where(trials.c.study_id == self.study_id, attrs.c.key == KEY_ATTR,
                       attrs.c.value_json.in_([json.dumps(k) for k in keys]))
            ).scalars().all()
            if not keyed:
                return {}
            rows = session.execute(sa.select(trials.c.trial_id, trials.c.number,
                                             trials.c.state)
                                   .where(trials.c.trial_id.in_(keyed))).all()
            found: dict[int, dict[str, Any]] = {tid: {} for tid in keyed}
            for tid, key, text in session.execute(
                    sa.select(attrs.c.trial_id, attrs.c.key, attrs.c.value_json)
                    .where(attrs.c.trial_id.in_(keyed), attrs.c.key.in_(wanted))):
                found[tid][key] = json.loads(text)
        views: dict[str, list[_View]] = {}
        for tid, number, state in rows:
            values = found[tid]
            metrics = values.get("metrics")
            views.setdefault(str(values[KEY_ATTR]), []).append(_View(
                number, state,
                None if metrics is None else {k: float(v) for k, v in metrics.items()},
                float(values.get("eval_seconds", 0.0)), values.get(ERROR_ATTR)))
        return views

    def _waiting_ids(self) -> list[int]:
        import sqlalchemy as sa
        from optuna.storages._rdb.storage import _create_scoped_session

        trials = self._tables()[0]
        with _create_scoped_session(self.storage.scoped_session) as session:
            return list(session.execute(
                sa.select(trials.c.trial_id).where(trials.c.study_id == self.study_id,
                                                   trials.c.state == TrialState.WAITING)
                .order_by(trials.c.number).limit(_CLAIM_WINDOW)).scalars())

    def _claim(self, trial_id: int, worker: str) -> Claimed | None:
        import sqlalchemy as sa
        from optuna.storages._rdb.storage import _create_scoped_session

        trials, attrs, _, beats = self._tables()
        with _create_scoped_session(self.storage.scoped_session) as session:
            taken = session.execute(
                sa.update(trials).where(trials.c.trial_id == trial_id,
                                        trials.c.state == TrialState.WAITING)
                .values(state=TrialState.RUNNING, datetime_start=_now())).rowcount
            if taken != 1:
                return None  # another worker was first
            session.execute(sa.delete(beats).where(beats.c.trial_id == trial_id))
            session.execute(sa.insert(beats).values(trial_id=trial_id, heartbeat=sa.func.now()))
            _set_attrs(session, attrs, trial_id, {WORKER_ATTR: worker})
            number = session.execute(sa.select(trials.c.number)
                                     .where(trials.c.trial_id == trial_id)).scalar_one()
            values = {key: json.loads(text) for key, text in session.execute(
                sa.select(attrs.c.key, attrs.c.value_json).where(
                    attrs.c.trial_id == trial_id, attrs.c.key.in_(("config", KEY_ATTR))))}
        return Claimed(trial_id, number, dict(values["config"]), str(values[KEY_ATTR]))

    def _finish(self, trial_id: int, frozen: FrozenTrial) -> bool:
        """COMPLETE (or FAIL with metrics) with ``frozen``'s values and attributes, if
        still RUNNING; True also when an earlier try of this very write committed."""
        import sqlalchemy as sa
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session

        trials, attrs, values, _ = self._tables()
        with _create_scoped_session(self.storage.scoped_session) as session:
            moved = session.execute(
                sa.update(trials).where(trials.c.trial_id == trial_id,
                                        trials.c.state == TrialState.RUNNING)
                .values(state=frozen.state, datetime_complete=_now())).rowcount
            if moved != 1:
                return session.execute(
                    sa.select(sa.func.count()).select_from(attrs).where(
                        attrs.c.trial_id == trial_id, attrs.c.key == "metrics")
                ).scalar_one() > 0
            _set_attrs(session, attrs, trial_id, frozen.user_attrs)
            session.execute(sa.delete(values).where(values.c.trial_id == trial_id))
            rows = []
            for objective, value in enumerate(frozen.values or ()):
                stored, kind = models.TrialValueModel.value_to_stored_repr(value)
                rows.append({"trial_id": trial_id, "objective": objective, "value": stored,
                             "value_type": kind})
            if rows:
                session.execute(sa.insert(values), rows)
        return True

    def _finish_failed(self, trial_id: int, kind: str, message: str) -> bool:
        import sqlalchemy as sa
        from optuna.storages._rdb.storage import _create_scoped_session

        trials, attrs, _, _ = self._tables()
        with _create_scoped_session(self.storage.scoped_session) as session:
            moved = session.execute(
                sa.update(trials).where(trials.c.trial_id == trial_id,
                                        trials.c.state == TrialState.RUNNING)
                .values(state=TrialState.FAIL, datetime_complete=_now())).rowcount
            if moved != 1:
                return False
            worker = session.execute(sa.select(attrs.c.value_json).where(
                attrs.c.trial_id == trial_id, attrs.c.key == WORKER_ATTR)).scalar()
            _set_attrs(session, attrs, trial_id, {ERROR_ATTR: {
                "kind": kind, "message": message,
                "worker": json.loads(worker) if worker else "?"}})
        return True

    def _release(self, trial_id: int) -> None:
        import sqlalchemy as sa
        from optuna.storages._rdb.storage import _create_scoped_session

        trials, _, _, beats = self._tables()
        with _create_scoped_session(self.storage.scoped_session) as session:
            session.execute(sa.update(trials).where(trials.c.trial_id == trial_id,
                                                    trials.c.state == TrialState.RUNNING)
                            .values(state=TrialState.WAITING, datetime_start=None))
            session.execute(sa.delete(beats).where(beats.c.trial_id == trial_id))

    def _silent(self) -> list[tuple[int, int, float]]:
        """``(trial id, number, seconds since the last sign of life)`` of RUNNING trials:
        the last heartbeat on the database's clock, else the start on this one's."""
        import sqlalchemy as sa
        from optuna.storages._rdb.storage import _create_scoped_session

        trials, _, _, beats = self._tables()
        with _create_scoped_session(self.storage.scoped_session) as session:
            now = session.execute(sa.select(sa.func.now())).scalar_one().replace(tzinfo=None)
            rows = session.execute(
                sa.select(trials.c.trial_id, trials.c.number, trials.c.datetime_start,
                          beats.c.heartbeat)
                .outerjoin(beats, beats.c.trial_id == trials.c.trial_id)
                .where(trials.c.study_id == self.study_id,
                       trials.c.state == TrialState.RUNNING)).all()
        here = _now()
        out = []
        for trial_id, number, start, beat in rows:
            if beat is not None:
                out.append((trial_id, number, (now - beat).total_seconds()))
            elif start is not None:
                out.append((trial_id, number, (here - start).total_seconds()))
        return out


@dataclass(frozen=True)
class _View:
    number: int
    state: TrialState
    metrics: dict[str, float] | None
    eval_seconds: float
    error: dict[str, Any] | None


class Heartbeat:
    """Records ``trial_id``'s heartbeat every ``interval`` seconds from a daemon thread
    while the block runs; a failed write (the database restarting) is skipped, the next
    one tried on time."""

    def __init__(self, queue: TrialQueue, trial_id: int, *,
                 interval: float = HEARTBEAT_SECONDS) -> None:
        self.queue = queue
        self.trial_id = trial_id
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                         name=f"heartbeat-{trial_id}")

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.queue.heartbeat(self.trial_id)
            except Exception as err:  # the next beat may reach the database again
                logger.debug("heartbeat of trial id %d failed: %s", self.trial_id, err)


def retried(action: Callable[[], T], what: str, *, seconds: float = RETRY_SECONDS) -> T:
    """``action()``, retried with backoff (0.1 s doubling to 5 s) while the database is
    unreachable, for up to ``seconds``; then its error is raised, saying what failed."""
    import sqlalchemy as sa

    deadline = time.monotonic() + seconds
    pause = 0.1
    while True:
        try:
            return action()
        except (optuna.exceptions.StorageInternalError, sa.exc.OperationalError,
                sa.exc.InterfaceError) as err:
            if time.monotonic() + pause > deadline:
                raise ConnectionError(f"{what}: the study database stayed unreachable for "
                                      f"{seconds:g} s ({type(err).__name__})") from err
            logger.info("%s: database unreachable (%s); retrying in %.1f s", what,
                        type(err).__name__, pause)
            time.sleep(pause)
            pause = min(2 * pause, 5.0)


def _set_attrs(session: Any, attrs: Any, trial_id: int, values: Mapping[str, Any]) -> None:
    import sqlalchemy as sa

    session.execute(sa.delete(attrs).where(attrs.c.trial_id == trial_id,
                                           attrs.c.key.in_(list(values))))
    session.execute(sa.insert(attrs), [
        {"trial_id": trial_id, "key": key, "value_json": json.dumps(_jsonable(value))}
        for key, value in values.items()])


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _now() -> datetime.datetime:
    """Trial times as nas writes them (:func:`nas.studies._bulk._naive_utc`)."""
    return _naive_utc(datetime.datetime.now())  # type: ignore[return-value]
