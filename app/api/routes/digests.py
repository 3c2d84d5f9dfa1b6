"""GET /v1/digests: a day's or a week's stories grouped by topic, as Markdown, HTML or JSON."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response

from app.api.deps import ReadSessionDep
from app.api.routes.stories import EntityQuery, RelevanceQuery, TopicQuery, story_filter
from app.api.schemas import ErrorOut
from app.knowledge.digests import MEDIA_TYPES, DigestFormat, PeriodKind, build_digest, render

router = APIRouter(tags=["digests"])

# The HTML digest is a document of its own: nothing in it may run or load anything.
DIGEST_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
PeriodQuery = Annotated[
    PeriodKind, Query(description="day (a UTC day) or week (the ISO week, Monday to Sunday)")
]
DateQuery = Annotated[date | None, Query(description="A day in the period, YYYY-MM-DD (default: today, UTC)")]


@router.get(
    "/digests",
    response_class=Response,
    responses={
        200: {
            "description": "The digest: stories grouped by topic, each with its summary, sources and links.",
            "content": {media_type.split(";")[0]: {} for media_type in MEDIA_TYPES.values()},
        },
        422: {"model": ErrorOut, "description": "Unknown period or format, or a bad date."},
    },
)
def read_digest(
    session: ReadSessionDep,
    period: Annotated[
        PeriodKind, Query(description="day (a UTC day) or week (the ISO week, Monday to Sunday)")
    ] = "day",
    date: Annotated[
        date | None, Query(description="A day in the period, YYYY-MM-DD (default: today, UTC)")
    ] = None,
    format: Annotated[DigestFormat, Query(description="markdown, html or json")] = "markdown",
    topic: TopicQuery = None,
    entity: EntityQuery = None,
    min_relevance: RelevanceQuery = None,
) -> Response:
    """The stories that broke in the period, grouped under their first canonical topic."""
    filters = story_filter(None, None, topic, entity, min_relevance)
    try:
        digest = build_digest(session, period=period, date=date or datetime.now(UTC).date(), filters=filters)
    except ValueError as error:  # e.g. a week that runs past year 9999
        raise HTTPException(status_code=422, detail=str(error)) from None
    headers = {"Content-Security-Policy": DIGEST_CSP} if format == "html" else {}
    return Response(render(digest, format), media_type=MEDIA_TYPES[format], headers=headers)
