"""The study database: every evaluated subnet as an Optuna trial.

A study records what it was run against (supernet, checkpoint hash, space, hardware
target and its fingerprint, task, objectives, budgets, seed, algorithm) as study user
attributes, and each evaluated subnet as a finished trial whose params are the config's
active genes, whose values are the objectives and whose user attributes hold the config,
every metric, feasibility and the evaluation cache key. So a study can be resumed,
deduplicated, plotted with Optuna's own tools and exported later.

What must match when a study is reopened, and why:

* supernet, checkpoint hash, space (name and definition), task and evaluation limit:
  the stored accuracies are only valid for exactly these;
* hardware target and its fingerprint: latencies are target-specific;
* objectives: they fix the Optuna study's directions and the stored values;
* seed and algorithm: resume is replay (the algorithm asks again for the configs it
  asked before and the study serves them), which holds only for the same algorithm
  and seed;
* budgets: what "feasible" and "the front" mean for everything the study reports.

A failed trial without metrics is not an evaluated subnet: a worker of a shared study
died on it or its evaluation raised (:mod:`nas.studies._queue`); :meth:`Study.trials`,
``len()`` and lookups skip it, so its config is evaluated again. (A NaN objective is
stored as FAIL *with* its metrics: evaluated, never on a front.)

A study's settings are fixed when it is created; reopening with others is a one-line
:class:`StudyMismatchError` naming both values, and nothing is written. The one
exception is explicit: ``open_study(..., change_budget=True)`` (``nas search
--change-budget``) continues a study under a new budget, recomputes feasibility from
the stored metrics, and records the change with its time and trial count in the
study's ``nas.budget_changes`` attribute (:meth:`Study.budget_changes`).
"""

from __future__ import annotations

import datetime
import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from nas._problem import (
    Constraint,
    Objective,
    Problem,
    constraints_from_dicts,
    objectives_from_dicts,
)
from nas._space import Config, SearchSpace
from nas.studies._bulk import finished_count, read_finished, write_trials
from nas.studies._storage import open_storage, quiet_optuna, sqlite_path, storage_label

logger = logging.getLogger(__name__)

_FORMAT = 1
_META_ATTR = "nas.meta"
_SPACE_ATTR = "nas.space"
_FORMAT_ATTR = "nas.format"
_BUDGET_CHANGES_ATTR = "nas.budget_changes"
_FINISHED = (TrialState.COMPLETE, TrialState.FAIL)

REREAD_SECONDS = 1.0
"""How often a study re-reads its storage for trials other workers wrote, when asked
for its length or for a key it does not hold: reading is a query over every trial, so
doing it per evaluation made each evaluation cost more as the study grew."""

StorageLike = str | optuna.storages.BaseStorage


class StudyMismatchError(ValueError):
    """An existing study was run against another supernet, space, hardware target or task."""


class StudyNotFoundError(ValueError):
    """No study of that name in the storage; the message lists the ones there."""


@dataclass(frozen=True)
class StudyMeta:
    """What a study was run against; stored with the study, checked on every reopen.

    ``objectives`` and ``constraints`` are JSON-able dicts (``{"name", "direction"}``,
    ``{"metric", "upper"}``); :class:`~nas.Objective` and :class:`~nas.Constraint`
    instances are converted. ``task`` and ``eval_limit`` say how accuracy was measured.
    """

    supernet: str
    space: str
    checkpoint_hash: str
    hardware: str
    hardware_fingerprint: str
    objectives: tuple[dict[str, str], ...]
    constraints: tuple[dict[str, Any], ...] = ()
    seed: int | None = None
    algorithm: str = ""
    task: str = ""
    eval_limit: int | None = None
    quantize: str = "none"
    """The quantization mode of every subnet (``none``, ``int8`` or ``mixed``)."""
    accuracy_predictor: str = ""
    """Empty when accuracy was measured; else the predictor that gave it
    (``--accuracy-predictor``: ``ofa:PATH`` or a fitted predictor's folder)."""
    accuracy_predictor_sha256: str = ""
    """The sha256 of the predictor's files: a study never resumes with another one."""
    batch: int | None = None
    """Configs the algorithm asks at once where the search set it (an Optuna sampler
    asking one at a time is given one per worker); None: the algorithm's default. Asks
    depend on it, so a resumed study keeps it."""

    @property
    def predicted_accuracy(self) -> bool:
        """Whether accuracy came from a predictor rather than a validation set."""
        return bool(self.accuracy_predictor)

    def accuracy_note(self) -> str:
        """One line on where accuracy came from (reports and exports)."""
        if not self.predicted_accuracy:
            return ""
        return (f"accuracy was predicted by {self.accuracy_predictor} (sha256 "
                f"{self.accuracy_predictor_sha256[:12]}), not measured")

    def __post_init__(self) -> None:
        objectives = objectives_from_dicts(self.objectives)
        constraints = constraints_from_dicts(self.constraints)
        if not objectives:
            raise ValueError("StudyMeta.objectives must name at least one objective")
        object.__setattr__(self, "objectives", tuple(o.to_dict() for o in objectives))
        object.__setattr__(self, "constraints", tuple(c.to_dict() for c in constraints))

    @classmethod
    def for_problem(
        cls,
        problem: Problem,
        *,
        supernet: str,
        checkpoint_hash: str,
        hardware: str,
        hardware_fingerprint: str,
        seed: int | None,
        algorithm: str,
        task: str = "",
        eval_limit: int | None = None,
        quantize: str = "none",
        accuracy_predictor: str = "",
        accuracy_predictor_sha256: str = "",
        batch: int | None = None,
    ) -> StudyMeta:
        """The metadata of a search of ``problem`` (space, objectives and budgets from it)."""
        return cls(
            supernet=supernet,
            space=problem.space.name,
            checkpoint_hash=checkpoint_hash,
            hardware=hardware,
            hardware_fingerprint=hardware_fingerprint,
            objectives=problem.objectives_dicts(),
            constraints=problem.constraints_dicts(),
            seed=seed,
            algorithm=algorithm,
            task=task,
            eval_limit=eval_limit,
            quantize=quantize,
            accuracy_predictor=accuracy_predictor,
            accuracy_predictor_sha256=accuracy_predictor_sha256,
            batch=batch,
        )

    @property
    def directions(self) -> list[str]:
        return [o["direction"] for o in self.objectives]

    def objective_list(self) -> tuple[Objective, ...]:
        return objectives_from_dicts(self.objectives)

    def constraint_list(self) -> tuple[Constraint, ...]:
        return constraints_from_dicts(self.constraints)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["objectives"] = [dict(o) for o in self.objectives]
        data["constraints"] = [dict(c) for c in self.constraints]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StudyMeta:
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in data.items() if k in known}
        values["objectives"] = tuple(values.get("objectives", ()))
        values["constraints"] = tuple(values.get("constraints", ()))
        return cls(**values)


@dataclass(frozen=True)
class TrialRecord:
    """One evaluated subnet of a study.

    ``feasible`` is recomputed from ``metrics`` against the study's current budgets
    (which may differ from those the trial was evaluated under).
    """

    number: int
    config: dict[str, Any]
    metrics: dict[str, float]
    feasible: bool
    cache_key: str = ""
    failed: bool = False


@dataclass(frozen=True)
class NewTrial:
    """An evaluated subnet to record with :meth:`Study.add_many` (the arguments of
    :meth:`Study.add`)."""

    config: Config | Mapping[str, Any]
    metrics: Mapping[str, float]
    feasible: bool
    cache_key: str
    eval_seconds: float | None = None
    finished: datetime.datetime | None = None
    """When the evaluation ended (local time; default: when it is written): the
    trial's completion time, its start ``eval_seconds`` before."""


@dataclass(frozen=True)
class StudySummary:
    """One line of :func:`list_studies`; the fields are None for non-nas Optuna studies."""

    name: str
    trials: int
    supernet: str | None
    space: str | None
    hardware: str | None
    constraints: tuple[dict[str, Any], ...] = field(default=())


class Study:
    """A study in an Optuna storage; build one with :func:`open_study` or :func:`load_study`.

    Thread safety: one Study object per thread; several processes (or machines, with a
    server database) may add trials to the same study at once.

    Attributes:
        name: the study name.
        storage: the storage URL.
        meta: what the study was run against.
        space: the search space (from the caller, or rebuilt from the stored definition).
    """

    def __init__(
        self,
        study: optuna.Study,
        *,
        storage: str,
        meta: StudyMeta,
        space: SearchSpace | None,
        backend: optuna.storages.BaseStorage | None = None,
    ) -> None:
        self._study = study
        self.name = study.study_name
        self.storage = storage
        self.meta = meta
        self.space = space
        self._backend = backend
        self._constraints = meta.constraint_list()
        self._objectives = meta.objective_list()
        self._records: dict[int, TrialRecord] = {}
        self._by_key: dict[str, TrialRecord] = {}
        # every finished trial read, evaluated or not (a FAIL without metrics: a worker
        # crashed or its evaluation raised), so that a refresh reads only new ones
        self._seen: set[int] = set()
        self._last_read = -math.inf
        self._study_id: int | None = None
        self._distributions: dict[str, optuna.distributions.BaseDistribution] | None = None
        # one distributions dict per set of active genes, shared by the trials that have
        # it: a dict per trial cost as much as the rest of the trial
        self._distribution_sets: dict[tuple[str, ...],
                                      dict[str, optuna.distributions.BaseDistribution]] = {}

    def __repr__(self) -> str:
        return f"Study({self.name!r}, {len(self)} trials, storage={self.storage!r})"

    @property
    def optuna_study(self) -> optuna.Study:
        """The underlying Optuna study (for Optuna's visualisation and analysis tools)."""
        return self._study

    def __len__(self) -> int:
        """The number of evaluated subnets (finished trials); other workers' trials are
        counted once :data:`REREAD_SECONDS` have passed since the last read."""
        self._refresh()
        return len(self._records)

    # -- reading -------------------------------------------------------------------------

    def trials(self) -> list[TrialRecord]:
        """Every evaluated subnet, in trial order (read from the storage now)."""
        self._refresh(now=True)
        return [self._records[n] for n in sorted(self._records)]

    def lookup(self, cache_key: str) -> TrialRecord | None:
        """The trial evaluated under ``cache_key``, if any. Trials this object wrote are
        seen at once, other workers' ones within :data:`REREAD_SECONDS`."""
        record = self._by_key.get(cache_key)
        if record is None and self._refresh():
            record = self._by_key.get(cache_key)
        return record

    def budget_changes(self) -> list[dict[str, Any]]:
        """Every budget change made with ``change_budget=True``, oldest first:
        ``{"at": ISO time, "trials": count then, "from": [...], "to": [...]}``."""
        return list(self._study.user_attrs.get(_BUDGET_CHANGES_ATTR, []))

    def trial_state(self, number: int) -> str | None:
        """The state of trial ``number`` in any state (``"COMPLETE"``, ``"RUNNING"``,
        ``"PRUNED"``, ...), or None where the study has no such trial; for messages
        about trials that :meth:`trials` does not list."""
        for trial in self._study.get_trials(deepcopy=False):
            if trial.number == number:
                return trial.state.name
        return None

    def attach_space(self, space: SearchSpace) -> None:
        """Give the study its search space (needed to add trials); a study without a
        stored definition records this one.

        Raises:
            ValueError: the space's name is not the study's.
            StudyMismatchError: the study stores another definition of that space.
        """
        if space.name != self.meta.space:
            raise ValueError(f"study {self.name!r} searches space {self.meta.space!r}, "
                             f"not {space.name!r}")
        _check_space(self.name, self._study, space)
        if _SPACE_ATTR not in self._study.user_attrs:
            self._study.set_user_attr(_SPACE_ATTR, space.to_spec())
        self.space = space

    def problem(self) -> Problem:
        """The problem as stored (objectives and the current budgets) over :attr:`space`."""
        if self.space is None:
            raise ValueError(f"study {self.name!r} has no stored search space definition")
        return Problem(self.space, self.meta.objective_list(), self._constraints)

    # -- writing -------------------------------------------------------------------------

    def add(
        self,
        config: Config | Mapping[str, Any],
        metrics: Mapping[str, float],
        *,
        feasible: bool,
        cache_key: str,
        eval_seconds: float | None = None,
    ) -> int:
        """Record one evaluated subnet at once (committed before returning).

        A trial whose objective values are not all numbers (NaN) is stored as FAIL: it
        counts as evaluated (it will not be retried) but never enters a Pareto front.

        Returns:
            The trial number.

        Raises:
            ValueError: the study has no space, the config is not in it, or an objective
                metric is missing.
        """
        return self.add_many([NewTrial(config, metrics, feasible=feasible, cache_key=cache_key,
                                       eval_seconds=eval_seconds)])[0]

    def add_many(self, trials: Sequence[NewTrial]) -> list[int]:
        """Record evaluated subnets in one write (one transaction on a database), in
        order; as :meth:`add` for each, but all or none are committed.

        Returns:
            Their trial numbers.

        Raises:
            ValueError: as :meth:`add`, for any of them; nothing is written then.
        """
        frozen = [self._frozen(trial) for trial in trials]
        storage = self._writer_storage()
        numbers = write_trials(storage, self._id(storage), frozen)
        self._remember(
            self._record(number, trial.state == TrialState.FAIL, trial.user_attrs, None)
            for number, trial in zip(numbers, frozen, strict=True)
        )
        return numbers

    # -- internals -----------------------------------------------------------------------

    def _frozen(self, new: NewTrial) -> optuna.trial.FrozenTrial:
        """An Optuna trial for ``new``, validated against the space and objectives."""
        if self.space is None:
            raise ValueError(f"study {self.name!r} has no search space; pass space= to open it")
        if not new.cache_key:
            raise ValueError("cache_key must be a non-empty string")
        canonical = self.space.config(new.config)
        clean = {str(k): float(v) for k, v in new.metrics.items()}
        values = []
        for objective in self._objectives:
            if objective.name not in clean:
                raise ValueError(
                    f"metrics have no objective {objective.name!r}; got {sorted(clean)}"
                )
            values.append(clean[objective.name])
        if self._distributions is None:
            self._distributions = self.space.optuna_distributions()
        params = canonical.to_dict()
        user_attrs: dict[str, Any] = {
            "config": params,
            "metrics": {k: v if math.isfinite(v) else _json_float(v) for k, v in clean.items()},
            "feasible": bool(new.feasible),
            "cache_key": new.cache_key,
        }
        if new.eval_seconds is not None:
            user_attrs["eval_seconds"] = float(new.eval_seconds)
        failed = any(math.isnan(v) for v in values)
        finished = new.finished or datetime.datetime.now()
        started = finished - datetime.timedelta(seconds=new.eval_seconds or 0.0)
        # Built directly (the config was validated by the space): create_trial's checks
        # cost more than the write itself for a cheap evaluator.
        return optuna.trial.FrozenTrial(
            number=-1, trial_id=-1,
            state=TrialState.FAIL if failed else TrialState.COMPLETE,
            value=None, values=None if failed else values,
            datetime_start=started, datetime_complete=finished,
            params=params,
            distributions=self._distributions_of(tuple(params)),
            user_attrs=user_attrs, system_attrs={}, intermediate_values={},
        )

    def _distributions_of(self, names: tuple[str, ...]) -> dict[str, Any]:
        assert self._distributions is not None
        shared = self._distribution_sets.get(names)
        if shared is None:
            shared = {name: self._distributions[name] for name in names}
            self._distribution_sets[names] = shared
        return shared

    def _writer_storage(self) -> optuna.storages.BaseStorage:
        # The storage itself rather than Optuna's caching wrapper around it, which
        # re-reads what is written below it.
        return self._backend if self._backend is not None else self._study._storage

    def _refresh(self, *, now: bool = False) -> bool:
        """Read other workers' new trials; at most every :data:`REREAD_SECONDS` unless
        ``now``. True when a read happened."""
        clock = time.monotonic()
        if not now and clock - self._last_read < REREAD_SECONDS:
            return False
        self._last_read = clock
        storage = self._writer_storage()
        count = finished_count(storage, self._id(storage))
        if count is None:  # no fast path: through Optuna
            trials = self._study.get_trials(deepcopy=False, states=_FINISHED)
            if len(trials) != len(self._seen):
                self._remember(
                    self._record(t.number, t.state == TrialState.FAIL, t.user_attrs, t.params)
                    for t in trials if t.number not in self._seen
                )
        elif count != len(self._seen):  # trials are never removed, so something is new
            self._remember(
                self._record(number, failed, attrs, None)
                for number, failed, attrs in read_finished(storage, self._id(storage),
                                                           self._seen)
            )
        return True

    def _remember(self, records: Iterable[TrialRecord | None]) -> None:
        for record in records:
            if record is None:  # read, but not an evaluated subnet
                continue
            self._records[record.number] = record
            self._by_key.setdefault(record.cache_key, record)

    def _id(self, storage: optuna.storages.BaseStorage) -> int:
        if self._study_id is None:
            self._study_id = storage.get_study_id_from_name(self.name)
        return self._study_id

    def _record(self, number: int, failed: bool, attrs: Mapping[str, Any],
                params: Mapping[str, Any] | None) -> TrialRecord | None:
        """The evaluated subnet of a finished trial; None for a FAIL trial without
        metrics (a worker died on it or its evaluation raised: nothing was measured)."""
        self._seen.add(number)
        if failed and "metrics" not in attrs:
            return None
        metrics = {k: float(v) for k, v in dict(attrs.get("metrics", {})).items()}
        config = attrs.get("config", params)
        if config is None:  # a trial without the attribute: its params are the config
            storage = self._writer_storage()
            config = storage.get_trial(storage.get_trial_id_from_study_id_trial_number(
                self._id(storage), number)).params
        return TrialRecord(
            number=number,
            config=dict(config),
            metrics=metrics,
            feasible=(not failed) and self._feasible(metrics, bool(attrs.get("feasible", False))),
            cache_key=str(attrs.get("cache_key", "")),
            failed=failed,
        )

    def _feasible(self, metrics: Mapping[str, float], stored: bool) -> bool:
        if not all(c.metric in metrics for c in self._constraints):
            return stored
        return all(c.excess(metrics[c.metric]) <= 0.0 for c in self._constraints)


# -- opening, listing, deleting ---------------------------------------------------------


def open_study(
    name: str,
    storage: StorageLike,
    *,
    meta: StudyMeta,
    space: SearchSpace | None = None,
    create: bool = True,
    change_budget: bool = False,
) -> Study:
    """Open the study ``name`` for a search described by ``meta``, creating it if needed.

    Args:
        name: the study name.
        storage: an Optuna storage URL (``sqlite:///nas-studies.db``, ``postgresql://...``)
            or storage object.
        meta: what this search runs against; an existing study must match it (see the
            module docstring).
        space: the search space; needed to add trials, and stored with a new study so
            that the study can later be read without the supernet.
        create: create the study when missing (else raise :class:`StudyNotFoundError`).
        change_budget: continue an existing study under ``meta``'s budgets although
            they differ from its own, recording the change.

    Raises:
        StudyMismatchError: the study exists but belongs to another supernet, checkpoint,
            space, hardware target, task, objectives, seed, algorithm or (without
            ``change_budget``) budget; nothing is changed.
        StudyNotFoundError: ``create`` is False and there is no such study.
        ValueError: a bad name, storage URL, or a space whose name differs from ``meta``.
    """
    _check_name(name)
    if space is not None and space.name != meta.space:
        raise ValueError(f"space is {space.name!r} but meta.space is {meta.space!r}")
    quiet_optuna()
    if not create:
        _require_file(name, storage)
    backend = open_storage(storage)
    label = storage_label(storage)
    names = optuna.get_all_study_names(backend)
    if name in names:
        study = optuna.load_study(study_name=name, storage=backend)
        stored = _stored_meta(study)
        if stored is None:
            _adopt_or_refuse(study, meta)
        else:
            _check_compatible(name, stored, meta)
            _check_settings(name, stored, meta, change_budget=change_budget)
            _check_space(name, study, space)
            if space is not None and _SPACE_ATTR not in study.user_attrs:
                study.set_user_attr(_SPACE_ATTR, space.to_spec())
            if space is None:
                space = _stored_space(study)
            if stored.constraints != meta.constraints:
                _record_budget_change(study, stored, meta)
            return Study(study, storage=label, meta=meta, space=space, backend=backend)
    elif not create:
        raise StudyNotFoundError(_not_found(name, label, names))
    else:
        study = optuna.create_study(
            study_name=name, storage=backend, directions=meta.directions, load_if_exists=True
        )
    study.set_user_attr(_FORMAT_ATTR, _FORMAT)
    if space is not None:
        study.set_user_attr(_SPACE_ATTR, space.to_spec())
    study.set_user_attr(_META_ATTR, meta.to_dict())
    return Study(study, storage=label, meta=meta, space=space, backend=backend)


def load_study(name: str, storage: StorageLike) -> Study:
    """The existing study ``name``, with its stored metadata and space.

    Raises:
        StudyNotFoundError: no such study (the message lists the studies there).
        ValueError: the study was not created by this platform.
    """
    backend = existing_study_storage(name, storage)
    label = storage_label(storage)
    study = optuna.load_study(study_name=name, storage=backend)
    meta = _stored_meta(study)
    if meta is None:
        raise ValueError(f"study {name!r} in {label!r} was not created by nas (no metadata)")
    return Study(study, storage=label, meta=meta, space=_stored_space(study),
                 backend=backend)


def stored_meta(name: str, storage: StorageLike) -> StudyMeta | None:
    """The settings study ``name`` was created with, or None where there is no such
    study (nothing is created, not even an empty database file)."""
    _check_name(name)
    path = sqlite_path(storage) if isinstance(storage, str) else None
    if path is not None and not path.exists():
        return None
    quiet_optuna()
    backend = open_storage(storage)
    if name not in optuna.get_all_study_names(backend):
        return None
    return _stored_meta(optuna.load_study(study_name=name, storage=backend))


def list_studies(storage: StorageLike) -> list[StudySummary]:
    """The studies in ``storage``, by name (an SQLite file that does not exist has none)."""
    path = sqlite_path(storage) if isinstance(storage, str) else None
    if path is not None and not path.exists():
        return []
    quiet_optuna()
    backend = open_storage(storage)
    summaries = []
    for summary in optuna.get_all_study_summaries(backend, include_best_trial=False):
        raw = summary.user_attrs.get(_META_ATTR)
        meta = StudyMeta.from_dict(raw) if isinstance(raw, dict) else None
        summaries.append(
            StudySummary(
                name=summary.study_name,
                trials=summary.n_trials,
                supernet=meta.supernet if meta else None,
                space=meta.space if meta else None,
                hardware=meta.hardware if meta else None,
                constraints=meta.constraints if meta else (),
            )
        )
    return sorted(summaries, key=lambda s: s.name)


def delete_study(name: str, storage: StorageLike) -> None:
    """Delete the study ``name`` and all its trials.

    Raises:
        StudyNotFoundError: no such study.
    """
    optuna.delete_study(study_name=name, storage=existing_study_storage(name, storage))


def existing_study_storage(name: str, storage: StorageLike) -> optuna.storages.BaseStorage:
    """The opened storage holding study ``name``, checked to hold it (nothing is created,
    not even an empty database file).

    Raises:
        StudyNotFoundError: no such study (the message lists the studies there).
        ValueError: a bad name or storage URL.
    """
    _check_name(name)
    quiet_optuna()
    _require_file(name, storage)
    backend = open_storage(storage)
    names = optuna.get_all_study_names(backend)
    if name not in names:
        raise StudyNotFoundError(_not_found(name, storage_label(storage), names))
    return backend


# -- helpers ------------------------------------------------------------------------------


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"study name must be a non-empty string, got {name!r}")


def _require_file(name: str, storage: StorageLike) -> None:
    """Reading a study must not create an empty database file as a side effect."""
    path = sqlite_path(storage) if isinstance(storage, str) else None
    if path is not None and not path.exists():
        raise StudyNotFoundError(
            f"no study {name!r}: the study database '{path}' does not exist"
        )


def _not_found(name: str, label: str, names: Sequence[str]) -> str:
    there = ", ".join(sorted(names)) if names else "none"
    return f"no study {name!r} in {label!r}; studies there: {there}"


def _stored_meta(study: optuna.Study) -> StudyMeta | None:
    raw = study.user_attrs.get(_META_ATTR)
    return StudyMeta.from_dict(raw) if isinstance(raw, dict) else None


def _stored_space(study: optuna.Study) -> SearchSpace | None:
    spec = study.user_attrs.get(_SPACE_ATTR)
    return SearchSpace.from_spec(spec) if isinstance(spec, dict) else None


def _check_space(name: str, study: optuna.Study, space: SearchSpace | None) -> None:
    spec = study.user_attrs.get(_SPACE_ATTR)
    if space is not None and isinstance(spec, dict) and spec != _jsonish(space.to_spec()):
        raise StudyMismatchError(
            f"study {name!r} was run on another definition of space {space.name!r} "
            f"(its genes or choices differ)"
        )


def _adopt_or_refuse(study: optuna.Study, meta: StudyMeta) -> None:
    """An Optuna study without our metadata: adopt it only if it is empty and its
    directions match (a crash between creating a study and labelling it)."""
    directions = [d.name.lower() for d in study.directions]
    if study.trials or directions != meta.directions:
        raise StudyMismatchError(
            f"study {study.study_name!r} exists but was not created by nas; "
            f"choose another study name"
        )


def _check_compatible(name: str, stored: StudyMeta, wanted: StudyMeta) -> None:
    if (stored.supernet, stored.checkpoint_hash) != (wanted.supernet, wanted.checkpoint_hash):
        raise StudyMismatchError(
            f"study {name!r} belongs to supernet {stored.supernet!r} "
            f"(checkpoint {_short(stored.checkpoint_hash)}), not {wanted.supernet!r} "
            f"(checkpoint {_short(wanted.checkpoint_hash)})"
        )
    if stored.accuracy_predictor_sha256 != wanted.accuracy_predictor_sha256:
        raise StudyMismatchError(
            f"study {name!r} scored accuracy with "
            f"{_predictor_text(stored)}, not {_predictor_text(wanted)}: resume it with the "
            f"same --accuracy-predictor file, or choose another --study"
        )
    if stored.quantize != wanted.quantize:
        raise StudyMismatchError(
            f"study {name!r} searched subnets with --quantize {stored.quantize}, not "
            f"--quantize {wanted.quantize}: resume it with --quantize {stored.quantize}, or "
            f"choose another --study"
        )
    if stored.space != wanted.space:
        raise StudyMismatchError(
            f"study {name!r} searches space {stored.space!r}, not {wanted.space!r}"
        )
    if (stored.hardware, stored.hardware_fingerprint) != (
        wanted.hardware, wanted.hardware_fingerprint
    ):
        raise StudyMismatchError(
            f"study {name!r} measured latency on hardware target {stored.hardware!r} "
            f"(fingerprint {_short(stored.hardware_fingerprint)}), not {wanted.hardware!r} "
            f"(fingerprint {_short(wanted.hardware_fingerprint)})"
        )
    if (stored.task, stored.eval_limit) != (wanted.task, wanted.eval_limit):
        raise StudyMismatchError(
            f"study {name!r} scored subnets on task {stored.task!r} with eval limit "
            f"{stored.eval_limit}, not task {wanted.task!r} with eval limit {wanted.eval_limit}"
        )
    if stored.objectives != wanted.objectives:
        raise StudyMismatchError(
            f"study {name!r} optimises {_objectives_text(stored)}, "
            f"not {_objectives_text(wanted)}"
        )


def _predictor_text(meta: StudyMeta) -> str:
    if not meta.predicted_accuracy:
        return "its task's validation set (no accuracy predictor)"
    return (f"accuracy predictor {meta.accuracy_predictor} "
            f"(sha256 {meta.accuracy_predictor_sha256[:12]})")


def _check_settings(name: str, stored: StudyMeta, wanted: StudyMeta, *,
                    change_budget: bool) -> None:
    """Seed, algorithm and budgets are the study's own (module docstring)."""
    for field_name, option in (("seed", "--seed"), ("algorithm", "--algorithm")):
        old, new = getattr(stored, field_name), getattr(wanted, field_name)
        if old != new:
            raise StudyMismatchError(
                f"study {name!r} was created with {field_name} {old!r}, this run asks for "
                f"{new!r}: resume it with {option} {old} (or leave {option} out), or "
                f"choose another --study"
            )
    if stored.batch != wanted.batch:
        raise StudyMismatchError(
            f"study {name!r} asks its algorithm for {stored.batch or 'its default'} configs "
            f"at a time, this run for {wanted.batch or 'its default'}: the asks of a resumed "
            f"study must replay, so resume it as it was created, or choose another --study"
        )
    if stored.constraints != wanted.constraints and not change_budget:
        raise StudyMismatchError(
            f"study {name!r} was created with budget {constraints_text(stored.constraints)}, "
            f"this run asks for {constraints_text(wanted.constraints)}: resume it with its "
            f"budget, choose another --study, or pass --change-budget to continue it under "
            f"the new budget (the change is recorded in the study)"
        )


def _record_budget_change(study: optuna.Study, stored: StudyMeta, meta: StudyMeta) -> None:
    """Store the new budgets and append the change to the study's record of them."""
    changes = list(study.user_attrs.get(_BUDGET_CHANGES_ATTR, []))
    changes.append({
        "at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "trials": len(study.get_trials(deepcopy=False, states=_FINISHED)),
        "from": [dict(c) for c in stored.constraints],
        "to": [dict(c) for c in meta.constraints],
    })
    study.set_user_attr(_BUDGET_CHANGES_ATTR, changes)
    study.set_user_attr(_META_ATTR, meta.to_dict())
    logger.info("study %r: budget changed from %s to %s; feasibility is recomputed",
                study.study_name, constraints_text(stored.constraints),
                constraints_text(meta.constraints))


def constraints_text(constraints: Sequence[Mapping[str, Any]]) -> str:
    """Budgets for messages: ``latency_ms <= 50``, or ``none``."""
    parts = [f"{c['metric']} <= {c['upper']:g}" for c in constraints]
    return ", ".join(parts) or "none (the whole front)"


def _objectives_text(meta: StudyMeta) -> str:
    return ", ".join(f"{o['name']} ({o['direction']})" for o in meta.objectives)


def _short(text: str) -> str:
    return text[:12] if len(text) > 12 else text


def _json_float(value: float) -> float | str:
    """Optuna stores attributes as JSON; keep NaN and infinities readable everywhere."""
    return value if math.isfinite(value) else str(value)


def _jsonish(value: Any) -> Any:
    """What a value looks like after a JSON round trip (tuples become lists)."""
    if isinstance(value, Mapping):
        return {k: _jsonish(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonish(v) for v in value]
    return value

