"""Read-only work never takes the SQLite write lock: /metrics, the review list, export and record
reads answer while another process holds it (they used BEGIN IMMEDIATE and queued behind it)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest


@pytest.fixture
def locked_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    from app.core.config import get_settings
    from app.core.db import reset_caches
    from tests.export_helpers import insert_records

    monkeypatch.setenv("ENHANCER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    reset_caches()
    ids = insert_records(3)
    path = get_settings().sqlalchemy_url.split("///", 1)[1]
    writer = sqlite3.connect(path, timeout=0)
    writer.execute("BEGIN IMMEDIATE")  # another process mid-write (a worker storing a record)
    yield ids
    writer.rollback()
    writer.close()
    reset_caches()


def _quick(call, limit: float = 3.0):  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    result = call()
    assert time.perf_counter() - started < limit, "waited for the write lock"
    return result


def test_reads_do_not_wait_for_a_writer(locked_database: list[str]) -> None:
    from prometheus_client import generate_latest
    from prometheus_client.registry import CollectorRegistry

    from app.api.metrics import DatabaseCollector
    from app.core.db import read_session_scope
    from app.record_query import RecordFilter, get_row, iter_records, page_records

    record_id = locked_database[0]
    assert _quick(lambda: get_row(record_id)) is not None
    with read_session_scope() as session:
        assert _quick(lambda: page_records(session, filters=RecordFilter(topic="x"), limit=10)).total == 0
        assert _quick(lambda: page_records(session, filters=RecordFilter(), limit=10)).total == 3
    assert len(_quick(lambda: list(iter_records(RecordFilter())))) == 3
    registry = CollectorRegistry()
    registry.register(DatabaseCollector())
    text = _quick(lambda: generate_latest(registry).decode())
    assert "enhancer_metrics_database_up 1.0" in text
