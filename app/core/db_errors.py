"""Which database errors mean "not now" rather than "bug": a lock held past the busy timeout, a full
disk, a failing disk, a server that cannot be reached. The API answers them with 503 and
Retry-After; the worker puts its jobs back at once with the reason instead of leaving them running
until their lease runs out. Anything else stays an error (500, or a failed job)."""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from typing import Literal

from sqlalchemy.exc import DBAPIError

Reason = Literal["locked", "full", "disk", "unreachable"]

# Seconds a client should wait: a lock clears quickly, a full disk needs a person.
RETRY_AFTER: dict[Reason, int] = {"locked": 2, "unreachable": 10, "full": 60, "disk": 60}
DESCRIPTION: dict[Reason, str] = {
    "locked": "the database is busy (locked by another writer past the busy timeout)",
    "full": "the database's disk is full",
    "disk": "the database's disk failed to read or write (disk I/O error)",
    "unreachable": "the database server cannot be reached",
}
# PostgreSQL SQLSTATE classes and codes (psycopg's `sqlstate`).
_PG_REASONS: tuple[tuple[str, Reason], ...] = (
    ("53100", "full"),  # disk_full
    ("55P03", "locked"),  # lock_not_available
    ("40P01", "locked"),  # deadlock_detected
    ("57P", "unreachable"),  # operator intervention: admin shutdown, cannot connect now
    ("08", "unreachable"),  # connection exception
    ("53", "full"),  # insufficient resources (out of memory, too many connections)
)


@dataclass(frozen=True)
class DatabaseUnavailable:
    reason: Reason

    @property
    def retry_after(self) -> int:
        return RETRY_AFTER[self.reason]

    def describe(self) -> str:
        return f"{DESCRIPTION[self.reason]}; retry in {self.retry_after} s"


def database_unavailable(error: BaseException) -> DatabaseUnavailable | None:
    """The reason `error` (an SQLAlchemy or DB-API error) is temporary, or None if it is not one."""
    orig = (error.orig if isinstance(error, DBAPIError) else error) or error
    reason = _sqlite_reason(orig) if isinstance(orig, sqlite3.Error) else _postgres_reason(orig)
    if reason is None and isinstance(error, DBAPIError) and error.connection_invalidated:
        reason = "unreachable"
    return DatabaseUnavailable(reason) if reason else None


def _sqlite_reason(error: sqlite3.Error) -> Reason | None:
    name = getattr(error, "sqlite_errorname", "") or ""
    message = str(error).lower()
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "database is locked" in message:
        return "locked"
    if name == "SQLITE_FULL" or "disk is full" in message:
        return "full"
    if name.startswith("SQLITE_IOERR") or "disk i/o error" in message:
        return "disk"
    return None


def _postgres_reason(error: BaseException) -> Reason | None:
    sqlstate = getattr(error, "sqlstate", None)
    if sqlstate:
        return next((reason for prefix, reason in _PG_REASONS if sqlstate.startswith(prefix)), None)
    # psycopg's OperationalError without a SQLSTATE: the connection itself failed.
    if type(error).__name__ == "OperationalError" and type(error).__module__.startswith("psycopg"):
        return "unreachable"
    return None


def warn_database_failure(log: logging.Logger, what: str, error: BaseException) -> None:
    """A background task's failure: one line for a locked or full database (it recurs every tick
    until it clears), the traceback for anything else."""
    unavailable = database_unavailable(error)
    if unavailable is None:
        log.warning(what, exc_info=error)
    else:
        log.warning("%s: %s", what, unavailable.describe())
