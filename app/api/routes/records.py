from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from app.api.deps import ReadSessionDep
from app.api.schemas import ErrorOut, RecordOut, RecordPage
from app.crud import get_record, list_records

router = APIRouter(prefix="/records", tags=["records"])


@router.get("", response_model=RecordPage)
def read_records(
    session: ReadSessionDep,
    since: Annotated[datetime | None, Query(description="Item date from (inclusive), ISO 8601")] = None,
    until: Annotated[datetime | None, Query(description="Item date until (exclusive), ISO 8601")] = None,
    source: Annotated[str | None, Query(max_length=200)] = None,
    topic: Annotated[str | None, Query(max_length=200)] = None,
    entity: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> RecordPage:
    if since and until and since >= until:
        raise HTTPException(status_code=422, detail="since must be before until")
    rows, total = list_records(
        session,
        since=since,
        until=until,
        source=source,
        topic=topic,
        entity=entity,
        limit=limit,
        offset=offset,
    )
    return RecordPage(items=[RecordOut.from_row(r) for r in rows], total=total, limit=limit, offset=offset)


@router.get("/{record_id}", response_model=RecordOut, responses={404: {"model": ErrorOut}})
def read_record(record_id: str, session: ReadSessionDep) -> RecordOut:
    record = get_record(session, record_id=record_id)
    if record is None:
        raise HTTPException(status_code=404, detail=f"record {record_id} not found")
    return RecordOut.from_row(record)
