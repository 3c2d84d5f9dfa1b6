"""Back up and restore the SQLite database (`enhancer backup`, `enhancer restore`; docs/deployment.md).

A backup goes through SQLite's online backup API in one step: a single read transaction, so in WAL
mode it is a consistent snapshot while the API and workers keep writing (they are not blocked). It is
written to a temporary file next to the target, checked, synced and renamed into place, so a crash
leaves either the old file or the whole new one, never a partial backup. Mode 0600.

A restore checks the file (a SQLite database that passes integrity_check and has Alembic's
alembic_version table), copies it into the data directory's database through the same API (SQLite
takes the locks; the database's -wal and -shm stay consistent), then migrates it to the latest
revision, so a backup taken by an older version restores too.

PostgreSQL has its own tools: `postgres_guidance` names the pg_dump / pg_restore commands.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import URL, make_url

from app.core.private_files import FILE_MODE, chmod_private, private_sqlite_file

SQLITE_MAGIC = b"SQLite format 3\x00"
# The tables a backup's summary counts.
COUNTED_TABLES = ("records", "jobs")


class BackupError(Exception):
    """A backup or restore that cannot go ahead; the message says why and what to do."""


@dataclass(frozen=True)
class Copied:
    path: Path
    bytes: int
    counts: dict[str, int]

    def summary(self) -> str:
        counts = ", ".join(f"{count} {table}" for table, count in self.counts.items())
        return f"{counts}, {self.bytes:,} bytes"


def _libpq_url(url: str) -> str:
    """The URL as pg_dump takes it: no SQLAlchemy driver, no password (nor a ?password= parameter)."""
    parsed = make_url(url)
    query = {key: value for key, value in parsed.query.items() if key.lower() != "password"}
    return URL.create(
        drivername=parsed.get_backend_name(),
        username=parsed.username,
        host=parsed.host,
        port=parsed.port,
        database=parsed.database,
        query=query,
    ).render_as_string(hide_password=False)


def postgres_guidance(url: str, *, dump_file: str = "enhancer.dump") -> str:
    """How to back up and restore a PostgreSQL database; no password is shown."""
    plain = _libpq_url(url)
    return (
        f"the database is PostgreSQL ({plain}): `enhancer backup` and `enhancer restore` copy SQLite "
        "only. Use PostgreSQL's tools (they read the password from PGPASSWORD or ~/.pgpass, or ask):\n"
        f"    back up:  pg_dump --format=custom --file={shlex.quote(dump_file)} {shlex.quote(plain)}\n"
        f"    restore:  pg_restore --clean --if-exists --no-owner --dbname={shlex.quote(plain)} "
        f"{shlex.quote(dump_file)}\n"
        "  then `enhancer migrate` (a dump from an older version is upgraded to the latest migration)."
    )


def _connect(path: Path, *, read_only: bool, busy_timeout_seconds: float) -> sqlite3.Connection:
    uri = f"{path.resolve().as_uri()}?mode={'ro' if read_only else 'rw'}"
    conn = sqlite3.connect(uri, uri=True, timeout=busy_timeout_seconds, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_seconds * 1000)}")
    return conn


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def count_rows(conn: sqlite3.Connection) -> dict[str, int]:
    tables = _tables(conn)
    return {
        table: int(conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]) if table in tables else 0
        for table in COUNTED_TABLES
    }


def integrity_errors(conn: sqlite3.Connection) -> list[str]:
    """integrity_check's findings; empty when the database is sound."""
    rows = [str(row[0]) for row in conn.execute("PRAGMA integrity_check")]
    return [] if rows == ["ok"] else rows


def _fsync_dir(directory: Path) -> None:
    if os.name == "nt":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy(
    source: Path, target: Path, *, source_read_only: bool, journal_mode: str, timeout: float
) -> tuple[list[str], dict[str, int]]:
    """SQLite's online backup of `source` into `target` (every page in one step: one read transaction,
    so a consistent snapshot while others write); the copy's integrity_check errors and row counts."""
    with (
        contextlib.closing(_connect(source, read_only=source_read_only, busy_timeout_seconds=timeout)) as src,
        contextlib.closing(_connect(target, read_only=False, busy_timeout_seconds=timeout)) as copy,
    ):
        src.backup(copy)
        copy.execute(f"PRAGMA journal_mode={journal_mode}")
        return integrity_errors(copy), count_rows(copy)


def backup_sqlite(*, database: Path, target: Path, busy_timeout_seconds: float = 30.0) -> Copied:
    """Copy the live database to `target` (replaced if it exists) as one consistent snapshot."""
    if not database.is_file():
        raise BackupError(f"no database at {database} (nothing to back up; is --data-dir right?)")
    target = target.expanduser().absolute()
    if target.is_dir():
        raise BackupError(f"{target} is a directory; give the backup file's path")
    if not target.parent.is_dir():
        raise BackupError(f"no directory {target.parent} to write the backup in")
    if target.resolve() == database.resolve():
        raise BackupError("the backup cannot overwrite the database itself")
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE))
    chmod_private(temporary, FILE_MODE)
    try:
        try:
            # A standalone file (journal DELETE): no -wal next to it to lose when it is copied elsewhere.
            errors, counts = _copy(
                database,
                temporary,
                source_read_only=False,
                journal_mode="DELETE",
                timeout=busy_timeout_seconds,
            )
        except sqlite3.Error as exc:
            raise BackupError(f"backing up {database} failed: {exc}") from exc
        if errors:
            raise BackupError(f"the copy failed integrity_check: {'; '.join(errors[:5])}")
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, target)
        _fsync_dir(target.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
    chmod_private(target, FILE_MODE)
    return Copied(path=target, bytes=target.stat().st_size, counts=counts)


def check_backup_file(path: Path) -> dict[str, int]:
    """Raise BackupError unless `path` is a sound SQLite database of this project; its row counts."""
    if not path.is_file():
        raise BackupError(f"no file {path}")
    with open(path, "rb") as handle:
        header = handle.read(len(SQLITE_MAGIC))
    if header != SQLITE_MAGIC:
        raise BackupError(f"{path} is not a SQLite database (no SQLite header); nothing was restored")
    try:
        conn = _connect(path, read_only=True, busy_timeout_seconds=5.0)
        try:
            errors = integrity_errors(conn)
            if errors:
                raise BackupError(
                    f"{path} failed SQLite's integrity_check ({'; '.join(errors[:5])}); nothing was restored"
                )
            if "alembic_version" not in _tables(conn):
                raise BackupError(
                    f"{path} is a SQLite database but not newsletter-enhancer's (no alembic_version "
                    "table); nothing was restored"
                )
            return count_rows(conn)
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise BackupError(
            f"{path} cannot be read as a SQLite database ({exc}); nothing was restored"
        ) from exc


def restore_sqlite(
    *, source: Path, database: Path, force: bool = False, busy_timeout_seconds: float = 30.0
) -> Copied:
    """Copy the backup `source` over `database` (created 0600 if missing). Refuses a database that has
    records or jobs unless `force`. The caller migrates the result (app.core.migrate.upgrade_database)."""
    source = source.expanduser().absolute()
    counts = check_backup_file(source)
    if database.exists() and source.resolve() == database.resolve():
        raise BackupError("the backup is the database itself")
    if database.is_file() and database.stat().st_size and not force:
        conn = _connect(database, read_only=False, busy_timeout_seconds=busy_timeout_seconds)
        try:
            existing = count_rows(conn)
        finally:
            conn.close()
        if any(existing.values()):
            held = ", ".join(f"{count} {table}" for table, count in existing.items())
            raise BackupError(
                f"{database} already holds {held}; restoring would replace them. Restore into an empty "
                "data directory (--data-dir), or pass --force to replace them"
            )
    private_sqlite_file(database)
    try:
        # journal WAL: as the service runs it (app.core.db)
        errors, _ = _copy(
            source, database, source_read_only=True, journal_mode="WAL", timeout=busy_timeout_seconds
        )
    except sqlite3.Error as exc:
        raise BackupError(f"restoring into {database} failed: {exc}") from exc
    if errors:
        raise BackupError(f"the restored database failed integrity_check: {'; '.join(errors[:5])}")
    private_sqlite_file(database)
    return Copied(path=database, bytes=database.stat().st_size, counts=counts)
