"""Migrations under a lock (issue 17 item 5): processes starting at once on a fresh database.

Every process (`enhancer serve`, `enhancer worker`, `enhancer migrate`, ...) runs Alembic on start.
The upgrade is serialised by an OS file lock beside a SQLite file and by `pg_advisory_lock` on
PostgreSQL (app/core/migrate.py). Both engines: `database_url` is None for the SQLite default.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from tests.conftest import REPO_ROOT

# A real start-up: `enhancer -v migrate` (-v: Alembic's "Running upgrade" lines too), after a barrier.
STARTER = """
import sys, time
from pathlib import Path
from app.cli import main
ready, go = Path(sys.argv[1]), Path(sys.argv[2])
ready.touch()  # imported: waiting at the barrier
while not go.exists():
    time.sleep(0.005)
raise SystemExit(main(["-v", "migrate"]))
"""


def _env(data_dir: Path, database_url: str | None) -> dict[str, str]:
    env = {**os.environ, "ENHANCER_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"}
    env.pop("DATABASE_URL", None)
    if database_url:
        env["DATABASE_URL"] = database_url
    return env


def _sqlalchemy_url(data_dir: Path, database_url: str | None) -> str:
    if database_url:
        return "postgresql+psycopg://" + database_url.split("://", 1)[1]
    return f"sqlite:///{data_dir / 'enhancer.db'}"


def _start(tmp_path: Path, name: str, env: dict[str, str]) -> tuple[subprocess.Popen, Path, Path]:
    ready, log = tmp_path / f"{name}.ready", tmp_path / f"{name}.log"
    process = subprocess.Popen(
        [sys.executable, "-c", STARTER, str(ready), str(tmp_path / "go")],
        cwd=REPO_ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    return process, ready, log


def _wait_until(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _head() -> str:
    from alembic.script import ScriptDirectory

    from app.core.migrate import alembic_config

    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head
    return head


def _versions(url: str) -> list[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            if not inspect(conn).has_table("alembic_version"):
                return []
            return [row[0] for row in conn.execute(text("SELECT version_num FROM alembic_version"))]
    finally:
        engine.dispose()


def _assert_at_head(url: str) -> None:
    from app.models import Base

    assert _versions(url) == [_head()]  # exactly one row, and it is head
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            tables = inspect(conn).get_table_names()
    finally:
        engine.dispose()
    assert len(tables) == len(set(tables))
    assert {*Base.metadata.tables, "alembic_version"} <= set(tables)  # (SQLite adds its FTS tables)


def test_four_processes_starting_at_once_on_a_fresh_database(
    tmp_path: Path, database_url: str | None
) -> None:
    data_dir = tmp_path / "data"
    env = _env(data_dir, database_url)
    started = [_start(tmp_path, f"p{i}", env) for i in range(4)]
    try:
        _wait_until(lambda: all(ready.exists() for _, ready, _ in started), 120, "4 processes imported")
        (tmp_path / "go").touch()  # all four migrate at the same instant
        codes = [process.wait(120) for process, _, _ in started]
    finally:
        for process, _, _ in started:
            if process.poll() is None:
                process.kill()
                process.wait()
    logs = [log.read_text(errors="replace") for _, _, log in started]
    assert codes == [0] * 4, [text[-3000:] for text in logs]
    _assert_at_head(_sqlalchemy_url(data_dir, database_url))
    # One process ran the migrations; the others found the database at head once they had the lock.
    ran_first_migration = [text for text in logs if "Running upgrade  -> 0001" in text]
    assert len(ran_first_migration) == 1, [text[-3000:] for text in logs]


@contextmanager
def _lock_held_here(data_dir: Path, database_url: str | None) -> Iterator[None]:
    """This test process holds the migration lock, taken by hand (not through app.core.migrate)."""
    from app.core.migration_lock import MIGRATION_LOCK_KEY

    if database_url:
        import psycopg

        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
            yield
            conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
        return
    if sys.platform == "win32":
        pytest.skip("takes the lock with fcntl.flock")
    import fcntl

    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / "enhancer.db.migrate.lock", "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        yield
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def test_a_process_waits_while_another_holds_the_migration_lock(
    tmp_path: Path, database_url: str | None
) -> None:
    data_dir = tmp_path / "data"
    url = _sqlalchemy_url(data_dir, database_url)
    (tmp_path / "go").touch()  # no barrier: one process
    with _lock_held_here(data_dir, database_url):
        process, _, log = _start(tmp_path, "waiter", _env(data_dir, database_url))
        try:
            _wait_until(
                lambda: "waiting for" in log.read_text(errors="replace") or process.poll() is not None,
                120,
                "the process to reach the lock",
            )
            assert process.poll() is None, log.read_text(errors="replace")[-3000:]
            time.sleep(1.0)
            assert process.poll() is None, "migrated while another process held the lock"
            assert _versions(url) == []  # nothing migrated yet
        except BaseException:
            process.kill()
            process.wait()
            raise
    assert process.wait(120) == 0, log.read_text(errors="replace")[-3000:]
    _assert_at_head(url)
    assert "got the" in log.read_text(errors="replace")


def test_a_wait_past_the_timeout_is_a_clear_error(
    tmp_path: Path, database_url: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.core import migration_lock
    from app.core.migrate import upgrade_database

    data_dir = tmp_path / "data"
    url = _sqlalchemy_url(data_dir, database_url)
    with _lock_held_here(data_dir, database_url):
        started = time.monotonic()
        monkeypatch.setattr(migration_lock, "MIGRATION_LOCK_TIMEOUT_SECONDS", 0.5)
        with pytest.raises(migration_lock.MigrationLockTimeout, match=r"gave up after 0.5 s waiting for the"):
            upgrade_database(url)
        assert time.monotonic() - started < 10
    assert _versions(url) == []
    monkeypatch.undo()
    upgrade_database(url)  # released: now it migrates
    _assert_at_head(url)


def test_an_in_memory_sqlite_database_needs_no_lock(tmp_path: Path) -> None:
    from app.core.migration_lock import sqlite_lock_path

    assert sqlite_lock_path("sqlite://") is None
    assert sqlite_lock_path("sqlite:///:memory:") is None
    assert sqlite_lock_path("postgresql+psycopg://u@h/db") is None
    assert sqlite_lock_path(f"sqlite:///{tmp_path}/x.db") == tmp_path / "x.db.migrate.lock"
