"""`enhancer backup` and `enhancer restore` (app/core/backup.py) on real SQLite through the real CLI,
and the owner-only modes of the data directory (app/core/private_files.py)."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, event

from app.core.db import make_engine
from app.core.migrate import upgrade_database
from app.models import Item, Job, JobStatus, Record, new_id
from tests.conftest import REPO_ROOT

posix_only = pytest.mark.skipif(os.name == "nt", reason="POSIX file modes")


def _enhancer(*args: str, env: dict[str, str] | None = None, umask: int | None = None):  # type: ignore[no-untyped-def]
    """The real CLI in its own process (no DATABASE_URL unless `env` sets one)."""
    base = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "ENHANCER_DATA_DIR")}
    preexec = (lambda: os.umask(umask)) if umask is not None and os.name != "nt" else None  # type: ignore[misc]
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        cwd=REPO_ROOT, env={**base, **(env or {})}, capture_output=True, text=True, timeout=180,
        preexec_fn=preexec,
    )  # fmt: skip


def _url(data_dir: Path) -> str:
    return f"sqlite:///{data_dir / 'enhancer.db'}"


def _new_data_dir(data_dir: Path) -> Engine:
    """A migrated data directory and an engine on it, as the service opens it (WAL, busy timeout)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    upgrade_database(_url(data_dir))
    return make_engine(_url(data_dir))


def _add_records(engine: Engine, count: int, *, tag: str = "r") -> list[str]:
    """`count` succeeded items (item, job, record) in one transaction; the record ids."""
    from sqlalchemy.orm import Session

    ids = []
    when = datetime(2025, 1, 2, tzinfo=UTC)
    with Session(engine) as session, session.begin():
        for _ in range(count):
            item_id, job_id, record_id = new_id(), new_id(), new_id()
            content = f"{tag} story {record_id} " + "text " * 200
            session.add(
                Item(id=item_id, source="news@example.com", subject=f"{tag} {record_id}",
                     sender="news@example.com", date=when, message_id=f"<{item_id}@test>", content=content,
                     content_sha256=record_id, links=[], has_html=False)
            )  # fmt: skip
            session.add(Job(id=job_id, item_id=item_id, status=JobStatus.succeeded, attempts=1))
            session.add(
                Record(id=record_id, job_id=job_id, item_id=item_id, source="news@example.com", date=when,
                       data={"headline": f"{tag} {record_id}", "summary": content[:100]})
            )  # fmt: skip
            ids.append(record_id)
    return ids


def _headlines(database: Path) -> dict[str, str]:
    conn = sqlite3.connect(database)
    try:
        return {
            record_id: headline
            for record_id, headline in conn.execute(
                "SELECT id, json_extract(data, '$.headline') FROM records"
            )
        }
    finally:
        conn.close()


def _check(database: Path, pragma: str) -> list[tuple]:
    conn = sqlite3.connect(database)
    try:
        return conn.execute(f"PRAGMA {pragma}").fetchall()
    finally:
        conn.close()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


class Writer(threading.Thread):
    """Commits a record every few milliseconds until stopped; `committed` grows after each commit."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(daemon=True)
        self.engine = engine
        self.committed: list[str] = []
        self.stopped = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stopped.is_set():
                self.committed.extend(_add_records(self.engine, 2, tag="live"))
                time.sleep(0.002)
        except BaseException as exc:  # surfaced by the test
            self.error = exc


def _no_checkpoints(engine: Engine) -> None:
    """Commits stay in the -wal file (as they do behind a long-running reader): a copy of the .db file
    alone would miss every one of them."""

    @event.listens_for(engine, "connect")
    def _pragma(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        dbapi_conn.execute("PRAGMA wal_autocheckpoint=0")


def test_backup_while_writing_then_restore_into_a_fresh_data_dir(tmp_path: Path) -> None:
    live_dir, fresh_dir = tmp_path / "live", tmp_path / "fresh"
    engine = _new_data_dir(live_dir)
    _no_checkpoints(engine)
    prefilled = _add_records(engine, 400, tag="old")
    writer = Writer(engine)
    writer.start()
    try:
        while len(writer.committed) < 20:
            time.sleep(0.01)
        committed_before = set(prefilled) | set(writer.committed)  # every commit before the backup began
        at_start = len(writer.committed)
        backup = _enhancer("backup", "--data-dir", str(live_dir), str(tmp_path / "backup.db"))
        written_during = len(writer.committed) - at_start
    finally:
        writer.stopped.set()
        writer.join(timeout=30)
    wal_bytes = (live_dir / "enhancer.db-wal").stat().st_size
    engine.dispose()
    assert writer.error is None, writer.error
    assert wal_bytes > 1_000_000, "the records were not in the -wal file"
    assert backup.returncode == 0, backup.stderr
    assert written_during > 0, "the writer did not write while the backup ran"
    backup_file = tmp_path / "backup.db"
    assert "backed up" in backup.stdout and "records" in backup.stdout and "bytes" in backup.stdout
    assert f"{backup_file.stat().st_size:,} bytes" in backup.stdout
    assert not list(tmp_path.glob(".backup.db.*.tmp")), "the temporary file was left behind"

    # The backup is one consistent snapshot: sound, every record with its job and item.
    assert _check(backup_file, "integrity_check") == [("ok",)]
    assert _check(backup_file, "foreign_key_check") == []
    in_backup = _headlines(backup_file)
    assert committed_before <= set(in_backup), f"missing: {len(committed_before - set(in_backup))}"
    assert f"{len(in_backup)} records" in backup.stdout

    restore = _enhancer("restore", "--data-dir", str(fresh_dir), str(backup_file))
    assert restore.returncode == 0, restore.stderr
    assert "restored" in restore.stdout and f"{len(in_backup)} records" in restore.stdout
    restored_db = fresh_dir / "enhancer.db"
    assert _check(restored_db, "integrity_check") == [("ok",)]
    assert _headlines(restored_db) == in_backup  # every record, with its data
    assert committed_before <= set(_headlines(restored_db))
    # Migrated: the service starts on it (the migration is a no-op now) and reads the records.
    migrate = _enhancer("migrate", "--data-dir", str(fresh_dir))
    assert migrate.returncode == 0, migrate.stderr
    restored = make_engine(_url(fresh_dir))
    try:
        with restored.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM jobs").scalar() == len(in_backup)
            assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
    finally:
        restored.dispose()


def test_restore_refuses_a_database_with_records_unless_forced(tmp_path: Path) -> None:
    source_dir, target_dir = tmp_path / "source", tmp_path / "target"
    source_engine, target_engine = _new_data_dir(source_dir), _new_data_dir(target_dir)
    source_ids = set(_add_records(source_engine, 3, tag="source"))
    target_ids = set(_add_records(target_engine, 1, tag="target"))
    source_engine.dispose()
    target_engine.dispose()
    backup_file = tmp_path / "source.db"
    assert _enhancer("backup", "--data-dir", str(source_dir), str(backup_file)).returncode == 0

    refused = _enhancer("restore", "--data-dir", str(target_dir), str(backup_file))
    assert refused.returncode != 0
    assert "already holds 1 records" in refused.stderr and "--force" in refused.stderr, refused.stderr
    assert set(_headlines(target_dir / "enhancer.db")) == target_ids  # untouched

    forced = _enhancer("restore", "--force", "--data-dir", str(target_dir), str(backup_file))
    assert forced.returncode == 0, forced.stderr
    assert set(_headlines(target_dir / "enhancer.db")) == source_ids
    assert _check(target_dir / "enhancer.db", "integrity_check") == [("ok",)]


def test_restore_refuses_files_that_are_not_a_backup(tmp_path: Path) -> None:
    target_dir = tmp_path / "target"
    text_file = tmp_path / "notes.txt"
    text_file.write_text("not a database\n" * 100)
    foreign = tmp_path / "foreign.db"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE things (id INTEGER)")
    conn.commit()
    conn.close()
    truncated = tmp_path / "truncated.db"
    source = _new_data_dir(tmp_path / "source")
    _add_records(source, 50)
    source.dispose()
    assert _enhancer("backup", "--data-dir", str(tmp_path / "source"), str(truncated)).returncode == 0
    with open(truncated, "r+b") as handle:  # the header is intact, the pages after it are gone
        handle.truncate(truncated.stat().st_size // 2)

    cases = [
        (text_file, "is not a SQLite database"),
        (foreign, "not newsletter-enhancer's (no alembic_version table)"),
        (tmp_path / "missing.db", "no file"),
        (truncated, "nothing was restored"),
    ]
    for path, message in cases:
        result = _enhancer("restore", "--data-dir", str(target_dir), str(path))
        assert result.returncode != 0, (path, result.stdout)
        assert message in result.stderr, (path, result.stderr)
        assert "Traceback" not in result.stderr, result.stderr
        db = target_dir / "enhancer.db"
        assert not db.exists() or not _headlines(db), "a bad file was restored"


def test_backup_of_a_missing_database_is_a_clear_error(tmp_path: Path) -> None:
    result = _enhancer("backup", "--data-dir", str(tmp_path / "empty"), str(tmp_path / "b.db"))
    assert result.returncode != 0
    assert "no database at" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "b.db").exists()


@posix_only
def test_data_dir_and_database_files_are_owner_only(tmp_path: Path) -> None:
    # umask 000: without the explicit chmod the directory would be 0777 and the database 0666.
    data_dir = tmp_path / "data"
    assert _enhancer("migrate", "--data-dir", str(data_dir), umask=0).returncode == 0
    assert _mode(data_dir) == 0o700
    assert _mode(data_dir / "models") == 0o700
    assert _mode(data_dir / "enhancer.db") == 0o600
    # The -wal and -shm SQLite makes while the service has the database open.
    old_umask = os.umask(0)
    try:
        engine = make_engine(_url(data_dir))
        with engine.connect() as conn:
            _add_records(engine, 1)
            side_files = [data_dir / "enhancer.db-wal", data_dir / "enhancer.db-shm"]
            assert all(path.exists() for path in side_files)
            assert [_mode(path) for path in side_files] == [0o600, 0o600]
            conn.exec_driver_sql("SELECT 1")
        engine.dispose()
    finally:
        os.umask(old_umask)

    # A data directory left open (an older version, a loose umask) is tightened on start.
    os.chmod(data_dir, 0o755)
    os.chmod(data_dir / "models", 0o777)
    os.chmod(data_dir / "enhancer.db", 0o644)
    assert _enhancer("migrate", "--data-dir", str(data_dir)).returncode == 0
    assert (_mode(data_dir), _mode(data_dir / "models")) == (0o700, 0o700)
    assert _mode(data_dir / "enhancer.db") == 0o600

    # The backup file, and the database a restore creates in a fresh data directory.
    backup_file = tmp_path / "backup.db"
    assert _enhancer("backup", "--data-dir", str(data_dir), str(backup_file), umask=0).returncode == 0
    assert _mode(backup_file) == 0o600
    fresh = tmp_path / "fresh"
    restore = _enhancer("restore", "--data-dir", str(fresh), str(backup_file), umask=0)
    assert restore.returncode == 0, restore.stderr
    assert (_mode(fresh), _mode(fresh / "models"), _mode(fresh / "enhancer.db")) == (0o700, 0o700, 0o600)


def test_postgres_backup_gives_pg_dump_guidance_without_the_password(tmp_path: Path) -> None:
    url = "postgresql://enhancer:s3cret-pw@db.example:5432/enhancer?sslmode=require&password=qp-secret"
    for command in ("backup", "restore"):
        result = _enhancer(
            command, "--data-dir", str(tmp_path / "data"), "nightly.dump", env={"DATABASE_URL": url}
        )
        output = result.stdout + result.stderr
        assert result.returncode != 0, output
        assert "s3cret-pw" not in output and "qp-secret" not in output, output
        assert "pg_dump --format=custom --file=nightly.dump" in output, output
        assert "pg_restore --clean --if-exists --no-owner" in output, output
        assert "postgresql://enhancer@db.example:5432/enhancer?sslmode=require" in output, output
        assert "Traceback" not in output
    assert not (tmp_path / "data" / "enhancer.db").exists()
