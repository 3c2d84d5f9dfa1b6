"""Indexing one stored record: its embedding, canonical topics, story, full-text row and events.

The worker calls `index_record` right after a record is stored, in a transaction of its own: a
crash between the two leaves a record with no `indexed_at`, which `pending_records` hands to the
next housekeeping pass, so nothing is lost and the record itself is never held back. A reviewer's
correction clears `indexed_at`, and the record is indexed again from the corrected fields.

The embeddings are the slow part (MiniLM, 50-300 ms a record on 2 busy cores), and on SQLite a
write transaction holds the database's one write lock: the API's submissions waited behind it
(p99 0.5-0.7 s at 100-200 POST/s). So the worker computes them first, outside the transaction
(`texts_to_embed` + `PrecomputedVectors`), and the transaction only looks them up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.contract.derived import html_to_text
from app.knowledge import search, webhooks
from app.knowledge.embeddings import DIMENSIONS, to_bytes
from app.knowledge.stories import assign_story, embedding_text
from app.knowledge.story_query import get_story_view, record_event
from app.knowledge.topics import (
    Vocabulary,
    canonical_topic_ids,
    record_topic_names,
    set_record_topics,
    topic_display_names,
)
from app.models import Record, utcnow
from app.record_query import effective_metadata

BODY_CHARS = 20_000  # of the item's text in the full-text index


class Embedder(Protocol):
    def vectors(self, texts: list[str]) -> Any: ...


class PrecomputedVectors:
    """An Embedder answering from vectors computed beforehand, in one batch; a text it was not given
    (the record corrected between the read and the write) is embedded by `embedder` then."""

    def __init__(self, embedder: Embedder, texts: Sequence[str]) -> None:
        unique = list(dict.fromkeys(texts))
        self._embedder = embedder
        self._vectors = dict(zip(unique, embedder.vectors(unique), strict=True)) if unique else {}

    def vectors(self, texts: list[str]) -> Any:
        import numpy as np

        missing = [text for text in dict.fromkeys(texts) if text not in self._vectors]
        if missing:
            self._vectors.update(zip(missing, self._embedder.vectors(missing), strict=True))
        if not texts:
            return np.zeros((0, DIMENSIONS), dtype=np.float32)
        return np.stack([self._vectors[text] for text in texts])


def _fields_and_text(record: Record) -> tuple[dict[str, Any], str]:
    """What indexing reads of a record: its fields as corrected, and its item's plain text."""
    return effective_metadata(record.data, record.corrected_data), html_to_text(
        record.item.content, record.item.has_html
    )


def texts_to_embed(record: Record) -> list[str]:
    """Every text `index_record` embeds for this record: its embedding text, then its topics' names."""
    metadata, text = _fields_and_text(record)
    return [embedding_text(metadata, text), *topic_display_names(metadata.get("key_topics") or [])]


@dataclass(frozen=True)
class Indexed:
    record_id: str
    story_id: str
    story_changed: bool
    delivery_ids: list[str]


def index_record(
    session: Session, *, record: Record, embedder: Embedder, vocabulary: Vocabulary | None = None
) -> Indexed:
    metadata, text = _fields_and_text(record)
    first_time = record.story_id is None
    record.embedding = to_bytes(embedder.vectors([embedding_text(metadata, text)])[0])
    topic_ids = canonical_topic_ids(
        session,
        raw_topics=list(metadata.get("key_topics") or []),
        embed=embedder.vectors,
        vocabulary=vocabulary,
    )
    set_record_topics(session, record_id=record.id, topic_ids=topic_ids)
    session.flush()
    story_id, changed = assign_story(session, record=record)
    topics = record_topic_names(session, record_ids=[record.id])[record.id]
    search.index_document(
        session,
        record_id=record.id,
        headline=str(metadata.get("headline") or ""),
        summary=str(metadata.get("summary") or ""),
        topics=[*topics, *(str(t) for t in metadata.get("key_topics") or [])],
        entities=[str(e) for e in metadata.get("entities") or []],
        body=text[:BODY_CHARS],
    )
    record.indexed_at = utcnow()
    session.flush()
    deliveries: list[str] = []
    story = get_story_view(session, story_id=story_id)
    if story is not None:
        if first_time:
            view = next(r for r in story.records if r.id == record.id)
            deliveries += webhooks.queue_event(
                session, event_type="record.created", data=record_event(view, story_id)
            )
        deliveries += webhooks.queue_event(session, event_type="story.updated", data=story.as_json())
    return Indexed(record.id, story_id, changed, deliveries)


def pending_records(session: Session, *, older_than: timedelta, limit: int) -> list[str]:
    """Records stored but not (or no longer) indexed, oldest first: housekeeping's backlog."""
    cutoff = utcnow() - older_than
    return list(
        session.scalars(
            select(Record.id)
            .where(Record.indexed_at.is_(None), Record.created_at <= cutoff)
            .order_by(Record.created_at)
            .limit(limit)
        )
    )


def forget_index(session: Session, *, record_ids: Sequence[str]) -> None:
    """Mark records for re-indexing (after a correction changed the fields the index reads)."""
    for record_id in record_ids:
        record = session.get(Record, record_id)
        if record is not None:
            record.indexed_at = None
