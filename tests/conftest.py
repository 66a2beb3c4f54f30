"""Fixtures shared by test modules; a module that defines its own (a stand-in task, a
freshly initialised supernet) overrides these."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import nas
from tests import pg_server


@pytest.fixture(autouse=True)
def _user_registry(tmp_path_factory: pytest.TempPathFactory,
                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Targets a test adds with `nas hw add` go to a fresh folder, never the user's."""
    monkeypatch.setenv("NAS_CONFIG", str(tmp_path_factory.mktemp("nas-config")))


@pytest.fixture(scope="session")
def supernet() -> nas.Supernet:
    """The shipped HAT SuperTransformer (trained G2P checkpoint)."""
    return nas.get_supernet("hat")


@pytest.fixture(scope="session")
def task() -> nas.Task:
    """The built-in grapheme-to-phoneme task."""
    return nas.get_task("g2p-cmudict")


@pytest.fixture(scope="session")
def postgres_databases() -> Iterator[pg_server.Databases]:
    """The PostgreSQL test server's database maker (tests/pg_server.py: skips, or fails in
    CI, without a server)."""
    databases = pg_server.Databases(pg_server.server_url())
    yield databases
    databases.close()


@pytest.fixture
def postgres_url(postgres_databases: pg_server.Databases) -> Iterator[str]:
    """The URL of a fresh, empty PostgreSQL database, dropped after the test."""
    url = postgres_databases.create()
    yield url
    postgres_databases.drop(url)


@pytest.fixture(params=pg_server.STORAGES)
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty study database: a new SQLite file, then a new PostgreSQL database."""
    if request.param == "postgres":
        return request.getfixturevalue("postgres_url")
    return f"sqlite:///{tmp_path / 'studies.db'}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses a PostgreSQL database ``postgres`` (``-m postgres``)."""
    for item in items:
        if "postgres_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)
