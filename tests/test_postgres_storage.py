"""PostgreSQL as a study storage (nas.studies._postgres): the driver, the bounded pool, a
server restart, concurrent first use, and one-line errors.

The tests that need a server use the ``postgres_url`` fixture (tests/pg_server.py); the
error tests run without one.
"""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest
import sqlalchemy as sa

from nas import Gene, SearchSpace
from nas._problem import accuracy_latency_problem
from nas.studies import (
    NewTrial,
    StudyMeta,
    _postgres,
    list_studies,
    load_study,
    open_storage,
    open_study,
)
from nas.studies._storage import storage_label
from tests import pg_server

SPACE = SearchSpace("toy", [Gene("w", (1, 2, 3, 4))])
META = StudyMeta.for_problem(
    accuracy_latency_problem(SPACE, budget_ms=10.0), supernet="s", checkpoint_hash="c",
    hardware="h", hardware_fingerprint="f", seed=0, algorithm="random",
)


def new(w: int) -> NewTrial:
    return NewTrial({"w": w}, {"accuracy": w / 4, "latency_ms": float(w)}, feasible=True,
                    cache_key=f"k{w}")


def plain(url: str) -> str:
    """``url`` as users write it, without a driver: ``postgresql://...``."""
    return url.replace(_postgres.DRIVER, "postgresql", 1)


def nas_connections(url: str) -> int:
    """Open connections of nas (by application name) to the database of ``url``."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            return connection.execute(sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name = :name"), {"name": _postgres.APPLICATION_NAME}
            ).scalar_one()
    finally:
        engine.dispose()


def test_a_plain_postgresql_url_opens_with_psycopg_and_a_bounded_pool(postgres_url: str) -> None:
    storage = open_storage(plain(postgres_url))
    engine = storage.engine
    assert engine.url.drivername == "postgresql+psycopg"  # not psycopg2 (SQLAlchemy < 2.1)
    assert engine.pool.size() == _postgres.POOL_SIZE
    assert engine.pool._max_overflow == _postgres.MAX_OVERFLOW
    assert engine.pool._pre_ping
    assert open_storage(postgres_url) is storage  # one pool per process and database
    assert open_storage(postgres_url.replace(_postgres.DRIVER, "postgres", 1)) is storage
    study = open_study("s", plain(postgres_url), meta=META, space=SPACE)
    study.add_many([new(1), new(2)])
    # many opens and eight threads reading at once: one connection stays open
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            for _ in range(5):
                assert [t.number for t in load_study("s", postgres_url).trials()] == [0, 1]
                list_studies(postgres_url)
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=reader) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert engine.pool.checkedout() == 0 and engine.pool.checkedin() == _postgres.POOL_SIZE
    assert nas_connections(postgres_url) == _postgres.POOL_SIZE


def test_options_in_the_url_win_over_the_defaults() -> None:
    url = sa.engine.make_url("postgresql+psycopg://u@h/db?connect_timeout=3")
    assert "connect_timeout" not in _postgres.engine_kwargs(url)["connect_args"]
    assert _postgres.engine_kwargs(url)["connect_args"]["application_name"] == "nas"


def test_a_restarted_server_is_survived(postgres_url: str) -> None:
    study = open_study("s", postgres_url, meta=META, space=SPACE)
    study.add(new(1).config, new(1).metrics, feasible=True, cache_key="k1")
    # the same pool without the check before use: what a restart does to it
    unchecked = sa.create_engine(postgres_url, pool_size=1, pool_pre_ping=False)
    with unchecked.connect() as connection:
        connection.execute(sa.text("SELECT 1"))
    pg_server.restart()
    with pytest.raises(sa.exc.OperationalError), unchecked.connect() as connection:
        connection.execute(sa.text("SELECT 1"))
    unchecked.dispose()
    assert study.add(new(2).config, new(2).metrics, feasible=True, cache_key="k2") == 1
    assert [t.cache_key for t in study.trials()] == ["k1", "k2"]


_OPEN_WHEN_TOLD = """
import sys
from nas.studies import open_storage
print("ready", flush=True)
sys.stdin.readline()
open_storage(sys.argv[1])
"""


@pytest.mark.slow
def test_workers_opening_a_new_database_at_once_all_succeed(postgres_url: str) -> None:
    """Optuna creates its tables unguarded: without the schema lock, most of four
    processes opening a new database together failed on duplicate tables."""
    workers = [subprocess.Popen([sys.executable, "-c", _OPEN_WHEN_TOLD, postgres_url],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for _ in range(4)]
    assert [w.stdout.readline() for w in workers] == ["ready\n"] * 4  # all imported
    for worker in workers:  # then all open at once
        worker.stdin.write("go\n")
        worker.stdin.flush()
    results = [(w.wait(timeout=120), w.stderr.read()) for w in workers]
    assert [code for code, _ in results] == [0, 0, 0, 0], results
    assert open_storage(postgres_url).get_all_studies() == []


def test_a_password_never_appears_in_labels_or_errors() -> None:
    url = "postgresql://me:s3cret@127.0.0.1:1/db"
    assert storage_label(url) == "postgresql://me:***@127.0.0.1:1/db"
    assert storage_label("sqlite:///x.db") == "sqlite:///x.db"
    with pytest.raises(ValueError) as err:
        open_storage(url)  # nothing listens on port 1
    message = str(err.value)
    assert message.startswith("cannot open study storage 'postgresql://me:***@127.0.0.1:1/db'")
    assert "s3cret" not in message and "\n" not in message


def test_a_missing_driver_is_one_line_naming_the_extra(tmp_path) -> None:
    code = ("import sys\nsys.modules['psycopg'] = None\n"
            "from nas.cli import main\nsys.argv = ['nas', *sys.argv[1:]]\nmain()\n")
    result = subprocess.run(
        [sys.executable, "-c", code, "studies", "list", "--storage",
         "postgresql://u@127.0.0.1:1/db"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "pip install 'nas-platform[postgres]'" in lines[0]
