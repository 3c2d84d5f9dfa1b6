"""Response bodies of the API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from app.crud import as_utc
from app.models import Email, Job, Record
from app.record_query import RecordRow


class JobRef(BaseModel):
    id: str
    status: str


class EnhanceAccepted(BaseModel):
    jobs: list[JobRef]


class JobOut(BaseModel):
    id: str
    status: str
    attempts: int
    error: str | None
    item_id: str
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    record_id: str | None
    record_url: str | None
    request_id: str | None = None  # the X-Request-ID of the request that created the job

    @classmethod
    def from_row(cls, job: Job, record: Record | None) -> JobOut:
        return cls(
            id=job.id,
            status=job.status,
            attempts=job.attempts,
            error=job.error,
            item_id=job.item_id,
            created_at=as_utc(job.created_at),  # type: ignore[arg-type]
            updated_at=as_utc(job.updated_at),  # type: ignore[arg-type]
            started_at=as_utc(job.started_at),
            finished_at=as_utc(job.finished_at),
            record_id=record.id if record else None,
            record_url=f"/v1/records/{record.id}" if record else None,
            request_id=job.request_id,
        )


class RecordOut(BaseModel):
    id: str
    job_id: str
    item_id: str
    source: str
    date: datetime
    created_at: datetime
    model_version_id: str | None
    metadata: dict[str, Any]
    reviewed: bool
    corrected_metadata: dict[str, Any] | None
    email_id: str | None = None  # set when the item came from POST /v1/emails: GET /v1/emails/{id}
    email_url: str | None = None

    @classmethod
    def from_row(cls, record: Record | RecordRow) -> RecordOut:
        email_id = record.email_id if isinstance(record, RecordRow) else record.item.email_id
        return cls(
            id=record.id,
            job_id=record.job_id,
            item_id=record.item_id,
            source=record.source,
            date=as_utc(record.date),  # type: ignore[arg-type]
            created_at=as_utc(record.created_at),  # type: ignore[arg-type]
            model_version_id=record.model_version_id,
            metadata=record.data,
            reviewed=record.reviewed,
            corrected_metadata=record.corrected_data,
            email_id=email_id,
            email_url=f"/v1/emails/{email_id}" if email_id else None,
        )


class RecordPage(BaseModel):
    items: list[RecordOut]
    total: int
    limit: int
    offset: int


class EmailHeaderOut(BaseModel):
    id: str
    message_id: str | None
    from_: str = Field(alias="from")
    subject: str
    date: datetime | None
    list_id: str | None
    size: int
    sha256: str
    splitter: str
    story_count: int
    created_at: datetime

    model_config = {"populate_by_name": True}

    @classmethod
    def from_row(cls, email: Email) -> EmailHeaderOut:
        return cls(
            id=email.id,
            message_id=email.message_id,
            from_=email.sender,
            subject=email.subject,
            date=as_utc(email.date),
            list_id=email.list_id,
            size=email.size,
            sha256=email.sha256,
            splitter=email.splitter,
            story_count=email.story_count,
            created_at=as_utc(email.created_at),  # type: ignore[arg-type]
        )


class StoryOut(BaseModel):
    item_id: str
    headline: str
    url: str | None
    section: str | None
    position: int
    sponsored: bool  # stored, not enhanced: no job
    job: JobRef | None
    job_created: bool = False  # POST: this request created the job; false when it existed already


class EmailOut(BaseModel):
    """An e-mail and the stories found in it, each with its job (POST's answer and GET's body)."""

    email: EmailHeaderOut
    stories: list[StoryOut]
    jobs: list[JobRef]  # the stories' jobs, in reading order (sponsored stories have none)


class ErrorOut(BaseModel):
    detail: str | list[dict[str, Any]]
    message: str | None = None
