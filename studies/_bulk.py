"""Writing and reading many finished trials at once.

Optuna's public path, ``storage.create_new_trial(study_id, template)``, writes one trial
per call: the in-memory storage deep-copies the template (about 0.5 ms for a 36-gene
config) and an RDB storage runs one transaction per trial with a query per parameter
and attribute (SQLite: one ``fsync`` each). A search with a cheap evaluator (a predictor,
a lookup table) evaluates tens of thousands of subnets, and then the storage is the
search. :func:`write_trials` writes a batch in one step instead:

* ``RDBStorage`` (SQLite, PostgreSQL, MySQL): one transaction, with the rows Optuna's
  own path writes (``trials``, ``trial_values``, ``trial_params``,
  ``trial_user_attributes``), inserted by one statement per table. Trial numbers are
  given as Optuna gives them: the study row is locked, the trials are inserted, then
  numbered by how many trials of the study precede them, so workers writing to the
  same study never share a number.
* ``InMemoryStorage``: the trials are appended as they are (they are built for this
  write and never touched again by the caller, so the copy is not needed).
* any other storage: Optuna's public path, one trial at a time.

Reading is the mirror image: Optuna rebuilds every parameter's distribution from JSON
for every trial it reads (about 1 ms a trial), while a study needs only each finished
trial's number, state and user attributes (the config, metrics and cache key). On an
RDB storage :func:`finished_count` and :func:`read_finished` read just those, with one
query per table; elsewhere the study reads through Optuna.

The fast paths rely on Optuna's storage internals (the RDB schema, versioned by
Optuna's own migrations, and the in-memory storage's lists); they are checked where
used, and a storage whose internals differ falls back to the public path, saying so
once in the log. ``tests/test_bulk_writes.py`` checks that a batch written here reads
back, through Optuna's public API, exactly like the same trials written one by one.
"""

from __future__ import annotations

import datetime
import functools
import json
import logging
from collections.abc import Container, Sequence
from typing import Any

import optuna
from optuna.storages import BaseStorage, InMemoryStorage, RDBStorage
from optuna.trial import FrozenTrial, TrialState

logger = logging.getLogger(__name__)

_warned: set[str] = set()
_FINISHED = (TrialState.COMPLETE, TrialState.FAIL)


def write_trials(storage: BaseStorage, study_id: int, trials: Sequence[FrozenTrial]) -> list[int]:
    """Write finished ``trials`` to study ``study_id`` of ``storage``; their numbers.

    Args:
        storage: the storage (an ``RDBStorage`` or ``InMemoryStorage`` takes the fast
            path; Optuna's wrapper around an RDB storage should be unwrapped first).
        study_id: the study's id in ``storage``.
        trials: finished trials (COMPLETE or FAIL) built for this call; the in-memory
            storage keeps these very objects.

    Returns:
        The trial numbers the storage gave them, in order.
    """
    if not trials:
        return []
    if isinstance(storage, RDBStorage) and _rdb_supported():
        return _write_rdb(storage, study_id, trials)
    if isinstance(storage, InMemoryStorage) and _in_memory_supported(storage):
        return _write_in_memory(storage, study_id, trials)
    return [_write_one(storage, study_id, trial) for trial in trials]


def _write_one(storage: BaseStorage, study_id: int, trial: FrozenTrial) -> int:
    trial_id = storage.create_new_trial(study_id, template_trial=trial)
    return storage.get_trial_number_from_id(trial_id)


def finished_count(storage: BaseStorage, study_id: int) -> int | None:
    """The number of finished (COMPLETE or FAIL) trials of the study, or None where
    the storage has no fast read path (read through Optuna then)."""
    if not (isinstance(storage, RDBStorage) and _rdb_supported()):
        return None
    import sqlalchemy as sa
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    trials = models.TrialModel.__table__
    with _create_scoped_session(storage.scoped_session) as session:
        return session.execute(
            sa.select(sa.func.count()).select_from(trials).where(
                trials.c.study_id == study_id, trials.c.state.in_(_FINISHED))
        ).scalar_one()


def read_finished(storage: RDBStorage, study_id: int,
                  known: Container[int]) -> list[tuple[int, bool, dict[str, Any]]]:
    """``(number, failed, user attributes)`` of the finished trials of the study whose
    numbers are not in ``known``, by number (only where :func:`finished_count` is not
    None)."""
    import sqlalchemy as sa
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    trials = models.TrialModel.__table__
    attrs = models.TrialUserAttributeModel.__table__
    with _create_scoped_session(storage.scoped_session) as session:
        rows = session.execute(
            sa.select(trials.c.trial_id, trials.c.number, trials.c.state).where(
                trials.c.study_id == study_id, trials.c.state.in_(_FINISHED))
        ).all()
        wanted = {tid: (number, state == TrialState.FAIL)
                  for tid, number, state in rows if number not in known}
        found: dict[int, dict[str, Any]] = {tid: {} for tid in wanted}
        if wanted:  # new trials are the latest: read from the first one on, not all
            query = sa.select(attrs.c.trial_id, attrs.c.key, attrs.c.value_json).join(
                trials, trials.c.trial_id == attrs.c.trial_id).where(
                trials.c.study_id == study_id, attrs.c.trial_id >= min(wanted))
            for tid, key, text in session.execute(query):
                if tid in found:
                    found[tid][key] = json.loads(text)
    return sorted((number, failed, found[tid]) for tid, (number, failed) in wanted.items())


# -- in memory ----------------------------------------------------------------------------


def _in_memory_supported(storage: InMemoryStorage) -> bool:
    needed = ("_lock", "_studies", "_max_trial_id", "_trial_id_to_study_id_and_number",
              "_update_cache")
    return _supported("in-memory", all(hasattr(storage, name) for name in needed))


def _write_in_memory(storage: InMemoryStorage, study_id: int,
                     trials: Sequence[FrozenTrial]) -> list[int]:
    numbers = []
    with storage._lock:
        study = storage._studies.get(study_id)
        if study is None:
            raise KeyError(f"no study with id {study_id}")
        for trial in trials:  # what create_new_trial does, less the deep copy
            storage._max_trial_id += 1
            trial_id = storage._max_trial_id
            trial.number = len(study.trials)
            trial._trial_id = trial_id
            storage._trial_id_to_study_id_and_number[trial_id] = (study_id, trial.number)
            study.trials.append(trial)
            storage._update_cache(trial_id, study_id)
            numbers.append(trial.number)
    return numbers


# -- relational databases -----------------------------------------------------------------


@functools.cache
def _rdb_supported() -> bool:
    try:
        from optuna.storages._rdb import models
    except ImportError:  # pragma: no cover - a future Optuna without this module
        return _supported("RDB", False)
    tables = {
        models.TrialModel: {"trial_id", "number", "study_id", "state", "datetime_start",
                            "datetime_complete"},
        models.TrialValueModel: {"trial_id", "objective", "value", "value_type"},
        models.TrialParamModel: {"trial_id", "param_name", "param_value", "distribution_json"},
        models.TrialUserAttributeModel: {"trial_id", "key", "value_json"},
    }
    ok = all(columns <= set(model.__table__.columns.keys())
             for model, columns in tables.items())
    return _supported("RDB", ok)


def _write_rdb(storage: RDBStorage, study_id: int, trials: Sequence[FrozenTrial]) -> list[int]:
    import sqlalchemy as sa
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    if any(t.system_attrs or t.intermediate_values for t in trials):
        raise ValueError("bulk writes take finished trials without system attributes or "
                         "intermediate values")
    trial_table = models.TrialModel.__table__
    with _create_scoped_session(storage.scoped_session) as session:
        # The lock Optuna takes to number trials (a no-op on SQLite, whose writers are
        # serialised by the database lock the first insert takes).
        models.StudyModel.find_or_raise_by_id(study_id, session, for_update=True)
        rows = [{"number": None, "study_id": study_id, "state": t.state,
                 "datetime_start": _naive_utc(t.datetime_start),
                 "datetime_complete": _naive_utc(t.datetime_complete)} for t in trials]
        inserted = session.execute(
            sa.insert(trial_table).returning(trial_table.c.trial_id,
                                             sort_by_parameter_order=True),
            rows,
        )
        ids = [row[0] for row in inserted]
        first = min(ids)
        before = session.execute(
            sa.select(sa.func.count()).select_from(trial_table).where(
                trial_table.c.study_id == study_id, trial_table.c.trial_id < first)
        ).scalar_one()
        numbers = [before + i for i in range(len(ids))]
        session.execute(
            sa.update(trial_table).where(trial_table.c.trial_id == sa.bindparam("tid"))
            .values(number=sa.bindparam("num")),
            [{"tid": tid, "num": num} for tid, num in zip(ids, numbers)],
        )
        _insert_children(session, models, ids, trials)
    return numbers


def _insert_children(session, models, ids: list[int], trials: Sequence[FrozenTrial]) -> None:
    import sqlalchemy as sa

    values, params, attrs = [], [], []
    distribution_json: dict[int, str] = {}  # one JSON text per distribution object
    for trial_id, trial in zip(ids, trials):
        for objective, value in enumerate(trial.values or ()):
            stored, kind = models.TrialValueModel.value_to_stored_repr(value)
            values.append({"trial_id": trial_id, "objective": objective, "value": stored,
                           "value_type": kind})
        for name, value in trial.params.items():
            distribution = trial.distributions[name]
            text = distribution_json.get(id(distribution))
            if text is None:
                text = optuna.distributions.distribution_to_json(distribution)
                distribution_json[id(distribution)] = text
            params.append({"trial_id": trial_id, "param_name": name,
                           "param_value": distribution.to_internal_repr(value),
                           "distribution_json": text})
        for key, value in trial.user_attrs.items():
            attrs.append({"trial_id": trial_id, "key": key, "value_json": json.dumps(value)})
    for model, rows in ((models.TrialValueModel, values), (models.TrialParamModel, params),
                        (models.TrialUserAttributeModel, attrs)):
        if rows:
            session.execute(sa.insert(model.__table__), rows)


def _naive_utc(moment: datetime.datetime | None) -> datetime.datetime | None:
    """How Optuna's RDB schema stores a time: naive UTC (FrozenTrial times are local)."""
    if moment is None:
        return None
    return moment.astimezone(datetime.UTC).replace(tzinfo=None)


def _supported(kind: str, ok: bool) -> bool:
    if not ok and kind not in _warned:
        _warned.add(kind)
        logger.warning("this Optuna version's %s storage differs from what nas writes in "
                       "bulk; trials are written one at a time (slower)", kind)
    return ok
