"""The worker indexes the records it stores (app/knowledge/indexer.py): after each batch, and the
backlog a crash or a correction left, on the housekeeping timer.

The embedder (all-MiniLM-L6-v2, 90 MB) loads once per worker process, on the first record.
Indexing never fails a job: the record is stored first, and one that cannot be indexed now is
tried again by the next pass.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta

from sqlalchemy.exc import IntegrityError

from app.core import broker
from app.core.db import read_session_scope, session_scope
from app.knowledge.embeddings import MiniLM, get_minilm
from app.knowledge.indexer import Indexed, PrecomputedVectors, index_record, pending_records, texts_to_embed
from app.models import Record

log = logging.getLogger("worker.index")
_lock = threading.Lock()  # the housekeeping thread and the task may index at once
BACKLOG_AFTER = timedelta(seconds=30)  # a record this old and still unindexed was missed


def embedder() -> MiniLM:
    with _lock:
        return get_minilm()


def _index_one(record_id: str, attempts: int = 3) -> Indexed | None:
    model = embedder()
    with read_session_scope() as session:
        record = session.get(Record, record_id)
        if record is None:
            return None
        texts = texts_to_embed(record)
    with _lock:  # the vectors before the write transaction (app/knowledge/indexer.py says why)
        vectors = PrecomputedVectors(model, texts)
    for attempt in range(1, attempts + 1):
        try:
            with _lock, session_scope() as session:
                record = session.get(Record, record_id)
                return None if record is None else index_record(session, record=record, embedder=vectors)
        except IntegrityError:
            # Another worker added the same new topic (or story row) first: look again with theirs.
            if attempt == attempts:
                raise
    return None


def index_records(record_ids: list[str]) -> int:
    """Index each record in its own transaction; returns how many were indexed."""
    done = 0
    for record_id in record_ids:
        started = time.perf_counter()
        try:
            indexed = _index_one(record_id)
            if indexed is None:
                continue
        except Exception:
            log.warning("record %s not indexed yet; the next pass tries again", record_id, exc_info=True)
            continue
        done += 1
        log.info(
            "record %s indexed in %.0f ms (story %s%s)",
            record_id,
            (time.perf_counter() - started) * 1000,
            indexed.story_id,
            ", joined" if indexed.story_changed else "",
        )
        if indexed.delivery_ids:
            broker.enqueue_deliveries(indexed.delivery_ids)
    return done


def index_backlog(limit: int = 100) -> int:
    with session_scope() as session:
        record_ids = pending_records(session, older_than=BACKLOG_AFTER, limit=limit)
    return index_records(record_ids) if record_ids else 0
