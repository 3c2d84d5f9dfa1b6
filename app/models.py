"""SQLAlchemy models: e-mails, items, jobs, records, model versions, worker heartbeats, and the
knowledge layer over the records (stories, topics, feeds, webhooks)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return uuid.uuid4().hex


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: DateTime(timezone=True),
        dict[str, Any]: JSON,
        list[str]: JSON,
    }


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"


class Email(Base):
    """A raw newsletter e-mail posted to /v1/emails: what it was and how it was split into items."""

    __tablename__ = "emails"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    # "mid:<Message-ID>", or "sha256:<hex of the bytes>" for a message without one: posting it again
    # finds this row.
    dedup_key: Mapped[str] = mapped_column(String(600), unique=True)
    message_id: Mapped[str | None] = mapped_column(String(500))
    sender: Mapped[str] = mapped_column(String(500))
    subject: Mapped[str] = mapped_column(Text)
    date: Mapped[datetime | None] = mapped_column()
    list_id: Mapped[str | None] = mapped_column(String(500))
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    splitter: Mapped[str] = mapped_column(String(50))
    story_count: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Item(Base):
    """A news item as the ingester sent it (kept verbatim: the source of truth for re-runs)."""

    __tablename__ = "items"
    __table_args__ = (UniqueConstraint("message_id", "content_sha256", name="uq_items_message_content"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    source: Mapped[str] = mapped_column(String(200), index=True)
    subject: Mapped[str] = mapped_column(Text)
    sender: Mapped[str] = mapped_column(String(500))
    date: Mapped[datetime] = mapped_column(index=True)
    message_id: Mapped[str] = mapped_column(String(500))
    content: Mapped[str] = mapped_column(Text)
    content_sha256: Mapped[str] = mapped_column(String(64))
    url: Mapped[str | None] = mapped_column(Text)
    links: Mapped[list[str]] = mapped_column(default=list)
    has_html: Mapped[bool | None] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Set for items cut out of an e-mail posted to /v1/emails.
    email_id: Mapped[str | None] = mapped_column(ForeignKey("emails.id"), index=True)
    section: Mapped[str | None] = mapped_column(String(500))
    position: Mapped[int | None] = mapped_column(Integer)
    sponsored: Mapped[bool] = mapped_column(Boolean, default=False)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_status_lease", "status", "lease_until"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    item_id: Mapped[str] = mapped_column(ForeignKey("items.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.queued)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    worker: Mapped[str | None] = mapped_column(String(200))
    model_version_id: Mapped[str | None] = mapped_column(String(64))
    idempotency_key: Mapped[str | None] = mapped_column(String(200), index=True)
    # The X-Request-ID of the request that created the job (app/api/request_ids.py): on the worker's
    # log lines about it. A resubmission mapped to this job keeps the first one.
    request_id: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
    lease_until: Mapped[datetime | None] = mapped_column()

    item: Mapped[Item] = relationship(lazy="joined")


class Record(Base):
    """Validated metadata for one item: exactly one per succeeded job."""

    __tablename__ = "records"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), unique=True)
    item_id: Mapped[str] = mapped_column(ForeignKey("items.id"), index=True)
    source: Mapped[str] = mapped_column(String(200), index=True)
    date: Mapped[datetime] = mapped_column(index=True)
    data: Mapped[dict[str, Any]] = mapped_column()
    model_version_id: Mapped[str | None] = mapped_column(String(64))
    generation_seconds: Mapped[float | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    reviewed: Mapped[bool] = mapped_column(Boolean, default=False)
    corrected_data: Mapped[dict[str, Any] | None] = mapped_column()
    reviewed_at: Mapped[datetime | None] = mapped_column()
    # The knowledge layer (app/knowledge): the worker indexes a record after storing it. A record
    # with no indexed_at is picked up again by housekeeping, so a crash in between loses nothing.
    story_id: Mapped[str | None] = mapped_column(ForeignKey("stories.id"), index=True)
    # A person put this record in its story (split out, or merged): grouping never moves it again.
    story_pinned: Mapped[bool] = mapped_column(Boolean, default=False)
    # all-MiniLM-L6-v2 of headline + summary: 384 float32, unit length (app/knowledge/embeddings.py).
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary)
    indexed_at: Mapped[datetime | None] = mapped_column(index=True)

    item: Mapped[Item] = relationship(lazy="joined")


class ModelVersion(Base):
    __tablename__ = "model_versions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    path: Mapped[str] = mapped_column(Text)
    base_model: Mapped[str] = mapped_column(Text)
    backend: Mapped[str] = mapped_column(String(32), default="openvino")
    precision: Mapped[str] = mapped_column(String(16), default="int8")
    manifest: Mapped[dict[str, Any]] = mapped_column(default=dict)
    active: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WorkerHeartbeat(Base):
    """Workers write here every few seconds; /readyz and /metrics read it (any broker)."""

    __tablename__ = "worker_heartbeats"

    hostname: Mapped[str] = mapped_column(String(200), primary_key=True)
    last_seen: Mapped[datetime] = mapped_column(default=utcnow)
    model_version_id: Mapped[str | None] = mapped_column(String(64))
    jobs_done: Mapped[int] = mapped_column(Integer, default=0)
    stats: Mapped[dict[str, Any] | None] = mapped_column()  # worker/stats.py snapshot, for /metrics


class IdempotencyKey(Base):
    """An `Idempotency-Key` header seen on POST /v1/enhance: a retry with it gets the same jobs."""

    __tablename__ = "idempotency_keys"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    request_sha256: Mapped[str] = mapped_column(String(64))
    job_ids: Mapped[list[str]] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class ReviewSession(Base):
    """A signed-in review-page browser: the cookie holds a random token, this table its sha256."""

    __tablename__ = "review_sessions"

    token_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class Story(Base):
    """One event as several newsletters told it: the records that point here (records.story_id)."""

    __tablename__ = "stories"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    title: Mapped[str] = mapped_column(Text)
    # The canonical link its records share, when they share one (the first grouping rule).
    canonical_link: Mapped[str | None] = mapped_column(Text)
    first_date: Mapped[datetime] = mapped_column(index=True)
    last_date: Mapped[datetime] = mapped_column(index=True)
    record_count: Mapped[int] = mapped_column(Integer, default=0)
    max_relevance: Mapped[int | None] = mapped_column(Integer)
    # Set when a person merged this story into another: its old URL leads there.
    merged_into_id: Mapped[str | None] = mapped_column(String(32), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class Topic(Base):
    """A vocabulary entry: generated key_topics map onto these (app/knowledge/topics.py)."""

    __tablename__ = "topics"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(100))
    key: Mapped[str] = mapped_column(String(100), unique=True)
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TopicAlias(Base):
    """A normalised spelling that maps to a topic: every raw topic seen, and names before a rename."""

    __tablename__ = "topic_aliases"

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    topic_id: Mapped[str] = mapped_column(ForeignKey("topics.id", ondelete="CASCADE"), index=True)


class RecordTopic(Base):
    """A record's canonical topics, in the order the model gave them."""

    __tablename__ = "record_topics"

    record_id: Mapped[str] = mapped_column(ForeignKey("records.id", ondelete="CASCADE"), primary_key=True)
    topic_id: Mapped[str] = mapped_column(
        ForeignKey("topics.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    position: Mapped[int] = mapped_column(Integer, default=0)


class FeedToken(Base):
    """An Atom feed's reader: the token in its URL reads that one feed and nothing else."""

    __tablename__ = "feed_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    filters: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column()


class Webhook(Base):
    __tablename__ = "webhooks"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    url: Mapped[str] = mapped_column(Text)
    events: Mapped[list[str]] = mapped_column()
    # Standard Webhooks signing secret ("whsec_" + base64): the receiver holds the same one.
    secret: Mapped[str] = mapped_column(String(100))
    description: Mapped[str | None] = mapped_column(String(500))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DeliveryStatus(StrEnum):
    pending = "pending"
    succeeded = "succeeded"
    failed = "failed"


class WebhookDelivery(Base):
    """One event for one webhook: the source of truth for its retries (the broker only carries it)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_status_next", "status", "next_attempt_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    webhook_id: Mapped[str] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"), index=True)
    event_type: Mapped[str] = mapped_column(String(50))
    payload: Mapped[dict[str, Any]] = mapped_column()
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.pending)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column()
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column()
