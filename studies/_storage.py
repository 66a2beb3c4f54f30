"""Storage URLs: the default study database and safe opening of Optuna storages.

Studies live in one Optuna storage: an SQLite file by default, or any SQLAlchemy URL
Optuna accepts (``postgresql://...`` when many workers or machines share a search).
Opening checks what SQLAlchemy would otherwise turn into long tracebacks (a missing
directory, a file that is not a database, a database of some other program) and raises
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
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: concurrent first use is not guarded
    fcntl = None  # type: ignore[assignment]

import optuna

from nas._messages import one_line

ENV_VAR = "NAS_STORAGE"
DEFAULT_URL = "sqlite:///nas-studies.db"
_SQLITE_MAGIC = b"SQLite format 3\x00"


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

    Raises:
        ValueError: the URL is malformed, its SQLite file's directory is missing, the
            file is not an SQLite database or is one that Optuna did not create, or the
            database cannot be opened.
    """
    if isinstance(url, optuna.storages.BaseStorage):
        return url
    if not isinstance(url, str) or not url:
        raise ValueError(f"storage must be a database URL such as {DEFAULT_URL!r}, got {url!r}")
    quiet_optuna()
    path = sqlite_path(url)
    _check_sqlite_folder(url, path)
    with _schema_lock(path):
        _check_sqlite_file(url, path)
        try:
            return optuna.storages.RDBStorage(url)
        except Exception as err:  # SQLAlchemy and Optuna raise many kinds; say it in one line
            raise ValueError(f"cannot open study storage {url!r}: {one_line(err)}") from err


def storage_label(storage: str | optuna.storages.BaseStorage) -> str:
    """The URL of a storage for messages and results."""
    if isinstance(storage, str):
        return storage
    url = getattr(storage, "url", None)
    return url if isinstance(url, str) else type(storage).__name__


def sqlite_path(url: str) -> Path | None:
    """The database file of an ``sqlite://`` URL, or None (not SQLite, or in memory)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as err:
        raise ValueError(
            f"storage must be a database URL such as {DEFAULT_URL!r}, got {url!r} ({err})"
        ) from None
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
