"""GET /v1/export: the enhanced records as a NotebookLM zip, Markdown, JSONL or CSV (streamed)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import StreamingResponse

from app.api.schemas import ErrorOut
from app.export import FORMATS, ExportTooLarge, UnknownFormat, open_export
from app.record_query import RecordFilter

router = APIRouter(tags=["export"])


@router.get(
    "/export",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The export file (attachment).",
            "content": {
                media_type: {}
                for media_type in ("application/zip", "text/markdown", "application/x-ndjson", "text/csv")
            },
        },
        422: {"model": ErrorOut, "description": "Unknown format, bad filters, or too much for NotebookLM."},
    },
)
def export_records(
    format: Annotated[str, Query(description=f"One of: {', '.join(FORMATS)}")] = "notebooklm",
    since: Annotated[datetime | None, Query(description="Item date from (inclusive), ISO 8601")] = None,
    until: Annotated[datetime | None, Query(description="Item date until (exclusive), ISO 8601")] = None,
    source: Annotated[str | None, Query(max_length=200)] = None,
    topic: Annotated[str | None, Query(max_length=200)] = None,
    entity: Annotated[str | None, Query(max_length=200)] = None,
    reviewed: Annotated[bool | None, Query(description="Only reviewed (true) or unreviewed (false)")] = None,
    plan: Annotated[
        Literal["records", "digest"],
        Query(
            description="notebooklm: every item by week and newsletter (records), or one digest per period"
        ),
    ] = "records",
    period: Annotated[
        Literal["day", "week"], Query(description="plan=digest: one source per day or per ISO week")
    ] = "week",
) -> StreamingResponse:
    try:
        filters = RecordFilter(
            since=since, until=until, source=source, topic=topic, entity=entity, reviewed=reviewed
        )
        stream = open_export(format, filters, plan=plan, period=period)
    except (UnknownFormat, ExportTooLarge, ValueError) as error:
        raise HTTPException(status_code=422, detail=str(error)) from None
    return StreamingResponse(
        stream.chunks,
        media_type=stream.media_type,
        headers={"Content-Disposition": f'attachment; filename="{stream.filename}"'},
    )
