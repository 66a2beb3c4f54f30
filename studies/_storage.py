"""Storage URLs: the default study database and safe opening of Optuna storages.

Studies live in one Optuna storage: an SQLite file by default, or any SQLAlchemy URL
Optuna accepts (``postgresql://...`` when many workers or machines share a search:
:mod:`nas.studies._postgres` sets its driver, pool and schema lock). Opening checks
what SQLAlchemy would otherwise turn into long tracebacks (a missing directory, a file
that is not a database, a database of some other program, a missing driver) and raises
one-line ``ValueError`` s instead, before anything is written.

Several processes may open one new SQLite file at once (two ``nas search`` started
together): Optuna creates the schema without guarding against that (one process dies
on ``table studies already exists`` or on the alembic version row), so opening an
SQLite storage holds an exclusive ``flock`` on the database file while Optuna creates
or checks the schema. SQLite's own locks are POSIX record locks, which ``flock`` does
not touch, so the lock orders only the schema step.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: concurrent first use is not guarded
    fcntl = None  # type: ignore[assignment]

import optuna

from nas._extras import require
from nas._messages import one_line
from nas.studies import _postgres

ENV_VAR = "NAS_STORAGE"
DEFAULT_URL = "sqlite:///nas-studies.db"
_SQLITE_MAGIC = b"SQLite format 3\x00"
_POSTGRES_STORAGES: dict[tuple[int, str], optuna.storages.RDBStorage] = {}
"""One storage, so one bounded connection pool, per process and server database: every
open (each dashboard page, each study) shares it. SQLite files are opened afresh, so
that a file removed and made again is never read through an old connection."""
_POSTGRES_LOCK = threading.Lock()


def default_storage() -> str:
    """The study database URL: ``$NAS_STORAGE`` if set, else ``sqlite:///nas-studies.db``
    (a file in the current directory)."""
    return os.environ.get(ENV_VAR) or DEFAULT_URL


def quiet_optuna() -> None:
    """Optuna logs every trial and study at INFO; our progress bar says it better.

    Called by the functions that create or load studies rather than at import, so that
    importing ``nas.studies`` never changes a user's own Optuna logging.
    """
    if optuna.logging.get_verbosity() < logging.WARNING:
        optuna.logging.set_verbosity(logging.WARNING)


def open_storage(url: str | optuna.storages.BaseStorage) -> optuna.storages.BaseStorage:
    """An Optuna storage for ``url`` (a URL string, or a storage object passed through).

    ``postgresql://`` URLs are opened with psycopg 3 (``postgresql+psycopg://``, the
    ``postgres`` extra) whatever SQLAlchemy's default driver (psycopg2 before 2.1), with
    a small connection pool that survives a server restart (:mod:`nas.studies._postgres`);
    a process opens each server database once, and later calls return the same storage.

    Raises:
        ValueError: the URL is malformed, its SQLite file's directory is missing, the
            file is not an SQLite database or is one that Optuna did not create, the
            PostgreSQL driver is not installed, or the database cannot be opened.
    """
    if isinstance(url, optuna.storages.BaseStorage):
        return url
    if not isinstance(url, str) or not url:
        raise ValueError(f"storage must be a database URL such as {DEFAULT_URL!r}, got {url!r}")
    quiet_optuna()
    parsed = _parse(url)
    if _postgres.is_postgres(parsed):
        return _open_postgres(url, _postgres.with_driver(parsed))
    path = sqlite_path(url)
    _check_sqlite_folder(url, path)
    with _schema_lock(path):
        _check_sqlite_file(url, path)
        try:
            return optuna.storages.RDBStorage(url)
        except Exception as err:  # SQLAlchemy and Optuna raise many kinds; say it in one line
            raise ValueError(f"cannot open study storage {url!r}: {one_line(err)}") from err


def _open_postgres(url: str, parsed) -> optuna.storages.RDBStorage:
    """The process's one storage for this database (:mod:`nas.studies._postgres`)."""
    if parsed.drivername == _postgres.DRIVER:
        require("postgres", purpose="a PostgreSQL study storage")
    full = parsed.render_as_string(hide_password=False)
    key = (os.getpid(), full)  # a forked child opens its own connections
    with _POSTGRES_LOCK:
        storage = _POSTGRES_STORAGES.get(key)
        if storage is not None:
            return storage
        try:
            with _postgres.schema_lock(parsed):
                storage = optuna.storages.RDBStorage(
                    full, engine_kwargs=_postgres.engine_kwargs(parsed))
        except Exception as err:  # the driver's and the server's errors: one line
            raise ValueError(
                f"cannot open study storage {storage_label(url)!r}: {one_line(err)}"
            ) from err
        _POSTGRES_STORAGES[key] = storage
        return storage


def storage_label(storage: str | optuna.storages.BaseStorage) -> str:
    """The URL of a storage for messages and results, its password masked (``***``):
    labels are printed, stored in reports and served by the dashboard."""
    url = storage if isinstance(storage, str) else getattr(storage, "url", None)
    if not isinstance(url, str):
        return type(storage).__name__
    try:
        parsed = _parse(url)
    except ValueError:
        return url
    return parsed.render_as_string(hide_password=True) if parsed.password else url


def _parse(url: str):
    """The parsed SQLAlchemy URL (a one-line ``ValueError`` for a malformed one)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url)
    except (ArgumentError, ValueError) as err:
        raise ValueError(
            f"storage must be a database URL such as {DEFAULT_URL!r}, got {url!r} ({err})"
        ) from None


def sqlite_path(url: str) -> Path | None:
    """The database file of an ``sqlite://`` URL, or None (not SQLite, or in memory)."""
    parsed = _parse(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def _check_sqlite_folder(url: str, path: Path | None) -> None:
    if path is None:
        return
    if not path.parent.is_dir():
        raise ValueError(
            f"cannot open study storage {url!r}: directory '{path.parent}' does not exist"
        )
    if path.is_dir():
        raise ValueError(f"cannot open study storage {url!r}: '{path}' is a directory")


def _check_sqlite_file(url: str, path: Path | None) -> None:
    if path is None or not path.exists() or path.stat().st_size == 0:
        return
    with path.open("rb") as handle:
        header = handle.read(len(_SQLITE_MAGIC))
    if header != _SQLITE_MAGIC:
        raise ValueError(f"cannot open study storage {url!r}: '{path}' is not an SQLite database")
    tables = _sqlite_tables(path)
    if tables and "studies" not in tables:
        raise ValueError(
            f"cannot open study storage {url!r}: '{path}' is an SQLite database of another "
            f"program (no Optuna tables); choose another file"
        )


@contextmanager
def _schema_lock(path: Path | None) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the SQLite file ``path`` (created empty if missing,
    which SQLite takes as a new database); nothing for other storages or without
    ``fcntl`` (Windows)."""
    if path is None or fcntl is None:
        yield
        return
    with path.open("ab") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _sqlite_tables(path: Path) -> set[str]:
    """Table names, read through a read-only connection so nothing is ever written."""
    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as conn:
            rows = conn.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
    except sqlite3.DatabaseError as err:
        raise ValueError(f"cannot open study storage '{path}': {err}") from None
    return {row[0] for row in rows}
