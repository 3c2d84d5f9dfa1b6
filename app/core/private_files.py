"""Owner-only files: the data directory (and the directories in it) 0700, SQLite's files 0600.

Explicit chmod, not the umask, so the modes hold whatever umask the service starts under. SQLite
creates a database's -wal and -shm files with the database file's own mode, so the database is
created 0600 before SQLite first opens it. On Windows (no POSIX modes) this does nothing.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)

DIR_MODE = 0o700
FILE_MODE = 0o600
# The files SQLite keeps next to a database (WAL mode: -wal and -shm; rollback journal: -journal).
SQLITE_SIDE_SUFFIXES = ("-wal", "-shm", "-journal")


def chmod_private(path: Path, mode: int) -> None:
    """chmod unless on Windows; a path someone else owns (a mounted volume) is left as it is."""
    if os.name == "nt":
        return
    try:
        os.chmod(path, mode)
    except PermissionError:
        log.warning("cannot make %s owner-only (mode %o): not its owner", path, mode)


def private_dir(path: Path) -> Path:
    """Create the directory (and its parents) if missing; it (not its parents) gets mode 0700."""
    path.mkdir(parents=True, exist_ok=True)
    chmod_private(path, DIR_MODE)
    return path


def sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite URL; None for other databases and in-memory SQLite."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database or ""
    if database in ("", ":memory:") or "mode=memory" in database:
        return None
    if database.startswith("file:"):  # a URI filename (?uri=true)
        database = database[len("file:") :].split("?", 1)[0]
    return Path(database)


def sqlite_files(database: Path) -> list[Path]:
    """The database and whichever of its -wal, -shm and -journal files exist."""
    candidates = [database, *(database.with_name(database.name + s) for s in SQLITE_SIDE_SUFFIXES)]
    return [path for path in candidates if path.exists()]


def private_sqlite_file(database: Path) -> None:
    """Create the database file empty with mode 0600 if missing (SQLite takes an empty file as an
    empty database, and gives its -wal and -shm the same mode), and make the existing files 0600."""
    if not database.exists():
        database.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(database, os.O_WRONLY | os.O_CREAT, FILE_MODE))
    for path in sqlite_files(database):
        chmod_private(path, FILE_MODE)


def private_data_dir(data_dir: Path, *, subdirs: tuple[Path, ...] = ()) -> None:
    """The data directory and the service's directories in it 0700; the SQLite files in it 0600
    (a data directory made by an older version, or under a looser umask, is tightened on start)."""
    private_dir(data_dir)
    for subdir in subdirs:
        private_dir(subdir)
    for database in sorted(data_dir.glob("*.db")):
        for path in sqlite_files(database):
            chmod_private(path, FILE_MODE)
