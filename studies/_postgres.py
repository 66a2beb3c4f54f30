"""PostgreSQL study storages: the driver, a bounded connection pool, the schema lock.

Many workers, on one machine or many, can share a study on a PostgreSQL server; SQLite
serialises every writer on one file and cannot be shared between hosts. What this
module adds to Optuna's ``RDBStorage`` for that:

* **The driver.** ``postgresql://`` means psycopg2 to SQLAlchemy before 2.1 (psycopg 3
  from 2.1 on), and nas does not ship psycopg2; such URLs (and ``postgres://``, which
  SQLAlchemy does not know) are mapped to psycopg 3,
  ``postgresql+psycopg://``, installed by the ``postgres`` extra. A URL naming another
  driver (``postgresql+psycopg2://``) is used as it is.
* **A bounded pool.** A server allows 100 connections by default and every worker
  process has its own pool: a pool keeps :data:`POOL_SIZE` connection (a worker's one
  thread needs no more) and lends up to :data:`MAX_OVERFLOW` more to other threads
  (the dashboard), closed when given back, so 25 busy processes stay under the limit.
  ``open_storage`` keeps one storage per process and database, so opening many
  studies (or serving many pages) does not open more pools.
  Connections are checked before use (``pool_pre_ping``), so a restarted server costs
  a reconnect, not a failed write; connecting gives up after
  :data:`CONNECT_TIMEOUT_S`.
* **The schema lock.** Optuna creates its tables without guarding against another
  process doing the same (two workers starting on a new database: one fails on a
  duplicate table or version row), so opening holds a PostgreSQL advisory lock, on a
  connection of its own, while Optuna creates or checks the schema; the server
  releases it if the process dies.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

DRIVER = "postgresql+psycopg"
"""SQLAlchemy's name for PostgreSQL through psycopg 3 (the ``postgres`` extra)."""
ALIASES = ("postgresql", "postgres")
"""URL schemes taken to mean :data:`DRIVER`."""
POOL_SIZE = 1
MAX_OVERFLOW = 3
POOL_TIMEOUT_S = 30
CONNECT_TIMEOUT_S = 10
APPLICATION_NAME = "nas"
"""How nas's connections are named in ``pg_stat_activity``."""
_SCHEMA_LOCK_KEY = 0x6E61735F  # "nas_": one advisory lock key per database


def is_postgres(url: Any) -> bool:
    """Whether a parsed SQLAlchemy URL is a PostgreSQL one (any driver)."""
    return url.get_backend_name() in ALIASES


def with_driver(url: Any) -> Any:
    """``url`` (parsed) with psycopg 3 as its driver where it names none."""
    if url.drivername in ALIASES:
        return url.set(drivername=DRIVER)
    return url


def engine_kwargs(url: Any) -> dict[str, Any]:
    """SQLAlchemy engine settings for a PostgreSQL URL (the module docstring says why);
    connection options given in the URL's query win over these defaults."""
    connect = {"connect_timeout": CONNECT_TIMEOUT_S, "application_name": APPLICATION_NAME}
    return {
        "pool_size": POOL_SIZE,
        "max_overflow": MAX_OVERFLOW,
        "pool_timeout": POOL_TIMEOUT_S,
        "pool_pre_ping": True,
        "connect_args": {k: v for k, v in connect.items() if k not in url.query}
        if url.drivername == DRIVER else {},
    }


@contextmanager
def schema_lock(url: Any) -> Iterator[None]:
    """Hold the database's schema advisory lock (waiting for it) for the block; it goes
    with the connection, which is closed after the block."""
    import sqlalchemy as sa
    from sqlalchemy.pool import NullPool

    engine = sa.create_engine(url, poolclass=NullPool,
                              connect_args=engine_kwargs(url)["connect_args"])
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT pg_advisory_lock(:key)"),
                               {"key": _SCHEMA_LOCK_KEY})
            yield
    finally:
        engine.dispose()
