"""Response bodies of the API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from app.crud import as_utc
from app.models import Job, Record
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

    @classmethod
    def from_row(cls, record: Record | RecordRow) -> RecordOut:
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
        )


class RecordPage(BaseModel):
    items: list[RecordOut]
    total: int
    limit: int
    offset: int


class ErrorOut(BaseModel):
    detail: str | list[dict[str, Any]]
    message: str | None = None
