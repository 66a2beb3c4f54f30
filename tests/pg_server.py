"""The PostgreSQL server the ``postgres`` tests use: a fresh database per test, and a
restart for fault tests.

The server is named by ``NAS_TEST_POSTGRES_URL`` (``source .ci/postgres.sh`` starts a
throw-away one and exports it, with ``NAS_TEST_PG_CTL``, ``NAS_TEST_PGDATA`` and
``NAS_TEST_PG_USER`` for restarts). Without it the tests skip, saying how to start one,
except where ``CI`` or ``NAS_REQUIRE_POSTGRES=1`` is set: there they fail, so a CI run
never passes by skipping them.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest

URL_VAR = "NAS_TEST_POSTGRES_URL"
HOW = "start a throw-away server with `source .ci/postgres.sh` and run pytest in that shell"
STORAGES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
"""Parameters of a test run on both databases (a ``postgres`` one is marked so)."""


def required() -> bool:
    """Whether a missing server is a failure (CI, or ``NAS_REQUIRE_POSTGRES=1``)."""
    ci = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
    return ci or os.environ.get("NAS_REQUIRE_POSTGRES") == "1"


def server_url() -> str:
    """The server's URL; skips (or, where required, fails) the test without one."""
    url = os.environ.get(URL_VAR)
    if url:
        return url
    if required():
        pytest.fail(f"{URL_VAR} is not set, and PostgreSQL tests must run here (CI or "
                    f"NAS_REQUIRE_POSTGRES=1): {HOW}", pytrace=False)
    pytest.skip(f"no PostgreSQL server ({URL_VAR} is not set): {HOW}")


class Databases:
    """Creates databases on the server, each dropped again by :meth:`drop`."""

    def __init__(self, url: str) -> None:
        import sqlalchemy as sa
        from sqlalchemy.pool import NullPool

        self._url = sa.engine.make_url(url)
        self._admin = sa.create_engine(self._url, poolclass=NullPool,
                                       isolation_level="AUTOCOMMIT")
        self._created: list[str] = []

    def create(self) -> str:
        """The URL of a new, empty database."""
        import sqlalchemy as sa

        name = f"nas_test_{uuid.uuid4().hex[:12]}"
        with self._admin.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
        self._created.append(name)
        return self._url.set(database=name).render_as_string(hide_password=False)

    def drop(self, url: str | None = None) -> None:
        """Drop the database of ``url`` (default: every one created), closing the
        connections that tests' storages still hold."""
        import sqlalchemy as sa

        names = [sa.engine.make_url(url).database] if url else list(self._created)
        with self._admin.connect() as connection:
            for name in names:
                connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                self._created.remove(name)

    def close(self) -> None:
        self.drop()
        self._admin.dispose()


def restart() -> None:
    """Restart the server (``pg_ctl restart -m fast``: every open connection is cut)."""
    pg_ctl, data = os.environ.get("NAS_TEST_PG_CTL"), os.environ.get("NAS_TEST_PGDATA")
    if not (pg_ctl and data):
        pytest.skip("restarting PostgreSQL needs NAS_TEST_PG_CTL and NAS_TEST_PGDATA "
                    f"(exported by .ci/postgres.sh): {HOW}")
    command = [pg_ctl, "-D", data, "-m", "fast", "-w", "-t", "60",
               "-l", str(Path(data).parent / "server.log"), "restart"]
    user = os.environ.get("NAS_TEST_PG_USER")
    if user:
        command = ["runuser", "-u", user, "--", *command]
    subprocess.run(command, check=True, capture_output=True, cwd="/", timeout=120)
