"""The study database: metadata checks, trials, listing, storage URL errors."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import shutil
import sqlite3
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from torch import nn

from nas import Condition, Config, Gene, SearchSpace, SubnetShape, Supernet
from nas._problem import accuracy_latency_problem
from nas.studies import (
    StudyMeta,
    StudyMismatchError,
    StudyNotFoundError,
    default_storage,
    delete_study,
    describe_study,
    export_pareto,
    export_trial,
    list_studies,
    load_study,
    open_study,
)
from nas.studies._storage import sqlite_path
from tests.pg_server import STORAGES

SPACE = SearchSpace(
    "toy",
    [
        Gene("depth", (1, 2)),
        Gene("width.0", (8, 16)),
        Gene("width.1", (8, 16), Condition("depth", 2)),
    ],
)
PROBLEM = accuracy_latency_problem(SPACE, budget_ms=10.0)
META = StudyMeta.for_problem(
    PROBLEM, supernet="hat", checkpoint_hash="abc123", hardware="rpi4",
    hardware_fingerprint="rpi4-v1", seed=0, algorithm="nsga2", task="g2p", eval_limit=None,
)


@pytest.fixture(scope="module")
def empty_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty Optuna database, made once: creating the schema takes most of a second."""
    path = tmp_path_factory.mktemp("template") / "empty.db"
    optuna.storages.RDBStorage(url(path)).engine.dispose()
    return path


@pytest.fixture
def db(tmp_path: Path, empty_db: Path) -> Path:
    path = tmp_path / "studies.db"
    shutil.copyfile(empty_db, path)
    return path


@pytest.fixture(params=STORAGES)
def store(request: pytest.FixtureRequest, db: Path) -> str:
    """A fresh study database: a copy of the empty SQLite file, then a new PostgreSQL
    database (the ``postgres`` tests)."""
    if request.param == "postgres":
        return request.getfixturevalue("postgres_url")
    return url(db)


def url(path: Path) -> str:
    return f"sqlite:///{path}"


def snapshot(store: str) -> str:
    """Everything in a study database: the SQLite file's bytes, or every row of every
    table of a server database."""
    path = sqlite_path(store)
    if path is not None:
        return digest(path)
    engine = sqlalchemy.create_engine(store, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as connection:
            tables = sorted(sqlalchemy.inspect(connection).get_table_names())
            rows = [sorted(map(repr, connection.execute(sqlalchemy.text(
                f'SELECT * FROM "{table}"')))) for table in tables]
    finally:
        engine.dispose()
    return hashlib.sha256(repr((tables, rows)).encode()).hexdigest()


def add(study, values: dict, accuracy: float, latency: float) -> int:
    config = SPACE.config(values)
    return study.add(config, {"accuracy": accuracy, "latency_ms": latency, "extra": 1.5},
                     feasible=latency <= 10.0, cache_key=f"key-{config.key}")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_add_trials_lookup_round_trip(store: str) -> None:
    study = open_study("hat-rpi4", store, meta=META, space=SPACE)
    n0 = add(study, {"depth": 1, "width.0": 8}, 0.5, 4.0)
    n1 = add(study, {"depth": 2, "width.0": 16, "width.1": 8}, 0.8, 12.0)
    assert (n0, n1) == (0, 1) and len(study) == 2
    records = study.trials()
    assert [r.number for r in records] == [0, 1]
    assert records[0].config == {"depth": 1, "width.0": 8}
    assert records[0].metrics == {"accuracy": 0.5, "latency_ms": 4.0, "extra": 1.5}
    assert [r.feasible for r in records] == [True, False]
    assert study.lookup(records[1].cache_key) == records[1]
    assert study.lookup("no-such-key") is None
    # Optuna sees params (active genes only, categorical), values and attributes
    frozen = study.optuna_study.trials[1]
    assert frozen.params == {"depth": 2, "width.0": 16, "width.1": 8}
    assert isinstance(frozen.distributions["width.1"], optuna.distributions.CategoricalDistribution)
    assert frozen.values == [0.8, 12.0]
    assert frozen.user_attrs["cache_key"] == records[1].cache_key
    assert [d.name for d in study.optuna_study.directions] == ["MAXIMIZE", "MINIMIZE"]
    # a fresh process sees the same
    again = load_study("hat-rpi4", store)
    assert again.trials() == records and again.meta == META
    assert again.space is not None and again.space.to_spec() == SPACE.to_spec()


def test_nan_objective_is_stored_as_failed(store: str) -> None:
    study = open_study("s", store, meta=META, space=SPACE)
    add(study, {"depth": 1, "width.0": 8}, math.nan, 4.0)
    (record,) = study.trials()
    assert record.failed and not record.feasible and math.isnan(record.metrics["accuracy"])
    assert study.optuna_study.trials[0].state == optuna.trial.TrialState.FAIL


def test_add_rejects_missing_objective_and_foreign_config(db: Path) -> None:
    study = open_study("s", url(db), meta=META, space=SPACE)
    with pytest.raises(ValueError, match="no objective 'latency_ms'"):
        study.add(SPACE.smallest(), {"accuracy": 0.5}, feasible=True, cache_key="k")
    with pytest.raises(ValueError, match="must be one of"):
        study.add({"depth": 3, "width.0": 8}, {"accuracy": 0.5, "latency_ms": 1.0},
                  feasible=True, cache_key="k")


def test_reopen_with_other_supernet_raises_and_touches_nothing(store: str) -> None:
    study = open_study("hat-rpi4", store, meta=META, space=SPACE)
    add(study, {"depth": 1, "width.0": 8}, 0.5, 4.0)
    before = snapshot(store)
    other = dataclasses.replace(META, supernet="ofa", checkpoint_hash="fff999")
    with pytest.raises(StudyMismatchError) as err:
        open_study("hat-rpi4", store, meta=other, space=SPACE)
    assert str(err.value) == (
        "study 'hat-rpi4' belongs to supernet 'hat' (checkpoint abc123), "
        "not 'ofa' (checkpoint fff999)"
    )
    assert "\n" not in str(err.value)
    new_checkpoint = dataclasses.replace(META, checkpoint_hash="abc124")
    with pytest.raises(StudyMismatchError, match="checkpoint abc123"):
        open_study("hat-rpi4", store, meta=new_checkpoint, space=SPACE)
    assert snapshot(store) == before
    assert load_study("hat-rpi4", store).meta == META


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"hardware": "xeon"}, "measured latency on hardware target 'rpi4'"),
        ({"hardware_fingerprint": "rpi4-v2"}, "fingerprint rpi4-v1"),
        ({"eval_limit": 100}, "eval limit None"),
        ({"objectives": ({"name": "accuracy", "direction": "maximize"},)}, "optimises accuracy"),
    ],
)
def test_reopen_requires_same_target_task_and_objectives(
    db: Path, change: dict, message: str
) -> None:
    open_study("s", url(db), meta=META, space=SPACE)
    with pytest.raises(StudyMismatchError, match=message):
        open_study("s", url(db), meta=dataclasses.replace(META, **change))


def test_reopen_with_other_space_definition_raises(db: Path) -> None:
    open_study("s", url(db), meta=META, space=SPACE)
    changed = SearchSpace("toy", [Gene("depth", (1, 2, 3)), Gene("width.0", (8, 16))])
    with pytest.raises(StudyMismatchError, match="another definition of space 'toy'"):
        open_study("s", url(db), meta=META, space=changed)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"seed": 7}, "created with seed 0, this run asks for 7: resume it with --seed 0"),
        ({"algorithm": "random"}, "created with algorithm 'nsga2', this run asks for 'random'"),
        ({"constraints": ({"metric": "latency_ms", "upper": 5.0},)},
         "created with budget latency_ms <= 10, this run asks for latency_ms <= 5"),
    ],
)
def test_a_resumed_study_keeps_its_settings(store: str, change: dict, message: str) -> None:
    """Issue 14: resuming with another budget used to rewrite the stored one silently
    (and a seed or algorithm the replay depends on); now it is refused, unchanged."""
    study = open_study("s", store, meta=META, space=SPACE)
    add(study, {"depth": 1, "width.0": 8}, 0.5, 4.0)
    before = snapshot(store)
    with pytest.raises(StudyMismatchError, match=message) as err:
        open_study("s", store, meta=dataclasses.replace(META, **change))
    assert "\n" not in str(err.value)
    assert snapshot(store) == before
    assert load_study("s", store).meta == META


def test_change_budget_continues_under_the_new_budget_and_records_it(store: str) -> None:
    study = open_study("s", store, meta=META, space=SPACE)
    add(study, {"depth": 1, "width.0": 8}, 0.5, 4.0)
    add(study, {"depth": 1, "width.0": 16}, 0.6, 8.0)
    tighter = dataclasses.replace(META, constraints=({"metric": "latency_ms", "upper": 5.0},))
    reopened = open_study("s", store, meta=tighter, change_budget=True)
    assert [r.feasible for r in reopened.trials()] == [True, False]  # recomputed
    assert reopened.space is not None and reopened.space.name == "toy"
    assert load_study("s", store).meta == tighter
    assert reopened.problem().constraints[0].upper == 5.0
    (change,) = load_study("s", store).budget_changes()
    assert change["trials"] == 2 and change["at"]
    assert change["from"] == [{"metric": "latency_ms", "upper": 10.0}]
    assert change["to"] == [{"metric": "latency_ms", "upper": 5.0}]
    assert describe_study("s", store)["budget_changes"] == [change]


def test_reading_a_missing_database_never_creates_it(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    with pytest.raises(StudyNotFoundError, match="does not exist"):
        load_study("nope", url(missing))
    assert list_studies(url(missing)) == []
    with pytest.raises(StudyNotFoundError, match="does not exist"):
        open_study("nope", url(missing), meta=META, create=False)
    with pytest.raises(StudyNotFoundError, match="does not exist"):
        delete_study("nope", url(missing))
    assert not missing.exists()


def test_missing_study_and_listing(store: str) -> None:
    assert list_studies(store) == []
    with pytest.raises(StudyNotFoundError, match="studies there: none"):
        open_study("nope", store, meta=META, create=False)
    open_study("b-study", store, meta=META, space=SPACE)
    study = open_study("a-study", store, meta=META, space=SPACE)
    add(study, {"depth": 1, "width.0": 8}, 0.5, 4.0)
    with pytest.raises(StudyNotFoundError, match=r"'nope' in .*; studies there: a-study, b-st"):
        load_study("nope", store)
    summaries = list_studies(store)
    assert [(s.name, s.trials, s.supernet, s.hardware) for s in summaries] == [
        ("a-study", 1, "hat", "rpi4"), ("b-study", 0, "hat", "rpi4")
    ]
    delete_study("a-study", store)
    assert [s.name for s in list_studies(store)] == ["b-study"]
    with pytest.raises(StudyNotFoundError, match="studies there: b-study"):
        delete_study("a-study", store)


def test_foreign_optuna_studies(store: str) -> None:
    foreign = optuna.create_study(study_name="theirs", storage=store)
    foreign.add_trial(optuna.trial.create_trial(value=1.0, params={}, distributions={}))
    with pytest.raises(StudyMismatchError, match="not created by nas"):
        open_study("theirs", store, meta=META, space=SPACE)
    with pytest.raises(ValueError, match="not created by nas"):
        load_study("theirs", store)
    assert [(s.name, s.supernet) for s in list_studies(store)] == [("theirs", None)]
    # an empty, unlabelled study with the right directions (a crash right after creating
    # it) is adopted
    optuna.create_study(study_name="empty", storage=store, directions=["maximize", "minimize"])
    assert open_study("empty", store, meta=META, space=SPACE).meta == META


def test_storage_errors_are_one_line_value_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"directory '.*missing' does not exist"):
        open_study("s", url(tmp_path / "missing" / "x.db"), meta=META, space=SPACE)
    text = tmp_path / "notes.db"
    text.write_text("not a database")
    with pytest.raises(ValueError, match="is not an SQLite database"):
        open_study("s", url(text), meta=META, space=SPACE)
    assert text.read_text() == "not a database"
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE things (x)")
    before = digest(other)
    with pytest.raises(ValueError, match="another program"):
        open_study("s", url(other), meta=META, space=SPACE)
    assert digest(other) == before
    with pytest.raises(ValueError, match="storage must be a database URL"):
        open_study("s", "not a url", meta=META, space=SPACE)
    with pytest.raises(ValueError, match="study name must be a non-empty string"):
        open_study(" ", url(tmp_path / "x.db"), meta=META)
    with pytest.raises(ValueError) as err:
        open_study("s", url(text), meta=META)
    assert "\n" not in str(err.value)


def test_default_storage_honours_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NAS_STORAGE", raising=False)
    assert default_storage() == "sqlite:///nas-studies.db"
    monkeypatch.setenv("NAS_STORAGE", "postgresql://db/nas")
    assert default_storage() == "postgresql://db/nas"


def test_meta_round_trip_and_validation() -> None:
    assert StudyMeta.from_dict(META.to_dict()) == META
    with pytest.raises(ValueError, match="direction must be one of"):
        dataclasses.replace(META, objectives=({"name": "accuracy", "direction": "up"},))
    with pytest.raises(ValueError, match="at least one objective"):
        dataclasses.replace(META, objectives=())


def test_optuna_logging_is_quiet_only_after_use(db: Path) -> None:
    open_study("s", url(db), meta=META, space=SPACE)
    assert optuna.logging.get_verbosity() >= optuna.logging.WARNING


# -- reports and export --------------------------------------------------------------------


class TinyNet(nn.Linear):
    def __init__(self, width: int) -> None:
        super().__init__(2, width)
        self.width = width

    def subnet_config(self) -> dict:
        return {"width": self.width}


class TinySupernet(Supernet):
    family = "tiny"

    def __init__(self, checkpoint_hash: str = "abc123") -> None:
        super().__init__()
        self.space = SPACE
        self.checkpoint_hash = checkpoint_hash

    def _activate(self, config: Config) -> None:
        pass

    def _extract(self, config: Config) -> nn.Module:
        return TinyNet(config["width.0"])

    def _describe(self, config: Config) -> SubnetShape:
        return SubnetShape(family="tiny", layers=())

    def _architecture(self) -> dict:
        return {}


def _filled(store: str):
    study = open_study("s", store, meta=META, space=SPACE)
    add(study, {"depth": 1, "width.0": 8}, 0.5, 4.0)  # front
    add(study, {"depth": 1, "width.0": 16}, 0.7, 8.0)  # front
    add(study, {"depth": 2, "width.0": 8, "width.1": 8}, 0.4, 9.0)  # dominated
    add(study, {"depth": 2, "width.0": 16, "width.1": 16}, 0.9, 20.0)  # over budget
    return study


def test_describe_study(store: str) -> None:
    _filled(store)
    document = describe_study("s", store)
    assert json.loads(json.dumps(document)) == document
    assert document["trials"] == 4 and document["feasible"] == 3 and document["failed"] == 0
    assert [(p["trial"], p["accuracy"], p["latency_ms"]) for p in document["pareto"]] == [
        (0, 0.5, 4.0), (1, 0.7, 8.0)
    ]
    assert document["pareto"][0]["config"] == {"depth": 1, "width.0": 8}
    assert document["meta"]["hardware"] == "rpi4"
    # normalised: (0.5, 0.4) and (0.3, 0.8): 0.4 * 0.5 + 0.2 * 0.7
    assert document["hypervolume"] == pytest.approx(0.34)


def test_export_of_an_unfinished_trial_says_its_state(store: str, tmp_path: Path) -> None:
    """Issue 14: a RUNNING or PRUNED trial was reported as missing ("no trial 15")."""
    _filled(store)
    optuna_study = load_study("s", store).optuna_study
    running = optuna_study.ask()
    pruned = optuna_study.ask()
    optuna_study.tell(pruned, state=optuna.trial.TrialState.PRUNED)
    for trial, state in ((running.number, "RUNNING"), (pruned.number, "PRUNED")):
        with pytest.raises(ValueError, match=f"trial {trial} of study 's' is {state}: ") as err:
            export_trial("s", trial, tmp_path / "x", storage=store, supernet=TinySupernet())
        assert "finished trials 0 to 3" in str(err.value)
    assert not (tmp_path / "x").exists()


def test_export_trial_and_pareto(db: Path, tmp_path: Path) -> None:
    _filled(url(db))
    out = export_trial("s", 1, tmp_path / "one", storage=url(db), supernet=TinySupernet())
    config = json.loads((out / "config.json").read_text())
    assert config["family"] == "tiny" and config["subnet_config"] == {"width": 16}
    assert config["metadata"]["trial"] == 1 and config["metadata"]["metrics"]["accuracy"] == 0.7
    assert (out / "model.safetensors").is_file()
    with pytest.raises(FileExistsError):
        export_trial("s", 1, out, storage=url(db), supernet=TinySupernet())
    with pytest.raises(ValueError, match="has no trial 9 \\(it has finished trials 0 to 3\\)"):
        export_trial("s", 9, tmp_path / "x", storage=url(db), supernet=TinySupernet())
    with pytest.raises(StudyMismatchError, match="checkpoint abc123"):
        export_trial("s", 1, tmp_path / "y", storage=url(db), supernet=TinySupernet("other"))
    paths = export_pareto("s", tmp_path / "front", storage=url(db), supernet=TinySupernet())
    assert [p.name for p in paths] == ["trial-0", "trial-1"]
    index = json.loads((tmp_path / "front" / "pareto.json").read_text())
    assert [s["trial"] for s in index["subnets"]] == [0, 1]
