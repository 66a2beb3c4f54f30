"""`nas studies audit` (nas.studies.audit_study): trials by state, repeated configs and
stale running trials, on hand-made trials in SQLite and PostgreSQL."""

from __future__ import annotations

import datetime
import json
import math

import optuna
import pytest
from optuna.storages import InMemoryStorage, RDBStorage
from optuna.trial import FrozenTrial, TrialState

from nas import Gene, SearchSpace
from nas._problem import accuracy_latency_problem
from nas.studies import NewTrial, StudyMeta, audit_study, open_storage, open_study
from tests.cli_helpers import nas, one_line_error

SPACE = SearchSpace("toy", [Gene("w", (1, 2, 3, 4, 5))])
META = StudyMeta.for_problem(
    accuracy_latency_problem(SPACE, budget_ms=10.0), supernet="s", checkpoint_hash="c",
    hardware="h", hardware_fingerprint="f", seed=0, algorithm="random",
)
HOUR = datetime.timedelta(hours=1)


def new(w: int, accuracy: float = 0.5) -> NewTrial:
    return NewTrial({"w": w}, {"accuracy": accuracy, "latency_ms": float(w)}, feasible=True,
                    cache_key=f"k{w}")


def running(storage, study_id: int, *, started: datetime.datetime,
            params: dict | None = None) -> int:
    """A RUNNING trial as a worker leaves it (its config as params), started then."""
    params = params or {}
    distributions = SPACE.optuna_distributions()
    trial_id = storage.create_new_trial(study_id, template_trial=FrozenTrial(
        number=-1, trial_id=-1, state=TrialState.RUNNING, value=None, values=None,
        datetime_start=started, datetime_complete=None, params=params,
        distributions={k: distributions[k] for k in params}, user_attrs={},
        system_attrs={}, intermediate_values={}))
    return storage.get_trial_number_from_id(trial_id)


def rewind_heartbeat(storage: RDBStorage, trial_id: int, by: datetime.timedelta) -> None:
    """Move a trial's last heartbeat back (as if its worker had gone silent then)."""
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    with _create_scoped_session(storage.scoped_session) as session:
        beat = models.TrialHeartbeatModel.where_trial_id(trial_id, session, for_update=True)
        beat.heartbeat = beat.heartbeat - by


def troubled(url: str) -> dict[str, int]:
    """A study with every kind of trial; returns the trial numbers by what they are."""
    study = open_study("s", url, meta=META, space=SPACE)
    study.add_many([new(1), new(2), new(1, 0.6), new(3, math.nan), new(3)])  # 0-4
    storage = open_storage(url)
    study_id = storage.get_study_id_from_name("s")
    now = datetime.datetime.now()
    numbers = {"stale_start": running(storage, study_id, started=now - HOUR,
                                      params={"w": 4})}
    numbers["fresh"] = running(storage, study_id, started=now)
    alive = running(storage, study_id, started=now - HOUR)  # old, but beats
    storage.record_heartbeat(storage.get_trial_id_from_study_id_trial_number(study_id, alive))
    numbers["alive"] = alive
    silent = running(storage, study_id, started=now)
    silent_id = storage.get_trial_id_from_study_id_trial_number(study_id, silent)
    storage.record_heartbeat(silent_id)
    rewind_heartbeat(storage, silent_id, HOUR)
    numbers["stale_heartbeat"] = silent
    optuna_study = optuna.load_study(study_name="s", storage=storage)
    optuna_study.tell(optuna_study.ask(), state=TrialState.PRUNED)
    optuna_study.enqueue_trial({"w": 2})  # after the ask, which would take it
    numbers["waiting"] = optuna_study.trials[-1].number
    return numbers


def test_audit_finds_repeats_and_stale_trials(storage_url: str) -> None:
    numbers = troubled(storage_url)
    report = audit_study("s", storage_url, stale_after=300)
    assert report.counts == {"complete": 4, "failed": 1, "waiting": 1, "running": 4,
                             "pruned": 1}
    assert [(r.config, r.trials, r.complete) for r in report.repeated] == [
        ({"w": 1}, (0, 2), 2), ({"w": 2}, (1, numbers["waiting"]), 1), ({"w": 3}, (3, 4), 1)
    ]
    assert [c.config for c in report.completed_twice] == [{"w": 1}]
    assert [(s.number, s.since) for s in report.stale] == [
        (numbers["stale_start"], "start"), (numbers["stale_heartbeat"], "heartbeat")
    ]
    assert all(3500 < s.silent_seconds < 3700 for s in report.stale)
    assert not report.healthy
    assert report.summary() == (
        "unhealthy: study 's': 4 complete, 1 failed, 1 waiting, 4 running, 1 pruned; "
        "3 configs evaluated more than once, 1 of them completed twice or more (trials 0, "
        f"2); 2 stale running trials (silent for over 300 s: {numbers['stale_start']}, "
        f"{numbers['stale_heartbeat']}); 0 configs lost"
    )
    # with a longer threshold only the repeat is wrong
    lenient = audit_study("s", storage_url, stale_after=2 * 3600)
    assert lenient.stale == () and not lenient.healthy


def test_a_healthy_study_and_the_command(storage_url: str) -> None:
    study = open_study("s", storage_url, meta=META, space=SPACE)
    study.add_many([new(1), new(2), new(3, math.nan)])
    study.optuna_study.ask()  # a worker busy right now
    result = nas("studies", "audit", "s", "--storage", storage_url)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == (
        "healthy: study 's': 2 complete, 1 failed, 0 waiting, 1 running, 0 pruned; "
        "0 configs evaluated more than once, 0 of them completed twice or more; "
        "0 stale running trials (silent for over 300 s); 0 configs lost")
    study.add(new(2).config, new(2).metrics, feasible=True, cache_key="again")
    result = nas("studies", "audit", "s", "--storage", storage_url, "--json")
    assert result.exit_code == 1, result.output
    document = json.loads(result.output)
    assert document["healthy"] is False and document["completed_twice"] == 1
    assert document["repeated"] == [{"config": {"w": 2}, "trials": [1, 4], "complete": 2}]
    assert document["counts"]["complete"] == 3 and document["stale_after"] == 300


def test_any_optuna_storage_is_audited_through_optuna() -> None:
    storage = InMemoryStorage()
    optuna_study = optuna.create_study(study_name="mem", storage=storage)
    for w in (1, 1, 2):
        optuna_study.add_trial(optuna.trial.create_trial(
            params={"w": w}, distributions={"w": SPACE.optuna_distributions()["w"]},
            value=float(w)))
    optuna_study.enqueue_trial({"w": 2})
    running(storage, 0, started=datetime.datetime.now() - HOUR)
    report = audit_study("mem", storage, stale_after=60)
    assert report.counts == {"complete": 3, "failed": 0, "waiting": 1, "running": 1,
                             "pruned": 0}
    assert [(r.config, r.trials, r.complete) for r in report.repeated] == [
        ({"w": 1}, (0, 1), 2), ({"w": 2}, (2, 3), 1)
    ]
    assert [(s.number, s.since) for s in report.stale] == [(4, "start")]


def test_bad_input_is_one_line(storage_url: str) -> None:
    open_study("present", storage_url, meta=META, space=SPACE)
    one_line_error(nas("studies", "audit", "nope", "--storage", storage_url),
                   "no study 'nope'", "studies there: present")
    one_line_error(nas("studies", "audit", "present", "--storage", storage_url,
                       "--stale-after", "0"), "--stale-after", "positive number of seconds")
    one_line_error(nas("studies", "audit", "present", "--storage", "not a url"),
                   "storage must be a database URL")
    with pytest.raises(ValueError, match="stale_after must be a positive number"):
        audit_study("present", storage_url, stale_after=math.inf)
