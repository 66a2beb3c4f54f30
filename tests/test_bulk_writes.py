"""Bulk trial writes and reads (nas.studies._bulk): the same trials, faster.

Every check compares with Optuna's own one-trial-at-a-time path through Optuna's public
reading API, on a real SQLite file, a real PostgreSQL database (the ``postgres`` tests),
in memory and on a journal file (the fallback).
"""

from __future__ import annotations

import datetime
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import pytest
from optuna.storages import InMemoryStorage, JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from nas import Gene, SearchSpace
from nas._problem import Constraint, Objective, Problem
from nas.studies import NewTrial, StudyMeta, open_storage, open_study
from nas.studies import _study as study_module
from nas.studies._bulk import finished_count, read_finished, write_trials
from tests.pg_server import STORAGES

SPACE = SearchSpace("bulk", [Gene("w", (1, 2, 3)), Gene("act", ("relu", "gelu"))])
DISTRIBUTIONS = SPACE.optuna_distributions()
DIRECTIONS = [StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE]


def trial(i: int, *, failed: bool = False) -> FrozenTrial:
    params = {"w": (1, 2, 3)[i % 3], "act": ("relu", "gelu")[i % 2]}
    now = datetime.datetime(2026, 1, 2, 3, 4, 5) + datetime.timedelta(seconds=i)
    return FrozenTrial(
        number=-1, trial_id=-1, state=TrialState.FAIL if failed else TrialState.COMPLETE,
        value=None, values=None if failed else [0.5 + i / 100, float("inf") if i == 3 else i],
        datetime_start=now, datetime_complete=now, params=params,
        distributions={k: DISTRIBUTIONS[k] for k in params},
        user_attrs={"config": params, "metrics": {"accuracy": 0.5, "x": "nan"},
                    "cache_key": f"k{i}", "feasible": i % 2 == 0},
        system_attrs={}, intermediate_values={},
    )


def batch() -> list[FrozenTrial]:
    return [trial(i, failed=i == 4) for i in range(7)]


def summary(t: FrozenTrial) -> tuple:
    return (t.number, t.state, t.values, t.params, t.distributions, t.user_attrs,
            t.datetime_start, t.datetime_complete)


def make_storage(kind: str, tmp_path: Path, request: pytest.FixtureRequest):
    if kind in ("sqlite", "postgres"):
        return open_storage(rdb_url(kind, tmp_path, request))
    if kind == "memory":
        return InMemoryStorage()
    return JournalStorage(JournalFileBackend(str(tmp_path / "j.log")))


def rdb_url(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A new database: an SQLite file in ``tmp_path``, or a PostgreSQL database."""
    if kind == "postgres":
        return request.getfixturevalue("postgres_url")
    return f"sqlite:///{tmp_path / 'b.db'}"


@pytest.mark.parametrize("kind", [*STORAGES, "memory", "journal"])
def test_a_bulk_batch_reads_back_like_trials_written_one_by_one(
        tmp_path: Path, kind: str, request: pytest.FixtureRequest) -> None:
    storage = make_storage(kind, tmp_path, request)
    bulk_id = storage.create_new_study(DIRECTIONS, "bulk")
    one_id = storage.create_new_study(DIRECTIONS, "one")
    for t in batch():
        storage.create_new_trial(one_id, template_trial=t)
    # two writes, so the second batch is numbered after the first
    numbers = write_trials(storage, bulk_id, batch()[:3]) + write_trials(storage, bulk_id,
                                                                          batch()[3:])
    assert numbers == list(range(7))
    if kind in ("sqlite", "postgres"):  # read by a new connection, through Optuna's cache
        storage = optuna.storages.get_storage(storage.url)  # as users do
    bulk = storage.get_all_trials(bulk_id)
    one = storage.get_all_trials(one_id)
    assert [summary(t) for t in bulk] == [summary(t) for t in one]
    assert bulk[3].values[1] == math.inf and bulk[4].state == TrialState.FAIL


@pytest.mark.parametrize("kind", STORAGES)
def test_fast_reads_give_what_optuna_reads(tmp_path: Path, kind: str,
                                           request: pytest.FixtureRequest) -> None:
    storage = make_storage(kind, tmp_path, request)
    study_id = storage.create_new_study(DIRECTIONS, "s")
    write_trials(storage, study_id, batch())
    running = storage.create_new_trial(study_id)  # unfinished trials are not read
    assert storage.get_trial(running).state == TrialState.RUNNING
    assert finished_count(storage, study_id) == 7
    rows = read_finished(storage, study_id, known={0, 1})
    expected = [(t.number, t.state == TrialState.FAIL, t.user_attrs)
                for t in storage.get_all_trials(study_id, states=(TrialState.COMPLETE,
                                                                  TrialState.FAIL))
                if t.number not in (0, 1)]
    assert rows == expected
    assert finished_count(InMemoryStorage(), 0) is None  # read through Optuna there


_WORKER = """
import sys
sys.path.insert(0, {tests!r})
from test_bulk_writes import trial
from optuna.storages import RDBStorage
from nas.studies import open_storage
from nas.studies._bulk import write_trials

url = {url!r}
storage = (RDBStorage(url, engine_kwargs={{"connect_args": {{"timeout": 60}}}})
           if url.startswith("sqlite") else open_storage(url))
study_id = storage.get_study_id_from_name("shared")
for b in range(20):
    write_trials(storage, study_id, [trial({worker} * 1000 + b * 25 + i) for i in range(25)])
"""


@pytest.mark.slow
@pytest.mark.parametrize("kind", STORAGES)
def test_workers_writing_batches_to_one_study_never_share_a_number(
        tmp_path: Path, kind: str, request: pytest.FixtureRequest) -> None:
    url = rdb_url(kind, tmp_path, request)
    open_storage(url).create_new_study(DIRECTIONS, "shared")
    workers = [
        subprocess.Popen([sys.executable, "-c", textwrap.dedent(_WORKER.format(
            tests=str(Path(__file__).parent), url=url, worker=w))])
        for w in (1, 2)
    ]
    assert [w.wait(timeout=300) for w in workers] == [0, 0]
    trials = optuna.load_study(study_name="shared", storage=url).trials
    assert sorted(t.number for t in trials) == list(range(1000))
    for w in (1, 2):  # each worker's trials in the order it wrote them
        keys = [int(t.user_attrs["cache_key"][1:]) for t in trials
                if int(t.user_attrs["cache_key"][1:]) // 1000 == w]
        assert keys == sorted(keys) and len(keys) == 500


# -- the study on top ---------------------------------------------------------------------

PROBLEM = Problem(SPACE, [Objective("accuracy", "maximize"), Objective("latency_ms", "minimize")],
                  [Constraint("latency_ms", upper=5.0)])
META = StudyMeta.for_problem(PROBLEM, supernet="s", checkpoint_hash="c", hardware="h",
                             hardware_fingerprint="f", seed=0, algorithm="random")


def new(w: int, act: str = "relu", key: str | None = None) -> NewTrial:
    return NewTrial({"w": w, "act": act}, {"accuracy": w / 4, "latency_ms": float(w)},
                    feasible=True, cache_key=key or f"{w}{act}")


def test_add_many_writes_all_or_nothing(storage_url: str) -> None:
    study = open_study("s", storage_url, meta=META, space=SPACE)
    with pytest.raises(ValueError, match="must be one of"):
        study.add_many([new(1), new(7), new(2)])
    assert len(study) == 0 and study.trials() == []
    assert study.add_many([new(1), new(2, "gelu")]) == [0, 1]
    assert [t.cache_key for t in study.trials()] == ["1relu", "2gelu"]
    assert study.lookup("2gelu").metrics == {"accuracy": 0.5, "latency_ms": 2.0}


def test_another_workers_trials_are_read_at_most_once_per_interval(
        storage_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    url = storage_url
    mine = open_study("s", url, meta=META, space=SPACE)
    other = open_study("s", url, meta=META, space=SPACE)
    assert mine.lookup("nothing") is None  # a read
    other.add(new(3).config, new(3).metrics, feasible=True, cache_key="3relu")
    monkeypatch.setattr(study_module, "REREAD_SECONDS", 1e9)
    assert mine.lookup("3relu") is None and len(mine) == 0  # not read again yet
    assert [t.cache_key for t in mine.trials()] == ["3relu"]  # trials() always reads
    other.add(new(1).config, new(1).metrics, feasible=True, cache_key="1relu")
    monkeypatch.setattr(study_module, "REREAD_SECONDS", 0.0)
    assert mine.lookup("1relu").number == 1 and len(mine) == 2
