"""Storing POST /v1/enhance submissions: one writer thread, group commits, the 429 and idempotency.

SQLite admits one writer at a time, so many request threads each opening a write transaction only
take turns on the lock - and pay for a thread hop, BEGIN and COMMIT each. Instead, requests hand
their parsed items to one writer thread per API process. It takes every submission waiting, stores
each inside its own SAVEPOINT (one refused or failed submission - a 429, a reused
Idempotency-Key - leaves the others untouched), commits them all at once, and only then answers
their requests: a 202 still means "in the database". Under load, one transaction carries many
requests; when idle, a request is its own batch. New job ids go to the JobPublisher after the
commit. PostgreSQL gets the same path (fewer commits suit it too).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.api.publisher import JobPublisher
from app.contract import EnhanceItem
from app.core.batches import batches_until_stopped
from app.core.config import Settings
from app.core.db import write_session_scope
from app.crud import (
    KnownItems,
    StoryPlacement,
    SubmittedStory,
    count_queued_jobs,
    email_stories,
    find_email,
    find_idempotency_key,
    jobs_by_ids,
    save_idempotency_key,
    submit_email,
    submit_items,
)
from app.models import Email

log = logging.getLogger(__name__)

MAX_GROUP = 64  # submissions per transaction: bounds the time the write lock is held
# A concurrent first use of one Idempotency-Key or one new item from another API process
# (PostgreSQL): the loser of the unique-constraint race rolls back its savepoint and reads the winner's.
_TRIES = 3


class QueueFull(Exception):
    """The submission would create jobs past `max_queued_jobs`: nothing of it was stored."""

    def __init__(self, *, queued: int, limit: int, retry_after: int) -> None:
        super().__init__(f"queue full: {queued} jobs waiting, the limit is {limit}; retry in {retry_after} s")
        self.retry_after = retry_after


class IdempotencyKeyReused(Exception):
    """An Idempotency-Key came back with another payload than the one it was first sent with."""

    def __init__(self, key: str) -> None:
        super().__init__(
            f"Idempotency-Key {key!r} was already used with a different payload; "
            "send a new key for a new request"
        )


@dataclass(frozen=True)
class EmailSubmission:
    """A split e-mail: its row's fields (Email columns) and where each of the submission's items sat in it.

    Fields, not a row object: a group that is rolled back and redone builds its rows afresh."""

    fields: dict[str, Any]
    placements: list[StoryPlacement]

    @property
    def dedup_key(self) -> str:
        return str(self.fields["dedup_key"])


@dataclass(frozen=True)
class Submission:
    items: list[EnhanceItem]
    idempotency_key: str | None = None
    body_hash: str = ""
    email: EmailSubmission | None = None  # POST /v1/emails: idempotent by the e-mail's dedup key
    request_id: str | None = None  # the request's X-Request-ID, stored on the jobs it creates


@dataclass(frozen=True)
class StoryRef:
    item_id: str
    headline: str
    url: str | None
    section: str | None
    position: int
    sponsored: bool
    job: tuple[str, str] | None  # (job id, status); None for a sponsored story
    job_created: bool = False  # this submission created the job (not an earlier post of the story)

    @classmethod
    def of(cls, story: SubmittedStory) -> StoryRef:
        item, job = story.item, story.job
        return cls(
            item_id=item.id,
            headline=item.subject,
            url=item.url,
            section=item.section,
            position=item.position or 0,
            sponsored=bool(item.sponsored),
            job=(job.id, job.status) if job is not None else None,
            job_created=story.created,
        )


@dataclass
class Accepted:
    jobs: list[tuple[str, str]]  # (job id, status), in item order
    created: list[str] = field(default_factory=list)  # ids of jobs created by this submission
    replayed: bool = False  # answered from a stored Idempotency-Key or an e-mail posted before
    email_id: str | None = None
    stories: list[StoryRef] = field(default_factory=list)  # an e-mail's stories, in reading order


class QueueDepth:
    """Queued jobs, for the 429: counted at most once per `max_age` seconds per API process.

    Counting scans the queued jobs, so a long queue would make every POST slower exactly when the
    system is busiest. Between counts, this process adds the jobs it creates; jobs that workers take
    meanwhile show at the next count. The limit is thus checked against a number at most `max_age`
    seconds old (other API processes' jobs also show at the next count).
    """

    def __init__(self, max_age: float = 1.0) -> None:
        self.max_age = max_age
        self._count: int | None = None
        self._counted_at = 0.0

    def current(self, session: Session) -> int:
        if self._count is None or time.monotonic() - self._counted_at > self.max_age:
            self._count, self._counted_at = count_queued_jobs(session), time.monotonic()
        return self._count

    def add(self, created: int) -> None:
        if self._count is not None:
            self._count += created


class _GroupAborted(Exception):
    """A submission failed part-way without a savepoint: the group is redone, each in a savepoint."""


def store_submission(
    session: Session,
    settings: Settings,
    queue_depth: QueueDepth,
    submission: Submission,
    *,
    isolate: bool = True,
    known: KnownItems | None = None,
) -> Accepted:
    """Store one submission in the session's transaction; refusals (422, 429) raise.

    A refusal decided before anything is written needs no undo. Only a submission that might be
    refused after writing (near the queue limit: the 429 counts only the jobs it would create), or
    any submission when `isolate`, runs inside a SAVEPOINT - they cost a flush and two statements.
    `known`: the group's item lookups, done at once (fast path only: savepoints could undo its rows).
    """
    replayed = _replay(session, settings, submission)  # may raise IdempotencyKeyReused; reads only
    if replayed is not None:
        return replayed
    queued_before = queue_depth.current(session)
    if not isolate and queued_before + len(submission.items) <= settings.max_queued_jobs:
        try:
            accepted = _write(session, settings, submission, queued_before, known)
        except Exception as error:
            raise _GroupAborted from error
        queue_depth.add(len(accepted.created))
        return accepted
    if known is not None:  # the group's rows so far go in before the savepoint: their failure is the group's
        try:
            known.insert_new()
        except Exception as error:
            raise _GroupAborted from error
    for attempt in range(_TRIES):
        savepoint = session.begin_nested()
        try:
            accepted = _write(session, settings, submission, queued_before)
        except IntegrityError:
            savepoint.rollback()
            if attempt == _TRIES - 1:
                raise
            continue
        except BaseException:
            savepoint.rollback()
            raise
        savepoint.commit()
        queue_depth.add(len(accepted.created))
        return accepted
    raise AssertionError("unreachable")


def _key_max_age(settings: Settings) -> timedelta:
    return timedelta(hours=settings.idempotency_ttl_hours)


def _replay(session: Session, settings: Settings, submission: Submission) -> Accepted | None:
    """The stored answer for a retried Idempotency-Key or e-mail; IdempotencyKeyReused for another payload."""
    if submission.email is not None:
        posted = find_email(session, dedup_key=submission.email.dedup_key)
        if posted is not None:
            return _email_accepted(email_stories(session, email_id=posted.id), posted, replayed=True)
    key = submission.idempotency_key
    if not key:
        return None
    stored = find_idempotency_key(session, key=key, max_age=_key_max_age(settings))
    if stored is None:
        return None
    if stored.request_sha256 != submission.body_hash:
        raise IdempotencyKeyReused(key)
    jobs = jobs_by_ids(session, job_ids=stored.job_ids)
    return Accepted(jobs=[(job.id, job.status) for job in jobs], replayed=True)


def _email_accepted(stories: list[SubmittedStory], email: Email, *, replayed: bool = False) -> Accepted:
    return Accepted(
        jobs=[(s.job.id, s.job.status) for s in stories if s.job is not None],
        created=[s.job.id for s in stories if s.job is not None and s.created],
        replayed=replayed,
        email_id=email.id,
        stories=[StoryRef.of(story) for story in stories],
    )


def _write(
    session: Session,
    settings: Settings,
    submission: Submission,
    queued_before: int,
    known: KnownItems | None = None,
) -> Accepted:
    key = submission.idempotency_key
    if submission.email is not None:
        row = Email(**submission.email.fields)
        stories = submit_email(
            session,
            email=row,
            stories=list(zip(submission.items, submission.email.placements, strict=True)),
            request_id=submission.request_id,
            known=known,
        )
        accepted = _email_accepted(stories, row)
        _check_queue(settings, queued_before, accepted.created)
        return accepted
    submitted = submit_items(
        session, items=submission.items, idempotency_key=key, request_id=submission.request_id, known=known
    )
    created = [s.job.id for s in submitted if s.created]
    _check_queue(settings, queued_before, created)
    if key:
        if known is not None:  # the key is flushed now: a replay later in the group reads its jobs
            known.insert_new()
        save_idempotency_key(
            session,
            key=key,
            request_sha256=submission.body_hash,
            job_ids=[s.job.id for s in submitted],
            max_age=_key_max_age(settings),
        )
    return Accepted(jobs=[(s.job.id, s.job.status) for s in submitted], created=created)


def _check_queue(settings: Settings, queued_before: int, created: list[str]) -> None:
    if created and queued_before + len(created) > settings.max_queued_jobs:
        raise QueueFull(
            queued=queued_before,
            limit=settings.max_queued_jobs,
            retry_after=settings.queue_full_retry_after_seconds,
        )


_Waiter = tuple[Submission, asyncio.AbstractEventLoop, "asyncio.Future[Accepted]"]
_Answer = tuple["asyncio.Future[Accepted]", Accepted | BaseException]


class SubmissionWriter:
    """The API process's one writer thread (see the module docstring)."""

    def __init__(self, settings: Settings, publisher: JobPublisher | None = None) -> None:
        self.settings = settings
        self.queue_depth = QueueDepth()
        self.publisher = publisher or JobPublisher(batch_size=settings.max_batch_size)
        self._pending: queue.SimpleQueue[_Waiter | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="enhancer-writer", daemon=True)
        self._thread.start()

    async def submit(self, submission: Submission) -> Accepted:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Accepted] = loop.create_future()
        self._pending.put((submission, loop, future))
        return await future

    def close(self, timeout: float = 10.0) -> None:
        if self._thread.is_alive():
            self._pending.put(None)
            self._thread.join(timeout)
        self.publisher.close(timeout)

    def _run(self) -> None:
        for group in batches_until_stopped(self._pending, max_size=MAX_GROUP):
            outcomes = self._write([submission for submission, _, _ in group])
            self.publisher.publish([job for o in outcomes if isinstance(o, Accepted) for job in o.created])
            self._answer(group, outcomes)

    def _write(self, submissions: list[Submission]) -> list[Accepted | BaseException]:
        """Fast: one transaction, savepoints only where needed. If a submission fails part-way
        (a constraint race with another process, a value the database rejects), the whole group
        is rolled back and redone with a savepoint each, so only that submission fails."""
        try:
            try:
                return self._write_group(submissions, isolate=False)
            except _GroupAborted:
                self.queue_depth = QueueDepth()  # additions of the rolled-back attempt
                return self._write_group(submissions, isolate=True)
        except Exception as error:  # BEGIN or COMMIT failed: nothing of the group was stored
            log.exception("storing %d submission(s) failed", len(submissions))
            self.queue_depth = QueueDepth()  # its additions were never committed
            return [error] * len(submissions)

    def _write_group(self, submissions: list[Submission], *, isolate: bool) -> list[Accepted | BaseException]:
        outcomes: list[Accepted | BaseException] = []
        with write_session_scope() as session:
            known = None if isolate else KnownItems(session, [i for s in submissions for i in s.items])
            # The fast path writes at its end only: a row the database refuses fails the final flush
            # (the group is redone), never another submission's query. A second use of one key or
            # e-mail within the group is then caught by the unique constraints, and redone alike.
            session.autoflush = isolate
            for submission in submissions:
                try:
                    stored = store_submission(
                        session, self.settings, self.queue_depth, submission, isolate=isolate, known=known
                    )
                    outcomes.append(stored)
                except _GroupAborted:
                    raise
                except Exception as error:  # this request's answer (422, 429, ...); the rest go on
                    outcomes.append(error)
            if known is not None:
                try:
                    known.insert_new()  # the whole group's rows at once
                except Exception as error:
                    raise _GroupAborted from error
        return outcomes

    @staticmethod
    def _answer(group: list[_Waiter], outcomes: list[Accepted | BaseException]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[_Answer]] = {}
        for (_, loop, future), outcome in zip(group, outcomes, strict=True):
            by_loop.setdefault(loop, []).append((future, outcome))
        for loop, answers in by_loop.items():
            with contextlib.suppress(RuntimeError):  # a closed event loop: its requests are gone
                loop.call_soon_threadsafe(_resolve, answers)  # one wake-up per loop, not per request


def _resolve(answers: list[_Answer]) -> None:
    for future, outcome in answers:
        if future.done():  # the client went away and the request was cancelled
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
