"""Workers starting together on a new embedded broker: every one of them gets its queue."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DECLARE = """
import sys, time
from worker.celery_app import celery_app, declare_broker_queue
start, attempts = float(sys.argv[1]), int(sys.argv[2])
time.sleep(max(0.0, start - time.time()))  # every process declares at the same instant
declare_broker_queue(celery_app, attempts=attempts)
"""


def _declare_at_once(data_dir: Path, processes: int, attempts: int) -> list[subprocess.CompletedProcess]:
    env = {**os.environ, "ENHANCER_DATA_DIR": str(data_dir)}
    env.pop("BROKER_URL", None)
    start = time.time() + 8  # after every interpreter has imported celery
    running = [
        subprocess.Popen(
            [sys.executable, "-c", DECLARE, str(start), str(attempts)],
            env=env,
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    return [subprocess.CompletedProcess(p.args, p.wait(60), *p.communicate()) for p in running]


def test_workers_declaring_the_queue_at_once_all_succeed(tmp_path: Path) -> None:
    results = _declare_at_once(tmp_path, processes=4, attempts=10)
    assert [r.returncode for r in results] == [0] * 4, [r.stderr[-2000:] for r in results]
    with sqlite3.connect(tmp_path / "broker.db") as conn:
        assert conn.execute("SELECT name FROM kombu_queue").fetchall() == [("enhance",)]


def test_a_lost_race_for_the_queue_row_is_retried(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The loser of the race inserts a row that another process committed first: the insert fails
    (IntegrityError, which kombu does not catch) and the next attempt finds the row."""
    import pytest
    from kombu.transport.sqlalchemy import Channel
    from sqlalchemy.exc import IntegrityError

    from tests.conftest import apply_env
    from worker.celery_app import declare_broker_queue, make_celery

    apply_env(monkeypatch, {}, ENHANCER_DATA_DIR=str(tmp_path), BROKER_URL=None)
    app = make_celery()
    declare_broker_queue(app)  # the winner's row
    original = Channel._get_or_create
    lost: list[str] = []

    def looked_before_the_row_existed(self, queue):  # type: ignore[no-untyped-def]
        if len(lost) < 2:
            lost.append(queue)
            self.session.add(self.queue_cls(queue))
            try:
                self.session.commit()  # what kombu does after a lookup that found nothing
            finally:
                self.session.rollback()
        return original(self, queue)

    monkeypatch.setattr(Channel, "_get_or_create", looked_before_the_row_existed)
    with pytest.raises(IntegrityError):
        declare_broker_queue(app, attempts=1)
    declare_broker_queue(app)  # loses once more, then finds the row
    assert lost == ["enhance", "enhance"]


def test_a_lost_race_for_the_broker_tables_is_retried(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The loser of the race runs CREATE TABLE after the winner did: SQLite says "table already
    exists" (an OperationalError) and kombu caches no engine; the next attempt finds the tables."""
    from kombu.transport.sqlalchemy import Channel, metadata

    from tests.conftest import apply_env
    from worker.celery_app import declare_broker_queue, make_celery

    apply_env(monkeypatch, {}, ENHANCER_DATA_DIR=str(tmp_path), BROKER_URL=None)
    app = make_celery()
    original = metadata.create_all
    lost: list[bool] = []

    def created_by_another_process_first(bind, **kwargs):  # type: ignore[no-untyped-def]
        if not lost:
            lost.append(True)
            original(bind)  # the winner's tables
            original(bind, checkfirst=False)  # the loser's CREATE TABLE, checked too early
        return original(bind, **kwargs)

    monkeypatch.setattr(metadata, "create_all", created_by_another_process_first)
    monkeypatch.setattr(Channel, "_engines", {})
    declare_broker_queue(app)  # loses the race once, then finds the tables
    assert lost == [True]
    with sqlite3.connect(tmp_path / "broker.db") as conn:
        assert conn.execute("SELECT name FROM kombu_queue").fetchall() == [("enhance",)]


def test_the_embedded_broker_file_is_in_wal_mode_and_keeps_messages(tmp_path: Path) -> None:
    """Its messages are appended to a write-ahead log (no journal file per message), and a message
    sent by one process is there for the next connection to read."""
    code = "from app.core.broker import enqueue_jobs\nassert enqueue_jobs(['job-1', 'job-2'])\n"
    env = {**os.environ, "ENHANCER_DATA_DIR": str(tmp_path)}
    env.pop("BROKER_URL", None)
    subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO_ROOT, check=True, timeout=120)
    with sqlite3.connect(tmp_path / "broker.db") as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        payloads = [row[0] for row in connection.execute("SELECT payload FROM kombu_message")]
    assert len(payloads) == 1 and "job-1" in payloads[0] and "job-2" in payloads[0]
    assert not (tmp_path / "broker.db-journal").exists()
