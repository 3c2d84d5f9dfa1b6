"""The one read path for records: the API's list, the review page and every export read through here.

Every filter runs in SQL, topic and entity included: they match the effective metadata (a reviewer's
correction wins over the model output) through each dialect's JSON functions, so a page is a
LIMIT/OFFSET query beside a COUNT, and nothing is filtered in Python. `page_records` reads one page
in the caller's (read) session; `iter_records` walks every match in keyset-paginated chunks, each in
its own short read session (on SQLite one long cursor would hold a snapshot open for the whole
export), and rows leave as plain `RecordRow` snapshots, so memory stays bounded by the chunk size.
Item content is loaded only when asked for (`with_content`): the lists show none of it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Boolean, ColumnElement, Select, String, and_, bindparam, func, or_, select
from sqlalchemy.exc import CompileError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session, joinedload
from sqlalchemy.sql.base import ExecutableOption
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.visitors import InternalTraversal

from app.contract import GeneratedMetadata
from app.core.db import SQLITE_LOWER, get_read_sessionmaker
from app.crud import as_utc
from app.models import Item, Record

DEFAULT_CHUNK = 100  # rows per query: bounds memory (about 30 kB a row with its item)

Key = tuple[datetime, str]  # (record date, record id): a total order over records
NEWEST_FIRST = (Record.date.desc(), Record.id.desc())


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
    email_id: str | None = None  # the e-mail the item was cut out of (POST /v1/emails)
    section: str | None = None

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
            email_id=item.email_id,
            section=item.section,
        )


def effective_metadata(data: dict[str, Any], corrected: dict[str, Any] | None) -> dict[str, Any]:
    """The model output with a reviewer's corrected generated fields laid over it."""
    if not corrected:
        return dict(data)
    return {**data, **{name: corrected[name] for name in GeneratedMetadata.model_fields if name in corrected}}


TERM_FIELDS = ("key_topics", "entities")  # the list fields the topic and entity filters search


class HasTerm(ColumnElement[bool]):
    """SQL: the record's effective `field` list (the correction's when it has that list, else the
    model output's, as `effective_metadata` lays them) holds `wanted`, compared case-insensitively."""

    type = Boolean()
    _traverse_internals: list[tuple[str, InternalTraversal]] = [  # noqa: RUF012 (as SQLAlchemy declares it)
        ("field", InternalTraversal.dp_string),
        ("wanted", InternalTraversal.dp_clauseelement),
    ]

    def __init__(self, field: str, wanted: str) -> None:
        if field not in TERM_FIELDS:  # it is written into the SQL: only known names
            raise ValueError(f"not a searchable list field: {field}")
        self.field = field
        self.wanted = bindparam(f"{field}_term", wanted, type_=String(), unique=True)


def _term_lists(compiler: SQLCompiler, typeof: str, get: str, **kw: Any) -> str:
    """CASE picking the corrected list, else the model's (NULL when neither is a JSON array)."""
    table = Record.__table__.c
    columns = [compiler.process(column, **kw) for column in (table.corrected_data, table.data)]
    cases = " ".join(f"WHEN {typeof.format(c)} = 'array' THEN {get.format(c)}" for c in columns)
    return f"CASE {cases} END"


@compiles(HasTerm, "sqlite")
def _has_term_sqlite(element: HasTerm, compiler: SQLCompiler, **kw: Any) -> str:
    path = f"'$.{element.field}'"
    lists = _term_lists(compiler, f"json_type({{}}, {path})", f"json_extract({{}}, {path})", **kw)
    wanted = compiler.process(element.wanted, **kw)
    return (
        f"EXISTS (SELECT 1 FROM json_each({lists}) AS term "
        f"WHERE {SQLITE_LOWER}(term.value) = {SQLITE_LOWER}({wanted}))"
    )


@compiles(HasTerm, "postgresql")
def _has_term_postgresql(element: HasTerm, compiler: SQLCompiler, **kw: Any) -> str:
    key = f"'{element.field}'"
    lists = _term_lists(compiler, f"json_typeof({{}} -> {key})", f"{{}} -> {key}", **kw)
    wanted = compiler.process(element.wanted, **kw)
    return (
        f"EXISTS (SELECT 1 FROM json_array_elements_text({lists}) AS term(value) "
        f"WHERE lower(term.value) = lower({wanted}))"
    )


@compiles(HasTerm)
def _has_term_other(element: HasTerm, compiler: SQLCompiler, **kw: Any) -> str:
    raise CompileError(f"topic/entity filters support SQLite and PostgreSQL, not {compiler.dialect.name}")


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
    if filters.topic:
        query = query.where(HasTerm("key_topics", filters.topic))
    if filters.entity:
        query = query.where(HasTerm("entities", filters.entity))
    return query


def _item_loader(with_content: bool) -> ExecutableOption:
    return joinedload(Record.item) if with_content else joinedload(Record.item).defer(Item.content)


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
    ordering = NEWEST_FIRST if descending else (Record.date, Record.id)
    base = _filtered(select(Record).options(_item_loader(with_content)), filters).order_by(*ordering)
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
        yield from rows
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


def count_records(session: Session, *, filters: RecordFilter) -> int:
    return session.scalar(_filtered(select(func.count()).select_from(Record), filters)) or 0


def page_records(
    session: Session, *, filters: RecordFilter, limit: int = 50, offset: int = 0, with_content: bool = False
) -> RecordPage:
    """One page of the matches, newest first, with their total: a COUNT and a LIMIT/OFFSET query."""
    if limit < 1 or offset < 0:
        raise ValueError("limit must be at least 1 and offset at least 0")
    total = count_records(session, filters=filters)
    rows: list[RecordRow] = []
    if offset < total:
        query = _filtered(select(Record).options(_item_loader(with_content)), filters)
        records = session.scalars(query.order_by(*NEWEST_FIRST).limit(limit).offset(offset)).unique()
        rows = [RecordRow.from_record(r, with_content=with_content) for r in records]
    return RecordPage(rows=rows, total=total, limit=limit, offset=offset)


def distinct_sources(session: Session) -> list[str]:
    return list(session.scalars(select(Record.source).distinct().order_by(Record.source)))


def get_row(record_id: str) -> RecordRow | None:
    with get_read_sessionmaker()() as session:
        record = session.get(Record, record_id)
        row = RecordRow.from_record(record) if record is not None else None
        session.rollback()
    return row
