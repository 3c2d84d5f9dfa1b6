"""Filtered record reads that scale: keyset-paginated chunks, each in its own short session.

Exports and the review page read through here. Each chunk is one short read transaction (on
SQLite every transaction takes the write lock, so one long cursor would stall the workers), and
rows leave as plain `RecordRow` snapshots, so memory stays bounded by the chunk size.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice
from typing import Any, Literal

from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.orm import Session, joinedload

from app.contract import GeneratedMetadata
from app.core.db import get_read_sessionmaker
from app.crud import as_utc
from app.models import Item, Record

DEFAULT_CHUNK = 100  # rows per query: bounds memory (about 30 kB a row with its item)

Key = tuple[datetime, str]  # (record date, record id): a total order over records


@dataclass(frozen=True)
class RecordFilter:
    """What the API, the CLI and the review page filter on. Topic and entity match case-insensitively
    against the effective metadata (a reviewer's correction wins over the model output)."""

    since: datetime | None = None
    until: datetime | None = None
    source: str | None = None
    topic: str | None = None
    entity: str | None = None
    reviewed: bool | None = None
    created_until: datetime | None = None  # snapshot bound: records created later are left out

    def __post_init__(self) -> None:
        for name in ("since", "until", "created_until"):
            object.__setattr__(self, name, as_utc(getattr(self, name)))
        for name in ("source", "topic", "entity"):
            value = getattr(self, name)
            if isinstance(value, str) and "\x00" in value:  # PostgreSQL cannot compare text with NUL
                raise ValueError(f"{name} must not contain NUL characters")
            object.__setattr__(self, name, value.strip() or None if isinstance(value, str) else value)
        if self.since and self.until and self.since >= self.until:
            raise ValueError("since must be before until")

    def describe(self) -> str:
        parts = [
            f"{name}={value.isoformat() if isinstance(value, datetime) else value}"
            for name in ("since", "until", "source", "topic", "entity", "reviewed")
            if (value := getattr(self, name)) is not None
        ]
        return ", ".join(parts) or "none"


@dataclass(frozen=True)
class RecordRow:
    """A detached snapshot of a record and its item."""

    id: str
    job_id: str
    item_id: str
    source: str
    date: datetime
    created_at: datetime
    model_version_id: str | None
    generation_seconds: float | None
    reviewed: bool
    reviewed_at: datetime | None
    data: dict[str, Any]
    corrected_data: dict[str, Any] | None
    subject: str
    sender: str
    message_id: str
    item_date: datetime
    url: str | None
    links: list[str] = field(default_factory=list)
    has_html: bool | None = None
    content: str | None = None  # None when read with with_content=False

    @property
    def key(self) -> Key:
        return (self.date, self.id)

    @property
    def metadata(self) -> dict[str, Any]:
        return effective_metadata(self.data, self.corrected_data)

    @classmethod
    def from_record(cls, record: Record, *, with_content: bool = True) -> RecordRow:
        item = record.item
        return cls(
            id=record.id,
            job_id=record.job_id,
            item_id=record.item_id,
            source=record.source,
            date=as_utc(record.date),  # type: ignore[arg-type]
            created_at=as_utc(record.created_at),  # type: ignore[arg-type]
            model_version_id=record.model_version_id,
            generation_seconds=record.generation_seconds,
            reviewed=bool(record.reviewed),
            reviewed_at=as_utc(record.reviewed_at),
            data=dict(record.data),
            corrected_data=dict(record.corrected_data) if record.corrected_data else None,
            subject=item.subject,
            sender=item.sender,
            message_id=item.message_id,
            item_date=as_utc(item.date),  # type: ignore[arg-type]
            url=item.url,
            links=list(item.links or []),
            has_html=item.has_html,
            content=item.content if with_content else None,
        )


def effective_metadata(data: dict[str, Any], corrected: dict[str, Any] | None) -> dict[str, Any]:
    """The model output with a reviewer's corrected generated fields laid over it."""
    if not corrected:
        return dict(data)
    return {**data, **{name: corrected[name] for name in GeneratedMetadata.model_fields if name in corrected}}


def _contains(values: list[Any], wanted: str) -> bool:
    return wanted.casefold() in {str(value).casefold() for value in values}


def matches(metadata: dict[str, Any], filters: RecordFilter) -> bool:
    if filters.topic and not _contains(metadata.get("key_topics", []), filters.topic):
        return False
    return not (filters.entity and not _contains(metadata.get("entities", []), filters.entity))


def _filtered(query: Select, filters: RecordFilter) -> Select:
    if filters.since is not None:
        query = query.where(Record.date >= filters.since)
    if filters.until is not None:
        query = query.where(Record.date < filters.until)
    if filters.source:
        query = query.where(Record.source == filters.source)
    if filters.reviewed is not None:
        query = query.where(Record.reviewed.is_(filters.reviewed))
    if filters.created_until is not None:
        query = query.where(Record.created_at <= filters.created_until)
    return query


def _after(key: Key, descending: bool):  # type: ignore[no-untyped-def]
    date, record_id = key
    if descending:
        return or_(Record.date < date, and_(Record.date == date, Record.id < record_id))
    return or_(Record.date > date, and_(Record.date == date, Record.id > record_id))


def _at_or_before(key: Key):  # type: ignore[no-untyped-def]
    date, record_id = key
    return or_(Record.date < date, and_(Record.date == date, Record.id <= record_id))


def _at_or_after(key: Key):  # type: ignore[no-untyped-def]
    date, record_id = key
    return or_(Record.date > date, and_(Record.date == date, Record.id >= record_id))


def iter_records(
    filters: RecordFilter = RecordFilter(),  # frozen: a shared default is safe
    *,
    order: Literal["asc", "desc"] = "asc",
    with_content: bool = True,
    chunk_size: int = DEFAULT_CHUNK,
    first_key: Key | None = None,
    last_key: Key | None = None,
) -> Iterator[RecordRow]:
    """Every record matching `filters`, ordered by (date, id), read `chunk_size` rows at a time.

    `first_key`/`last_key` (inclusive, ascending order only) bound the walk to a key range.
    """
    descending = order == "desc"
    if descending and (first_key or last_key):
        raise ValueError("key bounds are for ascending walks")
    options = joinedload(Record.item) if with_content else joinedload(Record.item).defer(Item.content)
    ordering = (Record.date.desc(), Record.id.desc()) if descending else (Record.date, Record.id)
    base = _filtered(select(Record).options(options), filters).order_by(*ordering)
    if last_key is not None:
        base = base.where(_at_or_before((as_utc(last_key[0]), last_key[1])))  # type: ignore[arg-type]
    if first_key is not None:
        base = base.where(_at_or_after((as_utc(first_key[0]), first_key[1])))  # type: ignore[arg-type]
    cursor: Key | None = None
    while True:
        query = base if cursor is None else base.where(_after(cursor, descending))
        with get_read_sessionmaker()() as session:
            rows = [
                RecordRow.from_record(r, with_content=with_content)
                for r in session.scalars(query.limit(chunk_size)).unique()
            ]
            session.rollback()  # read only: release the (SQLite) transaction at once
        for row in rows:
            if matches(row.metadata, filters):
                yield row
        if len(rows) < chunk_size:
            return
        last = rows[-1]
        cursor = (last.date, last.id)


@dataclass
class RecordPage:
    rows: list[RecordRow]
    total: int
    limit: int
    offset: int


def page_records(filters: RecordFilter, *, limit: int = 50, offset: int = 0) -> RecordPage:
    """One page, newest first, with the total count (counted in SQL unless topic/entity filter)."""
    if not (filters.topic or filters.entity):
        with get_read_sessionmaker()() as session:
            total = session.scalar(_filtered(select(func.count()).select_from(Record), filters)) or 0
            session.rollback()
        rows: list[RecordRow] = []
        if offset < total:
            walk = iter_records(filters, order="desc", chunk_size=min(limit + offset, 500))
            rows = list(islice(walk, offset, offset + limit))
        return RecordPage(rows=rows, total=total, limit=limit, offset=offset)
    rows, total = [], 0
    for row in iter_records(filters, order="desc", with_content=False):
        if offset <= total < offset + limit:
            rows.append(row)
        total += 1
    return RecordPage(rows=rows, total=total, limit=limit, offset=offset)


def distinct_sources(session: Session) -> list[str]:
    return list(session.scalars(select(Record.source).distinct().order_by(Record.source)))


def get_row(record_id: str) -> RecordRow | None:
    with get_read_sessionmaker()() as session:
        record = session.get(Record, record_id)
        row = RecordRow.from_record(record) if record is not None else None
        session.rollback()
    return row
