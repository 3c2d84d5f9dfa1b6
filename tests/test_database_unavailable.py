"""A locked or full database: the API answers 503 with Retry-After (never a 500), and a worker whose
result the database refuses puts its job back at once with the real reason (issue 17 item 4).

"Full" is a real full filesystem: the data dir is a small tmpfs mounted for the test (needs root,
which CI has; elsewhere these cases are skipped and say why)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from app.core.db import read_session_scope, session_scope
from app.core.db_errors import database_unavailable
from app.main import create_app
from app.models import Job
from tests.conftest import API_HEADERS, REDIS_URL, apply_env, wait_for_jobs


def _item(seed_items: list[dict]) -> dict:
    """A seed item made new (its own message id): every POST creates one job."""
    return {**seed_items[0], "message_id": f"<{uuid.uuid4().hex}@test>"}


def _job_count() -> int:
    with session_scope() as session:
        return session.scalar(select(func.count()).select_from(Job)) or 0


@contextlib.contextmanager
def _write_lock(db_file: Path) -> Iterator[None]:
    """Another writer holding SQLite's write lock."""
    holder = sqlite3.connect(db_file, isolation_level=None, timeout=30)
    holder.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        holder.execute("ROLLBACK")
        holder.close()


@contextlib.contextmanager
def _small_filesystem(path: Path, size_mb: int = 24) -> Iterator[Path]:
    if os.name != "posix" or os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI has it)")
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0700", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(directory: Path) -> Path:
    """Write a file until the filesystem says it is full (to the byte: small writes fit in a last block)."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 20, 4096, 1):
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * size):
                    pass
    finally:
        os.close(fd)
    return filler


def _logged(worker, text: str) -> bool:  # type: ignore[no-untyped-def]
    worker.log.flush()
    return text in worker.log_path.read_text(errors="replace")


def _empty_wal(db_file: Path) -> None:
    """Checkpoint and truncate the WAL to zero bytes, so that the next commit has to grow it."""
    with contextlib.closing(sqlite3.connect(db_file, timeout=30)) as conn:
        for _ in range(100):
            busy, _log, _done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if not busy:
                return
            time.sleep(0.05)
    raise AssertionError("the WAL could not be truncated")


def test_the_classifier_names_locked_full_and_disk_errors_and_nothing_else() -> None:
    def sqlite_error(message: str) -> OperationalError:
        return OperationalError("INSERT ...", {}, sqlite3.OperationalError(message))

    assert database_unavailable(sqlite_error("database is locked")).reason == "locked"  # type: ignore[union-attr]
    assert database_unavailable(sqlite_error("database or disk is full")).reason == "full"  # type: ignore[union-attr]
    assert database_unavailable(sqlite_error("disk I/O error")).reason == "disk"  # type: ignore[union-attr]
    assert database_unavailable(sqlite_error("no such table: jobs")) is None  # a bug stays a 500


def test_a_database_locked_past_the_busy_timeout_answers_503_with_retry_after(
    service_env, monkeypatch, seed_items
) -> None:
    apply_env(monkeypatch, service_env, ENHANCER_SQLITE_BUSY_TIMEOUT_SECONDS="0.5")
    db_file = Path(service_env["ENHANCER_DATA_DIR"]) / "enhancer.db"
    with TestClient(create_app(), headers=API_HEADERS, raise_server_exceptions=False) as client:
        before = _job_count()
        with _write_lock(db_file):
            locked = client.post("/v1/enhance", json=_item(seed_items))
        assert locked.status_code == 503, locked.text
        assert locked.headers["Retry-After"] == "2"
        assert "locked" in locked.json()["message"]
        assert locked.json()["reason"] == "database_locked"
        assert _job_count() == before  # nothing half-written
        after = client.post("/v1/enhance", json=_item(seed_items))
        assert after.status_code == 202, after.text  # the lock gone, the same request works
        assert _job_count() == before + 1


def test_a_full_disk_answers_503_and_the_same_request_works_once_there_is_room(
    service_env, monkeypatch, tmp_path, seed_items
) -> None:
    with _small_filesystem(tmp_path / "small") as data_dir:
        apply_env(monkeypatch, service_env, ENHANCER_DATA_DIR=str(data_dir / "data"))
        with TestClient(create_app(), headers=API_HEADERS, raise_server_exceptions=False) as client:
            assert client.post("/v1/enhance", json=_item(seed_items)).status_code == 202
            before = _job_count()
            filler = _fill(data_dir)
            full = [client.post("/v1/enhance", json=_item(seed_items)) for _ in range(5)]
            filler.unlink()
            assert {r.status_code for r in full} <= {503}, [r.text for r in full]
            assert full[0].headers["Retry-After"] == "60"
            assert "disk is full" in full[0].json()["message"]
            assert _job_count() == before  # no partial write
            after = client.post("/v1/enhance", json=_item(seed_items))
            assert after.status_code == 202, after.text
            assert _job_count() == before + 1


def _when_running(job_id: str, action, timeout: float = 60) -> threading.Thread:  # type: ignore[no-untyped-def]
    """Run `action` the moment the worker has claimed the job (before it can store a result)."""

    def watch() -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with read_session_scope() as session:  # a reader: it must not queue on the write lock
                status = session.scalar(select(Job.status).where(Job.id == job_id))
            if status == "running":
                action()
                return
            time.sleep(0.02)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_a_worker_whose_result_meets_a_locked_database_requeues_the_job_with_the_reason(
    service_env, monkeypatch, start_worker, seed_items
) -> None:
    apply_env(monkeypatch, service_env, ENHANCER_SQLITE_BUSY_TIMEOUT_SECONDS="1", ENHANCER_MAX_BATCH="1")
    db_file = Path(service_env["ENHANCER_DATA_DIR"]) / "enhancer.db"
    worker = start_worker(service_env)
    with TestClient(create_app(), headers=API_HEADERS) as client:
        job_id = client.post("/v1/enhance", json=_item(seed_items)).json()["jobs"][0]["id"]

        def hold_lock() -> None:  # through the model's load and generation, until a store is refused
            with _write_lock(db_file):
                deadline = time.monotonic() + 90
                while not _logged(worker, "not stored") and time.monotonic() < deadline:
                    time.sleep(0.1)
                time.sleep(1.5)  # and its first try at putting the job back

        _when_running(job_id, hold_lock).join(timeout=90)
        (job,) = wait_for_jobs(client, [job_id], timeout=120)
    assert job["status"] == "succeeded", job
    assert job["attempts"] == 2, job  # put back at once, not after the 600 s lease
    worker.log.flush()
    output = worker.log_path.read_text(errors="replace")  # the whole log: tracebacks come between
    assert f"job {job_id} not stored, database unavailable: the database is busy" in output
    assert f"job {job_id} re-queued" in output


def test_a_worker_whose_result_meets_a_full_disk_fails_the_job_with_the_reason(
    service_env, monkeypatch, tmp_path, start_worker, seed_items
) -> None:
    with _small_filesystem(tmp_path / "small") as data_dir:
        apply_env(
            monkeypatch,
            service_env,
            ENHANCER_DATA_DIR=str(data_dir / "data"),
            BROKER_URL=f"{REDIS_URL}/14",  # the broker elsewhere: the full disk is the database's
            ENHANCER_JOB_MAX_ATTEMPTS="1",
            ENHANCER_MAX_BATCH="1",
        )
        worker = start_worker(service_env)
        fillers: list[Path] = []
        with TestClient(create_app(), headers=API_HEADERS) as client:
            job_id = client.post("/v1/enhance", json=_item(seed_items)).json()["jobs"][0]["id"]
            db_file = data_dir / "data" / "enhancer.db"

            def fill_disk() -> None:
                _empty_wal(db_file)  # else the next commits may fit in WAL pages already on disk
                fillers.append(_fill(data_dir))

            _when_running(job_id, fill_disk).join(timeout=90)
            deadline = time.monotonic() + 90  # the worker loads the model, generates, meets the full disk
            while not _logged(worker, "not stored") and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(1)  # and its first try at recording why fails too
            fillers[0].unlink()
            (job,) = wait_for_jobs(client, [job_id], timeout=120)
        assert job["status"] == "failed", job
        assert job["error"].startswith("database unavailable: the database's disk is full"), job
        assert job["record_id"] is None
        assert worker.process.poll() is None  # the worker goes on
        worker.stop()


def test_commits_that_answer_a_submission_are_synced_to_disk(service_env, monkeypatch) -> None:
    """synchronous=FULL: WAL commits are fsynced before the 202 (NORMAL may lose them on a power cut)."""
    from app.core.db import get_engine

    def synchronous() -> int:
        with get_engine().connect() as conn:
            return conn.exec_driver_sql("PRAGMA synchronous").scalar_one()

    assert synchronous() == 2  # FULL, the default
    apply_env(monkeypatch, service_env, ENHANCER_SQLITE_SYNCHRONOUS="NORMAL")  # the documented opt-out
    assert synchronous() == 1
