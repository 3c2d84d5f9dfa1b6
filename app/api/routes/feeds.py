"""Atom feeds of stories: tokens managed with the API key (/v1/feeds), read with the token alone.

`router` goes under the keyed /v1 router; `atom_router` holds only GET /v1/feeds/stories.atom and is
mounted outside it (app/main.py): RSS readers cannot send headers, so the token in the URL is the
credential, and it opens nothing but its own feed.
"""

from __future__ import annotations

from datetime import datetime
from email.utils import format_datetime
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import BaseModel, Field

from app.api.deps import ReadSessionDep, SessionDep
from app.api.routes.stories import story_filter
from app.api.schemas import ErrorOut
from app.crud import as_utc
from app.knowledge.feeds import (
    FEED_ENTRIES,
    FEED_PATH,
    MEDIA_TYPE,
    create_feed,
    feed_for_token,
    feed_stories,
    list_feeds,
    render_atom,
    revoke_feed,
)
from app.models import FeedToken

router = APIRouter(prefix="/feeds", tags=["feeds"])
atom_router = APIRouter(tags=["feeds"])

_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorOut}}
FEED_NOT_FOUND = "feed not found"  # unknown, revoked or missing token: one answer


class FeedIn(BaseModel):
    name: str = Field(min_length=1, max_length=200, description="What the feed is for (shown as its title)")
    since: datetime | None = Field(default=None, description="Only stories still running on or after")
    topic: str | None = Field(default=None, max_length=200, description="A canonical topic, or any alias")
    entity: str | None = Field(default=None, max_length=200, description="An entity one of its records names")
    min_relevance: int | None = Field(default=None, ge=1, le=10, description="Highest relevance at least")


class FeedOut(BaseModel):
    id: str
    name: str
    filters: dict[str, Any] = Field(description="The stored filters: since, topic, entity, min_relevance")
    created_at: datetime
    revoked_at: datetime | None

    @classmethod
    def from_row(cls, feed: FeedToken) -> FeedOut:
        return cls(
            id=feed.id,
            name=feed.name,
            filters=dict(feed.filters or {}),
            created_at=as_utc(feed.created_at),  # type: ignore[arg-type]
            revoked_at=as_utc(feed.revoked_at),
        )


class FeedCreated(FeedOut):
    url: str = Field(
        description="The feed's URL, with its token: shown only now (only its sha256 is stored). "
        "Anyone with it can read this feed, and nothing else; DELETE /v1/feeds/{id} revokes it."
    )


@router.post(
    "",
    response_model=FeedCreated,
    status_code=201,
    responses={400: {"model": ErrorOut}, 422: {"model": ErrorOut}},
)
def post_feed(body: FeedIn, request: Request, session: SessionDep) -> FeedCreated:
    """A new feed with its own token; subscribe to the returned URL in any RSS/Atom reader."""
    filters = story_filter(body.since, None, body.topic, body.entity, body.min_relevance)
    name = " ".join(body.name.split())
    if not name or "\x00" in name:
        raise HTTPException(status_code=422, detail="name must have visible characters")
    feed, token = create_feed(session, name=name, filters=filters)
    url = str(request.url_for("read_feed").include_query_params(token=token))
    session.commit()
    return FeedCreated(**FeedOut.from_row(feed).model_dump(), url=url)


@router.get("", response_model=list[FeedOut])
def get_feeds(session: ReadSessionDep) -> list[FeedOut]:
    """Every feed, newest first, revoked ones included (never their tokens)."""
    return [FeedOut.from_row(feed) for feed in list_feeds(session)]


@router.delete("/{feed_id}", status_code=204, response_class=Response, responses=_NOT_FOUND)
def delete_feed(feed_id: str, session: SessionDep) -> Response:
    """Revoke the feed: its URL answers 404 from now on."""
    if revoke_feed(session, feed_id=feed_id) is None:
        raise HTTPException(status_code=404, detail=f"feed {feed_id} not found")
    session.commit()
    return Response(status_code=204)


@atom_router.get(
    FEED_PATH,
    name="read_feed",
    response_class=Response,
    responses={
        200: {"description": "The Atom 1.0 feed", "content": {"application/atom+xml": {}}},
        304: {"description": "Unchanged since the ETag sent in If-None-Match"},
        404: {"model": ErrorOut, "description": "No live feed for this token"},
        422: {"model": ErrorOut, "description": "A query parameter other than token"},
    },
)
def read_feed(request: Request, session: ReadSessionDep, token: str | None = None) -> Response:
    """The feed's newest stories. No API key: `token` (from POST /v1/feeds) is the credential, and
    the feed's filters are the ones stored with it; the URL takes no others."""
    extra = sorted(set(request.query_params) - {"token"})
    if extra:
        raise HTTPException(
            status_code=422,
            detail=f"this URL takes only token (not {', '.join(extra)[:200]}): a feed's filters are "
            "set when it is created (POST /v1/feeds)",
        )
    feed = feed_for_token(session, token)
    if feed is None:
        raise HTTPException(status_code=404, detail=FEED_NOT_FOUND)
    atom = render_atom(feed, feed_stories(session, feed, limit=FEED_ENTRIES), self_url=str(request.url))
    headers = {
        "ETag": atom.etag,
        "Last-Modified": format_datetime(atom.updated, usegmt=True),
        "Cache-Control": "private, no-cache",  # the URL holds a secret: no shared cache keeps it
    }
    wanted = {tag.strip() for tag in request.headers.get("if-none-match", "").split(",")}
    if atom.etag in wanted or f"W/{atom.etag}" in wanted or "*" in wanted:
        return Response(status_code=304, headers=headers)
    return Response(atom.body, media_type=MEDIA_TYPE, headers=headers)
