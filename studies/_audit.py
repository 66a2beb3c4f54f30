"""The health of a study that many workers write (``nas studies audit``).

When several processes or machines share a study, two things can go wrong silently:
a config is evaluated twice (two workers took it, or one was retried after a crash
that it survived), which wastes an evaluation, and a worker dies mid-evaluation,
leaving its trial RUNNING forever. :func:`audit_study` counts the trials by state and
finds both:

* **configs evaluated more than once**: trials with the same config, that is the
  ``config`` user attribute every nas trial carries (the canonical config; the cache
  key also hashes the evaluator, so it would miss a repeat across a budget change), else
  the trial's params, else the params it was enqueued with (Optuna's
  ``fixed_params``), as canonical JSON. A repeat after a failure is expected; two or
  more COMPLETE trials of one config are not.
* **stale running trials**: RUNNING trials with no sign of life for ``stale_after``
  seconds: the last heartbeat where Optuna's ``trial_heartbeats`` table has one
  (measured on the database's clock, as Optuna does), else the trial's start (on this
  machine's clock: workers' clocks should agree).

* **lost configs**: configs none of whose trials holds a result or is still waiting or
  running, because every one failed without metrics (its worker died and retries ran
  out, or its evaluation raised): a search asked for them and got nothing. (A FAIL
  trial with metrics, a NaN objective, is a result.)

A study is healthy when no stale trial, no config completed twice and no lost config is
found.
On an RDB storage the trials are read with one query per table rather than through
Optuna (which rebuilds every distribution: about 1 ms a trial).
"""

from __future__ import annotations

import datetime
import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import optuna
from optuna.storages import BaseStorage, RDBStorage
from optuna.trial import TrialState

from nas.studies._bulk import _rdb_supported
from nas.studies._storage import storage_label
from nas.studies._study import StorageLike, existing_study_storage

STALE_AFTER_S = 300.0
"""Default: a RUNNING trial silent for five minutes is taken as abandoned."""
_STATES = {TrialState.COMPLETE: "complete", TrialState.FAIL: "failed",
           TrialState.WAITING: "waiting", TrialState.RUNNING: "running",
           TrialState.PRUNED: "pruned"}
_SHOWN = 5  # trial numbers a summary line names before "..."


@dataclass(frozen=True)
class RepeatedConfig:
    """A config that more than one trial evaluated (or was given to evaluate)."""

    config: dict[str, Any]
    trials: tuple[int, ...]
    """Every trial with this config, by number."""
    complete: int
    """How many of them are COMPLETE."""


@dataclass(frozen=True)
class LostConfig:
    """A config whose every trial failed without a result, none waiting or running."""

    config: dict[str, Any]
    trials: tuple[int, ...]


@dataclass(frozen=True)
class StaleTrial:
    """A RUNNING trial with no sign of life for longer than the threshold."""

    number: int
    silent_seconds: float
    since: str
    """``heartbeat`` (its last heartbeat) or ``start`` (it has none)."""


@dataclass(frozen=True)
class StudyAudit:
    """What :func:`audit_study` found; :attr:`healthy` and :meth:`summary` judge it."""

    study: str
    storage: str
    counts: dict[str, int]
    """Trials by state: ``complete``, ``failed``, ``waiting``, ``running``, ``pruned``."""
    repeated: tuple[RepeatedConfig, ...]
    stale: tuple[StaleTrial, ...]
    stale_after: float
    lost: tuple[LostConfig, ...] = ()

    @property
    def completed_twice(self) -> tuple[RepeatedConfig, ...]:
        """The repeated configs with two or more COMPLETE trials."""
        return tuple(r for r in self.repeated if r.complete >= 2)

    @property
    def healthy(self) -> bool:
        """No stale running trial, no config completed twice, no lost config."""
        return not self.stale and not self.completed_twice and not self.lost

    def summary(self) -> str:
        """One line: the verdict, the counts and what was found."""
        counts = ", ".join(f"{n} {state}" for state, n in self.counts.items())
        twice = self.completed_twice
        repeated = (f"{_plural(len(self.repeated), 'config')} evaluated more than once, "
                    f"{len(twice)} of them completed twice or more"
                    + (f" (trials {_numbers(t for r in twice for t in r.trials)})"
                       if twice else ""))
        stale = (f"{_plural(len(self.stale), 'stale running trial')} (silent for over "
                 f"{self.stale_after:g} s"
                 + (f": {_numbers(s.number for s in self.stale)})" if self.stale else ")"))
        lost = (f"{_plural(len(self.lost), 'config')} lost"
                + (f" (trials {_numbers(t for c in self.lost for t in c.trials)})"
                   if self.lost else ""))
        verdict = "healthy" if self.healthy else "unhealthy"
        return f"{verdict}: study {self.study!r}: {counts}; {repeated}; {stale}; {lost}"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["healthy"] = self.healthy
        data["completed_twice"] = len(self.completed_twice)
        data["lost_configs"] = len(self.lost)
        return data


def audit_study(name: str, storage: StorageLike, *,
                stale_after: float = STALE_AFTER_S) -> StudyAudit:
    """Count the trials of study ``name`` by state and find repeated configs and stale
    running trials (the module docstring says how). Any Optuna study can be audited.

    Raises:
        StudyNotFoundError: no such study (the message lists the studies there).
        ValueError: ``stale_after`` is not a positive number of seconds, or the storage
            cannot be opened.
    """
    if (isinstance(stale_after, bool) or not isinstance(stale_after, int | float)
            or not math.isfinite(stale_after) or stale_after <= 0):
        raise ValueError(f"stale_after must be a positive number of seconds, got "
                         f"{stale_after!r}")
    backend = existing_study_storage(name, storage)
    label = storage_label(storage)
    study_id = backend.get_study_id_from_name(name)
    if isinstance(backend, RDBStorage) and _rdb_supported():
        trials, silent = _read_rdb(backend, study_id)
    else:
        trials, silent = _read_any(backend, study_id), {}
    return _judge(name, label, trials, silent, float(stale_after))


# A trial as the audit sees it: (number, state, start in UTC or None, config or None,
# whether it holds metrics).
_Row = tuple[int, TrialState, datetime.datetime | None, dict[str, Any] | None, bool]


def _judge(name: str, label: str, trials: list[_Row], silent: dict[int, float],
           stale_after: float) -> StudyAudit:
    counts = dict.fromkeys(_STATES.values(), 0)
    groups: dict[str, list[tuple[int, TrialState]]] = {}
    results: set[str] = set()  # configs with a result, or one on the way
    configs: dict[str, dict[str, Any]] = {}
    stale = []
    now = datetime.datetime.now(datetime.UTC)
    for number, state, start, config, measured in sorted(trials, key=lambda row: row[0]):
        counts[_STATES[state]] += 1
        if config is not None:
            key = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
            groups.setdefault(key, []).append((number, state))
            configs.setdefault(key, config)
            if state != TrialState.FAIL or measured:
                results.add(key)
        if state != TrialState.RUNNING:
            continue
        if number in silent:
            quiet, since = silent[number], "heartbeat"
        elif start is not None:
            quiet, since = (now - start).total_seconds(), "start"
        else:
            continue
        if quiet > stale_after:
            stale.append(StaleTrial(number, round(quiet, 1), since))
    repeated = tuple(
        RepeatedConfig(configs[key], tuple(n for n, _ in group),
                       sum(1 for _, s in group if s == TrialState.COMPLETE))
        for key, group in groups.items() if len(group) > 1
    )
    lost = tuple(LostConfig(configs[key], tuple(n for n, _ in group))
                 for key, group in groups.items() if key not in results
                 and all(s == TrialState.FAIL for _, s in group))
    return StudyAudit(name, label, counts, repeated, tuple(stale), stale_after, lost)


def _config_of(trial: optuna.trial.FrozenTrial) -> dict[str, Any] | None:
    config = trial.user_attrs.get("config")
    if isinstance(config, dict):
        return config
    if trial.params:
        return dict(trial.params)
    fixed = trial.system_attrs.get("fixed_params")
    return dict(fixed) if isinstance(fixed, dict) and fixed else None


def _utc(moment: datetime.datetime | None) -> datetime.datetime | None:
    """A FrozenTrial's time (naive local, or aware) in UTC."""
    return None if moment is None else moment.astimezone(datetime.UTC)


def _read_any(storage: BaseStorage, study_id: int) -> list[_Row]:
    return [(t.number, t.state, _utc(t.datetime_start), _config_of(t), "metrics" in t.user_attrs)
            for t in storage.get_all_trials(study_id, deepcopy=False)]


def _read_rdb(storage: RDBStorage, study_id: int) -> tuple[list[_Row], dict[int, float]]:
    """The trials (configs from the ``config`` attribute; the few trials without one are
    read through Optuna) and the seconds since each RUNNING trial's last heartbeat."""
    import sqlalchemy as sa
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    trials = models.TrialModel.__table__
    attrs = models.TrialUserAttributeModel.__table__
    beats = models.TrialHeartbeatModel.__table__
    with _create_scoped_session(storage.scoped_session) as session:
        rows = session.execute(
            sa.select(trials.c.trial_id, trials.c.number, trials.c.state,
                      trials.c.datetime_start).where(trials.c.study_id == study_id)
        ).all()
        found: dict[int, Any] = {
            tid: json.loads(text) for tid, text in session.execute(
                sa.select(attrs.c.trial_id, attrs.c.value_json)
                .join(trials, trials.c.trial_id == attrs.c.trial_id)
                .where(trials.c.study_id == study_id, attrs.c.key == "config"))
        }
        measured = set(session.execute(
            sa.select(attrs.c.trial_id).join(trials, trials.c.trial_id == attrs.c.trial_id)
            .where(trials.c.study_id == study_id, attrs.c.key == "metrics")).scalars())
        now = session.execute(sa.select(sa.func.now())).scalar_one().replace(tzinfo=None)
        heartbeats = session.execute(
            sa.select(trials.c.number, beats.c.heartbeat)
            .join(trials, trials.c.trial_id == beats.c.trial_id)
            .where(trials.c.study_id == study_id, trials.c.state == TrialState.RUNNING)
        ).all()
    silent = {number: (now - beat).total_seconds() for number, beat in heartbeats}
    out: list[_Row] = []
    for tid, number, state, start in rows:
        config = found.get(tid)
        if not isinstance(config, dict):
            config = _config_of(storage.get_trial(tid))
        out.append((number, state, None if start is None else
                    start.replace(tzinfo=datetime.UTC), config, tid in measured))
    return out, silent


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _numbers(numbers: Iterable[int]) -> str:
    shown = sorted(set(numbers))
    text = ", ".join(map(str, shown[:_SHOWN]))
    return text + (", ..." if len(shown) > _SHOWN else "")
