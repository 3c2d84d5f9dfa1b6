"""Engine and sessions. SQLite gets WAL, a busy timeout and BEGIN IMMEDIATE writes.

BEGIN IMMEDIATE takes the write lock at the start of a transaction, so the API and several
workers queue on the busy timeout instead of deadlocking on a read-to-write lock upgrade.
Read-only sessions (`read_session_scope`, the API's GET routes) begin DEFERRED instead: in WAL
mode they read a snapshot without taking the write lock, so polling never queues behind writers
nor holds them up.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Literal

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from app.core.config import get_settings

# SQLite's own lower() folds ASCII only; record filters (app.record_query) compare through this one,
# which lowers like PostgreSQL's lower() does under a UTF-8 locale ("Ü" -> "ü").
SQLITE_LOWER = "enhancer_lower"


def _sqlite_lower(value: object) -> str | None:
    return None if value is None else str(value).lower()


def make_engine(
    url: str, *, synchronous: Literal["FULL", "NORMAL"] = "FULL", busy_timeout_seconds: float = 30.0
) -> Engine:
    """`synchronous` and `busy_timeout_seconds`: SQLite's, from the settings of the same names."""
    if url.startswith("sqlite"):
        busy_ms = int(busy_timeout_seconds * 1000)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": busy_timeout_seconds},
            # No pre-ping: a local file connection does not go stale, and the ping cost a query per checkout.
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            # Let SQLAlchemy, not pysqlite, issue BEGIN so we can make it IMMEDIATE.
            dbapi_conn.isolation_level = None
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
            cursor.execute(f"PRAGMA synchronous={synchronous}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()
            dbapi_conn.create_function(SQLITE_LOWER, 1, _sqlite_lower, deterministic=True)

        @event.listens_for(engine, "begin")
        def _begin(conn):  # type: ignore[no-untyped-def]
            read_only = conn.get_execution_options().get(READ_ONLY)
            conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


READ_ONLY = "enhancer_read_only"  # execution option: this connection's transactions never write


@lru_cache
def get_engine() -> Engine:
    settings = get_settings()
    settings.ensure_dirs()
    return make_engine(
        settings.sqlalchemy_url,
        synchronous=settings.sqlite_synchronous,
        busy_timeout_seconds=settings.sqlite_busy_timeout_seconds,
    )


@lru_cache
def get_sessionmaker() -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(), expire_on_commit=False)


@contextmanager
def session_scope() -> Iterator[Session]:
    """A unit of work: commit on success, roll back on error."""
    session = get_sessionmaker()()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


_SQLITE_WRITERS = threading.Lock()


@contextmanager
def write_session_scope() -> Iterator[Session]:
    """session_scope for hot write paths: this process's writers take turns on a lock.

    SQLite admits one writer; threads that race for it wait in its busy handler, which sleeps and
    polls (1, 2, 5 ... 100 ms), so under load most of a request's latency is that sleep. A Python
    lock hands the turn over the moment the previous transaction ends. Other processes (workers)
    still meet on SQLite's own lock. (On PostgreSQL the lock only orders this process's writers.)
    """
    with _SQLITE_WRITERS, session_scope() as session:
        yield session


@lru_cache
def get_read_sessionmaker() -> sessionmaker[Session]:
    """Sessions for reads only (SQLite: deferred BEGIN, no write lock). Writing in one is a bug."""
    return sessionmaker(bind=get_engine().execution_options(**{READ_ONLY: True}), expire_on_commit=False)


@contextmanager
def read_session_scope() -> Iterator[Session]:
    session = get_read_sessionmaker()()
    try:
        yield session
    finally:
        session.rollback()
        session.close()


def use_data_dir(data_dir: str | None) -> None:
    """Every command's --data-dir: ENHANCER_DATA_DIR for this process and its children, and no
    settings or engines cached from before."""
    if data_dir:
        os.environ["ENHANCER_DATA_DIR"] = str(Path(data_dir).expanduser().resolve())
    reset_caches()


def reset_caches() -> None:
    """Forget engine and settings (tests switch databases between cases)."""
    if get_engine.cache_info().currsize:
        get_engine().dispose()
    get_engine.cache_clear()
    get_sessionmaker.cache_clear()
    get_read_sessionmaker.cache_clear()
    get_settings.cache_clear()
