from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from app.api.deps import ReadSessionDep
from app.api.schemas import ErrorOut, RecordOut, RecordPage
from app.crud import get_record
from app.record_query import RecordFilter, page_records

router = APIRouter(prefix="/records", tags=["records"])

MAX_LIMIT = 200
MAX_OFFSET = 1_000_000_000  # far past any real table; a bigger number is a mistake, not a page
_TERM = "One of `{}`, ignoring case; a reviewer's correction replaces the model's list"


@router.get("", response_model=RecordPage)
def read_records(
    session: ReadSessionDep,
    since: Annotated[datetime | None, Query(description="Item date from (inclusive), ISO 8601")] = None,
    until: Annotated[datetime | None, Query(description="Item date until (exclusive), ISO 8601")] = None,
    source: Annotated[str | None, Query(max_length=200)] = None,
    topic: Annotated[str | None, Query(max_length=200, description=_TERM.format("key_topics"))] = None,
    entity: Annotated[str | None, Query(max_length=200, description=_TERM.format("entities"))] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size")] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Matches to skip")] = 0,
) -> RecordPage:
    """Records newest first, filtered in SQL; topic and entity match the effective metadata (a
    reviewer's correction over the model output), as the export and the review page do."""
    try:
        filters = RecordFilter(since=since, until=until, source=source, topic=topic, entity=entity)
    except ValueError as error:
        raise HTTPException(status_code=422, detail=str(error)) from None
    page = page_records(session, filters=filters, limit=limit, offset=offset)
    return RecordPage(
        items=[RecordOut.from_row(row) for row in page.rows], total=page.total, limit=limit, offset=offset
    )


@router.get("/{record_id}", response_model=RecordOut, responses={404: {"model": ErrorOut}})
def read_record(record_id: str, session: ReadSessionDep) -> RecordOut:
    record = get_record(session, record_id=record_id)
    if record is None:
        raise HTTPException(status_code=404, detail=f"record {record_id} not found")
    return RecordOut.from_row(record)
