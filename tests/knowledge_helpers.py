"""Records built by hand and indexed through the real knowledge layer (real MiniLM, real database)."""

from __future__ import annotations

from datetime import UTC, datetime

from app.contract import NewsMetadata, derive_fields
from app.contract.derived import strip_tracking
from app.core.db import session_scope
from app.crud import content_sha256
from app.knowledge.embeddings import get_minilm
from app.knowledge.indexer import Indexed, index_record
from app.models import Item, Job, JobStatus, Record, new_id


def add_record(
    *,
    source: str,
    headline: str,
    summary: str,
    url: str | None = None,
    entities: list[str] | None = None,
    key_topics: list[str] | None = None,
    date: str | datetime = "2025-10-16T08:00:00Z",
    relevance: int = 5,
    content: str | None = None,
    index: bool = True,
) -> str:
    """Store one record (item, succeeded job, record) and index it; returns the record id."""
    when = date if isinstance(date, datetime) else datetime.fromisoformat(date.replace("Z", "+00:00"))
    when = when.astimezone(UTC)
    content = content or f"{headline}. {summary}"
    derived = derive_fields(content=content, links=[url] if url else [])
    metadata = NewsMetadata(
        summary=summary,
        key_topics=key_topics or ["AI"],
        entities=entities or [],
        categories=["product_launch"],
        sentiment="neutral",
        urgency_level="low",
        relevance_score=relevance,
        action_items=[],
        source=source,
        headline=headline,
        date=when,
        url=strip_tracking(url) if url else None,  # as the pipeline stores it
        links=derived.links,
        content_length=len(content),
        link_count=derived.link_count,
        word_count=len(content.split()),
        reading_time_minutes=1,
        has_html=False,
    )
    item_id, job_id, record_id = new_id(), new_id(), new_id()
    with session_scope() as session:
        session.add(
            Item(
                id=item_id, source=source, subject=headline, sender="news@example.com", date=when,
                message_id=f"<{item_id}@test>", content=content, content_sha256=content_sha256(content),
                url=url, links=derived.links, has_html=False,
            )
        )  # fmt: skip
        session.add(Job(id=job_id, item_id=item_id, status=JobStatus.succeeded, attempts=1))
        session.add(
            Record(id=record_id, job_id=job_id, item_id=item_id, source=source, date=when,
                   data=metadata.model_dump(mode="json"))
        )  # fmt: skip
    if index:
        index_now(record_id)
    return record_id


def index_now(record_id: str) -> Indexed:
    with session_scope() as session:
        record = session.get(Record, record_id)
        assert record is not None
        return index_record(session, record=record, embedder=get_minilm())


def record_story(record_id: str) -> str | None:
    with session_scope() as session:
        record = session.get(Record, record_id)
        assert record is not None
        return record.story_id
