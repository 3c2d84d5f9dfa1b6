"""Small keyword-only data-access functions. The jobs table is the source of truth."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Executable, Table, and_, bindparam, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.contract import EnhanceItem
from app.models import (
    Email,
    IdempotencyKey,
    Item,
    Job,
    JobStatus,
    ModelVersion,
    Record,
    ReviewSession,
    WorkerHeartbeat,
    new_id,
    utcnow,
)


def _rowcount(session: Session, statement: Executable) -> int:
    result = session.execute(statement)
    return cast(CursorResult[Any], result).rowcount


def content_sha256(content: str) -> str:
    return hashlib.sha256(content.encode("utf-8", "surrogatepass")).hexdigest()


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything we store is UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# Items and jobs -------------------------------------------------------------------------


def find_item(session: Session, *, message_id: str, content_hash: str) -> Item | None:
    return session.scalars(
        select(Item).where(Item.message_id == message_id, Item.content_sha256 == content_hash)
    ).first()


def new_item_row(item: EnhanceItem, *, content_hash: str | None = None) -> Item:
    return Item(
        id=new_id(),  # known before the insert: the job can point at it without a round trip
        source=item.source,
        subject=item.subject,
        sender=item.from_,
        date=as_utc(item.date),
        message_id=item.message_id,
        content=item.content,
        content_sha256=content_hash or content_sha256(item.content),
        url=str(item.url) if item.url else None,
        links=list(item.links),
        has_html=item.has_html,
    )


def latest_job_for_item(session: Session, *, item_id: str) -> Job | None:
    return session.scalars(select(Job).where(Job.item_id == item_id).order_by(Job.created_at.desc())).first()


@dataclass
class SubmittedJob:
    job: Job
    created: bool


@dataclass(frozen=True)
class StoryPlacement:
    """Where a story sat in its e-mail; sponsored stories are stored, never enhanced."""

    section: str | None
    position: int
    sponsored: bool = False


@dataclass
class SubmittedStory:
    item: Item
    job: Job | None  # None for a sponsored story
    created: bool  # a job was created by this submission


class KnownItems:
    """A write group's items: the stored ones matching any of its (message_id, content) pairs,
    found with one query for the group (not two per item), and the rows the group creates, inserted
    together by `insert_new` (one statement per table, not the unit of work's per-object flush).
    Valid only while the group's writes cannot be rolled back in part (no savepoints): a group that
    fails is redone without it."""

    def __init__(self, session: Session, items: Sequence[EnhanceItem]) -> None:
        self._session = session
        wanted = {(item.message_id, content_sha256(item.content)) for item in items}
        message_ids = sorted({message_id for message_id, _ in wanted})
        self._stored: dict[tuple[str, str], str] = {}  # -> item id
        for start in range(0, len(message_ids), _IN_CHUNK):
            rows = session.connection().execute(
                _STORED_ITEMS, {"ids": message_ids[start : start + _IN_CHUNK]}
            )
            self._stored.update(
                ((message_id, digest), item_id)
                for item_id, message_id, digest in rows
                if (message_id, digest) in wanted
            )
        self._created: dict[tuple[str, str], Item] = {}
        self._jobs: dict[str, Job] = {}  # the latest job of each item created here or given a job here
        self._new_items: list[Item] = []
        self._new_jobs: list[Job] = []

    def item(self, *, message_id: str, content_hash: str) -> Item | None:
        key = (message_id, content_hash)
        if key in self._created:
            return self._created[key]
        item_id = self._stored.get(key)
        return None if item_id is None else self._session.get(Item, item_id)  # a re-sent item: rare

    def latest_job(self, *, item_id: str) -> Job | None:
        return self._jobs.get(item_id) or latest_job_for_item(self._session, item_id=item_id)

    def add(self, item: Item, job: Job | None) -> None:
        """A row to insert (`item` may be a stored one, given a new job)."""
        key = (item.message_id, item.content_sha256)
        if item not in self._session and key not in self._created:
            self._created[key] = item
            self._new_items.append(item)
        if job is not None:
            self._jobs[item.id] = job
            self._new_jobs.append(job)

    def insert_new(self) -> None:
        """The group's new rows, after the ORM's own (e-mails, keys: items point at e-mails), as Core
        executemany INSERTs: the unit of work's flush cost 0.75 ms a group at 200 POST/s."""
        self._session.flush()
        connection = self._session.connection()
        for model, rows in ((Item, self._new_items), (Job, self._new_jobs)):
            by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
            for row in rows:
                values = _set_columns(row)  # the columns' defaults fill the rest
                by_columns.setdefault(tuple(values), []).append(values)
            for params in by_columns.values():  # one executemany per set of columns given
                connection.execute(_INSERTS[model], params)
        self._new_items, self._new_jobs = [], []


def _set_columns(row: Item | Job) -> dict[str, Any]:
    """Column key -> value of each column attribute set on a new row."""
    state = row.__dict__
    return {attr.columns[0].key: state[attr.key] for attr in row.__mapper__.column_attrs if attr.key in state}


_IN_CHUNK = 500  # ids per IN (...): under SQLite's limit on bound parameters
# Built once: constructing and keying a statement per group cost more than running it (0.3 vs 0.07 ms).
_STORED_ITEMS = select(Item.id, Item.message_id, Item.content_sha256).where(
    Item.message_id.in_(bindparam("ids", expanding=True))
)
_INSERTS = {Item: cast(Table, Item.__table__).insert(), Job: cast(Table, Job.__table__).insert()}


def submit_items(
    session: Session,
    *,
    items: Sequence[EnhanceItem],
    idempotency_key: str | None = None,
    request_id: str | None = None,
    known: KnownItems | None = None,
) -> list[SubmittedJob]:
    """Persist items and their jobs. A re-sent item (same message_id and content) maps to its job
    (which keeps its own request id). With `known` (the group's lookups done at once) the new rows
    wait in it, for the group's one insert."""
    submitted = [
        _submit_item(session, item, idempotency_key=idempotency_key, request_id=request_id, known=known)
        for item in items
    ]
    if known is None:
        session.flush()
    return [SubmittedJob(s.job, s.created) for s in submitted if s.job is not None]


def _submit_item(
    session: Session,
    item: EnhanceItem,
    *,
    idempotency_key: str | None = None,
    request_id: str | None = None,
    email_id: str | None = None,
    placement: StoryPlacement | None = None,
    known: KnownItems | None = None,
) -> SubmittedStory:
    """One item and its job; an item stored before maps to its latest job. A story placed as
    sponsored in its e-mail is stored without a job (and maps to none when it comes again)."""
    content_hash = content_sha256(item.content)
    if known is not None:
        existing = known.item(message_id=item.message_id, content_hash=content_hash)
    else:
        existing = find_item(session, message_id=item.message_id, content_hash=content_hash)
    if existing is not None:
        if known is not None:
            job = known.latest_job(item_id=existing.id)
        else:
            job = latest_job_for_item(session, item_id=existing.id)
        if job is not None or (placement is not None and existing.sponsored):
            return SubmittedStory(existing, job, created=False)
        row = existing
    else:
        row = new_item_row(item, content_hash=content_hash)
        if placement is not None:
            row.email_id, row.section = email_id, placement.section
            row.position, row.sponsored = placement.position, placement.sponsored
        if known is None:
            session.add(row)
    job = None
    if placement is None or not placement.sponsored:
        job = Job(
            id=new_id(),
            item_id=row.id,
            status=JobStatus.queued,
            idempotency_key=idempotency_key,
            request_id=request_id,
        )
    if known is not None:
        known.add(row, job)
    elif job is not None:
        session.add(job)
    return SubmittedStory(row, job, created=job is not None)


# E-mails ------------------------------------------------------------------------------------


def find_email(session: Session, *, dedup_key: str) -> Email | None:
    return session.scalars(select(Email).where(Email.dedup_key == dedup_key)).first()


def get_email(session: Session, *, email_id: str) -> Email | None:
    return session.get(Email, email_id)


def submit_email(
    session: Session,
    *,
    email: Email,
    stories: Sequence[tuple[EnhanceItem, StoryPlacement]],
    request_id: str | None = None,
    known: KnownItems | None = None,
) -> list[SubmittedStory]:
    """Persist an e-mail, its stories as items, and a job per story that is not sponsored.

    A story already stored (same message_id and content: the e-mail forwarded again, or sent
    through /v1/enhance before) maps to its item and job instead of a new one. `known`: as in
    `submit_items`."""
    email.id = email.id or new_id()  # the items point at it before the flush
    session.add(email)
    submitted = [
        _submit_item(
            session, item, request_id=request_id, email_id=email.id, placement=placement, known=known
        )
        for item, placement in stories
    ]
    if known is None:
        session.flush()
    return submitted


def email_stories(session: Session, *, email_id: str) -> list[SubmittedStory]:
    """The e-mail's stories in reading order, each with its latest job (None when sponsored)."""
    items = session.scalars(select(Item).where(Item.email_id == email_id).order_by(Item.position)).all()
    jobs: dict[str, Job] = {}
    if items:
        for job in session.scalars(
            select(Job).where(Job.item_id.in_([i.id for i in items])).order_by(Job.created_at)
        ):
            jobs[job.item_id] = job  # the latest wins
    return [SubmittedStory(item, jobs.get(item.id), created=False) for item in items]


def count_queued_jobs(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(Job).where(Job.status == JobStatus.queued)) or 0


def jobs_by_ids(session: Session, *, job_ids: Sequence[str]) -> list[Job]:
    """The jobs, in the order asked for."""
    rows = {job.id: job for job in session.scalars(select(Job).where(Job.id.in_(job_ids)))}
    return [rows[job_id] for job_id in job_ids if job_id in rows]


def find_idempotency_key(session: Session, *, key: str, max_age: timedelta) -> IdempotencyKey | None:
    """The stored use of this Idempotency-Key, or None; a use older than max_age is forgotten."""
    row = session.get(IdempotencyKey, key)
    if row is not None and as_utc(row.created_at) < utcnow() - max_age:  # type: ignore[operator]
        session.delete(row)
        session.flush()
        return None
    return row


def save_idempotency_key(
    session: Session, *, key: str, request_sha256: str, job_ids: list[str], max_age: timedelta
) -> None:
    session.execute(
        delete(IdempotencyKey)
        .where(IdempotencyKey.created_at < utcnow() - max_age)
        .execution_options(synchronize_session=False)
    )
    session.add(IdempotencyKey(key=key, request_sha256=request_sha256, job_ids=job_ids))
    session.flush()


def get_job(session: Session, *, job_id: str) -> Job | None:
    return session.get(Job, job_id)


def record_for_job(session: Session, *, job_id: str) -> Record | None:
    return session.scalars(select(Record).where(Record.job_id == job_id)).first()


def count_jobs_by_status(session: Session) -> dict[str, int]:
    rows = session.execute(select(Job.status, func.count()).group_by(Job.status)).all()
    counts = {status.value: 0 for status in JobStatus}
    counts.update({status: count for status, count in rows})
    return counts


# Worker side ------------------------------------------------------------------------------


def claim_jobs(
    session: Session, *, job_ids: Sequence[str], claim_token: str, lease_seconds: int, extra: int = 0
) -> list[Job]:
    """Atomically move jobs to running under this claim; returns the ones won.

    Claimable: queued, or running with an expired lease (its worker died). `extra` also takes up
    to that many other queued jobs, oldest first, so one generate call serves a waiting batch.
    """
    now = utcnow()
    claimable = or_(
        Job.status == JobStatus.queued, and_(Job.status == JobStatus.running, Job.lease_until < now)
    )
    wanted = list(job_ids)
    if extra > 0:
        wanted += session.scalars(
            select(Job.id)
            .where(Job.status == JobStatus.queued, Job.id.not_in(wanted))
            .order_by(Job.created_at)
            .limit(extra)
        ).all()
    if not wanted:
        return []
    session.execute(
        update(Job)
        .where(Job.id.in_(wanted), claimable)
        .values(
            status=JobStatus.running,
            worker=claim_token,
            attempts=Job.attempts + 1,
            started_at=now,
            lease_until=now + timedelta(seconds=lease_seconds),
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    return list(
        session.scalars(
            select(Job).where(Job.id.in_(wanted), Job.worker == claim_token, Job.status == JobStatus.running)
        )
    )


def finish_job_succeeded(
    session: Session,
    *,
    job_id: str,
    claim_token: str,
    data: dict[str, Any],
    item: Item,
    model_version_id: str | None,
    generation_seconds: float,
) -> Record | None:
    """Store the record and close the job in one transaction, only if we still hold the claim."""
    now = utcnow()
    won = _rowcount(
        session,
        update(Job)
        .where(Job.id == job_id, Job.worker == claim_token, Job.status == JobStatus.running)
        .values(
            status=JobStatus.succeeded,
            finished_at=now,
            updated_at=now,
            error=None,
            lease_until=None,
            model_version_id=model_version_id,
        )
        .execution_options(synchronize_session=False),
    )
    if not won:
        return None
    record = Record(
        job_id=job_id,
        item_id=item.id,
        source=item.source,
        date=item.date,
        data=data,
        model_version_id=model_version_id,
        generation_seconds=generation_seconds,
    )
    session.add(record)
    try:
        session.flush()
    except IntegrityError:  # a record for this job exists already: never store two
        session.rollback()
        return None
    return record


def finish_job_failed(session: Session, *, job_id: str, claim_token: str, error: str, retry: bool) -> bool:
    """Fail the job, or put it back in the queue when `retry` (attempts left)."""
    now = utcnow()
    values: dict[str, Any] = {"error": error[:4000], "updated_at": now, "lease_until": None}
    if retry:
        values.update(status=JobStatus.queued)
    else:
        values.update(status=JobStatus.failed, finished_at=now)
    return bool(
        _rowcount(
            session,
            update(Job)
            .where(Job.id == job_id, Job.worker == claim_token, Job.status == JobStatus.running)
            .values(**values)
            .execution_options(synchronize_session=False),
        )
    )


def renew_leases(session: Session, *, claim_token: str, lease_seconds: int) -> int:
    """Extend the lease of the jobs still held under this claim (a live worker's long batch)."""
    now = utcnow()
    return _rowcount(
        session,
        update(Job)
        .where(Job.worker == claim_token, Job.status == JobStatus.running)
        .values(lease_until=now + timedelta(seconds=lease_seconds))
        .execution_options(synchronize_session=False),
    )


def reconcile_jobs(
    session: Session, *, max_attempts: int, queued_older_than: timedelta
) -> tuple[list[str], list[str]]:
    """Find work the broker may have lost. Returns (job ids to re-enqueue, job ids failed).

    Running jobs whose lease expired either go back to queued or, out of attempts, fail.
    Queued jobs untouched for a while are re-sent (duplicates are harmless: claims are atomic).
    """
    now = utcnow()
    expired = session.scalars(
        select(Job)
        .where(Job.status == JobStatus.running, Job.lease_until < now)
        .with_for_update(skip_locked=True)
    ).all()
    failed: list[str] = []
    requeue: list[str] = []
    for job in expired:
        if job.attempts >= max_attempts:
            job.status = JobStatus.failed
            job.error = f"worker lost: lease expired on attempt {job.attempts} of {max_attempts}"
            job.finished_at = now
            failed.append(job.id)
        else:
            job.status = JobStatus.queued
            job.error = f"worker lost on attempt {job.attempts}; re-queued"
            requeue.append(job.id)
        job.lease_until = None
        job.updated_at = now
    stale = session.scalars(
        select(Job.id).where(Job.status == JobStatus.queued, Job.updated_at < now - queued_older_than)
    ).all()
    if stale:
        session.execute(
            update(Job)
            .where(Job.id.in_(stale))
            .values(updated_at=now)
            .execution_options(synchronize_session=False)
        )
    return requeue + list(stale), failed


# Records --------------------------------------------------------------------------------


def get_record(session: Session, *, record_id: str) -> Record | None:
    return session.get(Record, record_id)


# Model registry and workers ---------------------------------------------------------------


def active_model_version(session: Session) -> ModelVersion | None:
    return session.scalars(select(ModelVersion).where(ModelVersion.active.is_(True))).first()


def list_model_versions(session: Session) -> list[ModelVersion]:
    return list(session.scalars(select(ModelVersion).order_by(ModelVersion.created_at)))


def register_model_version(
    session: Session, *, version: ModelVersion, activate: bool = False
) -> ModelVersion:
    existing = session.get(ModelVersion, version.id)
    if existing is not None:
        existing.path, existing.manifest = version.path, version.manifest
        existing.base_model, existing.precision, existing.backend = (
            version.base_model,
            version.precision,
            version.backend,
        )
        version = existing
    else:
        session.add(version)
    session.flush()
    if activate or active_model_version(session) is None:
        activate_model_version(session, version_id=version.id)
    return version


def activate_model_version(session: Session, *, version_id: str) -> ModelVersion | None:
    version = session.get(ModelVersion, version_id)
    if version is None:
        return None
    session.execute(update(ModelVersion).values(active=False).execution_options(synchronize_session=False))
    session.execute(
        update(ModelVersion)
        .where(ModelVersion.id == version_id)
        .values(active=True)
        .execution_options(synchronize_session=False)
    )
    session.refresh(version)
    return version


def record_heartbeat(
    session: Session,
    *,
    worker_id: str,
    model_version_id: str | None,
    jobs_done: int,
    stats: dict[str, Any] | None = None,
) -> None:
    """Upsert one worker process's heartbeat row; `worker_id` is "host:pid" (the `hostname` column)."""
    row = session.get(WorkerHeartbeat, worker_id)
    if row is None:
        row = WorkerHeartbeat(hostname=worker_id, model_version_id=model_version_id, jobs_done=jobs_done)
        session.add(row)
    else:
        row.last_seen, row.model_version_id, row.jobs_done = utcnow(), model_version_id, jobs_done
    row.stats = stats


def live_workers(session: Session, *, within_seconds: float) -> list[WorkerHeartbeat]:
    cutoff = utcnow() - timedelta(seconds=within_seconds)
    return list(session.scalars(select(WorkerHeartbeat).where(WorkerHeartbeat.last_seen >= cutoff)))


# Review sessions ------------------------------------------------------------------------------


def _token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def create_review_session(session: Session, *, token: str, max_age: timedelta) -> None:
    """Store a new session (its token's digest only); sessions past their expiry are removed."""
    now = utcnow()
    session.execute(delete(ReviewSession).where(ReviewSession.expires_at < now))
    session.add(ReviewSession(token_sha256=_token_digest(token), created_at=now, expires_at=now + max_age))
    session.flush()


def review_session_valid(session: Session, *, token: str) -> bool:
    row = session.get(ReviewSession, _token_digest(token))
    return row is not None and as_utc(row.expires_at) > utcnow()  # type: ignore[operator]


def delete_review_session(session: Session, *, token: str) -> None:
    session.execute(delete(ReviewSession).where(ReviewSession.token_sha256 == _token_digest(token)))
