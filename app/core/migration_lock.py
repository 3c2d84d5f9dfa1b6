"""One process at a time migrates a database (issue 17 item 5).

Every process (`enhancer serve`, `enhancer worker`, `enhancer migrate`, ...) runs Alembic on start,
so several may do it at once on a fresh database. migrations/env.py runs every online upgrade under
`migration_connection` / `connection_migration_lock`:

- SQLite: an exclusive OS file lock on `<database file>.migrate.lock` beside the database
  (`fcntl.flock` on POSIX, `msvcrt.locking` on Windows), taken before the database is opened;
  an in-memory database needs none.
- PostgreSQL: a session-level `pg_advisory_lock` on MIGRATION_LOCK_KEY, on the connection that
  Alembic then migrates through.

Both locks go with the process if it dies. A process that waits logs that it waits, and gives up
with MigrationLockTimeout after MIGRATION_LOCK_TIMEOUT_SECONDS. Once it has the lock, Alembic reads
the current revision, so a process that waited for another's upgrade finds the database at head and
does nothing.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from sqlalchemy import Connection, text

from app.core.db import make_engine
from app.core.private_files import sqlite_file

# The advisory lock's key: "enhancer" as a big-endian 64-bit integer (fits PostgreSQL's bigint).
MIGRATION_LOCK_KEY = int.from_bytes(b"enhancer", "big")
# How long a process waits for another's migration before it gives up (read at each upgrade).
MIGRATION_LOCK_TIMEOUT_SECONDS = 120.0
_POLL_SECONDS = 0.1

log = logging.getLogger(__name__)


class MigrationLockTimeout(RuntimeError):
    """Another process held the migration lock for longer than the wait allowed."""


def sqlite_lock_path(url: str) -> Path | None:
    """`<database file>.migrate.lock` for a SQLite file URL; None for an in-memory or non-SQLite one."""
    database = sqlite_file(url)
    return None if database is None else database.with_name(database.name + ".migrate.lock")


@contextmanager
def migration_connection(url: str, timeout: float | None = None) -> Iterator[Connection]:
    """A connection to `url` that holds the migration lock until the block ends."""
    lock_path = sqlite_lock_path(url)
    if lock_path is not None:
        with sqlite_migration_lock(lock_path, timeout), _connect(url) as connection:
            yield connection
        return
    with _connect(url) as connection, connection_migration_lock(connection, timeout):
        yield connection


@contextmanager
def connection_migration_lock(connection: Connection, timeout: float | None = None) -> Iterator[None]:
    """The migration lock for a connection someone else opened (Alembic's config.attributes["connection"])."""
    if connection.dialect.name == "postgresql":
        with postgresql_migration_lock(connection, timeout):
            yield
        return
    lock_path = sqlite_lock_path(str(connection.engine.url))
    if lock_path is None:
        yield
        return
    with sqlite_migration_lock(lock_path, timeout):
        yield


@contextmanager
def _connect(url: str) -> Iterator[Connection]:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            yield connection
    finally:
        engine.dispose()  # closing the connection also ends its advisory lock, whatever happened


def _wait_for(try_lock: Callable[[], bool], what: str, timeout: float | None) -> None:
    """Call `try_lock` until it returns True; log once that this process waits; time out."""
    limit = MIGRATION_LOCK_TIMEOUT_SECONDS if timeout is None else timeout
    deadline = time.monotonic() + limit
    waiting_logged = False
    while not try_lock():
        if not waiting_logged:
            log.info("waiting for %s: another process is migrating the database", what)
            waiting_logged = True
        if time.monotonic() >= deadline:
            raise MigrationLockTimeout(
                f"gave up after {limit:g} s waiting for {what}; another process is migrating "
                "the database (or is stuck doing it). Retry once it has finished."
            )
        time.sleep(_POLL_SECONDS)
    if waiting_logged:
        log.info("got %s", what)


@contextmanager
def sqlite_migration_lock(lock_path: Path, timeout: float | None = None) -> Iterator[None]:
    """Hold an exclusive OS lock on `lock_path` (created if missing) for the block."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+b") as handle:
        _wait_for(lambda: _try_file_lock(handle), f"the migration lock {lock_path}", timeout)
        try:
            yield
        finally:
            _file_unlock(handle)


if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _try_file_lock(handle: IO[bytes]) -> bool:
        handle.seek(0)
        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _file_unlock(handle: IO[bytes]) -> None:
        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _try_file_lock(handle: IO[bytes]) -> bool:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _file_unlock(handle: IO[bytes]) -> None:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@contextmanager
def postgresql_migration_lock(connection: Connection, timeout: float | None = None) -> Iterator[None]:
    """Hold the session-level advisory lock MIGRATION_LOCK_KEY on `connection` for the block.

    A connection that was outside a transaction is left outside one, so Alembic begins and commits
    its own; a caller's open transaction is left alone.
    """

    def execute(sql: str) -> object:
        began = not connection.in_transaction()
        value = connection.execute(text(sql), {"key": MIGRATION_LOCK_KEY}).scalar()
        if began:
            connection.commit()  # a session-level lock outlives the transaction
        return value

    _wait_for(
        lambda: bool(execute("SELECT pg_try_advisory_lock(:key)")),
        f"the PostgreSQL migration lock (advisory lock {MIGRATION_LOCK_KEY})",
        timeout,
    )
    try:
        yield
    finally:
        try:
            execute("SELECT pg_advisory_unlock(:key)")
        except Exception:  # a broken connection: closing it releases the lock
            log.warning(
                "could not release the PostgreSQL migration lock; its connection closes", exc_info=True
            )
