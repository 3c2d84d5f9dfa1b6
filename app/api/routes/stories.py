"""GET /v1/stories: records grouped into stories, with their merged view; a person's split and merge."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, Field

from app.api.deps import ReadSessionDep, SessionDep
from app.api.schemas import ErrorOut
from app.crud import get_record
from app.knowledge.stories import merge_stories, resolve_story, split_record
from app.knowledge.story_query import BadCursor, StoryFilter, StoryView, get_story_view, page_stories
from app.models import Story

router = APIRouter(prefix="/stories", tags=["stories"])

MAX_LIMIT = 100


class StoryRecordOut(BaseModel):
    id: str
    source: str
    date: datetime
    headline: str
    summary: str
    url: str | None
    relevance_score: int | None
    entities: list[str]
    topics: list[str] = Field(description="Canonical topics (the vocabulary's names)")
    email_id: str | None


class StoryOut(BaseModel):
    id: str
    title: str
    summary: str = Field(description="The summary of its most relevant record")
    first_date: datetime
    last_date: datetime
    updated_at: datetime
    max_relevance: int | None
    links: list[str] = Field(description="Every source link, in the order the records came")
    sources: list[str] = Field(description="Every newsletter that told it")
    entities: list[str] = Field(description="The union of its records' entities, most named first")
    topics: list[str] = Field(description="The union of its records' canonical topics")
    records: list[StoryRecordOut]
    url: str

    @classmethod
    def from_view(cls, view: StoryView) -> StoryOut:
        return cls.model_validate({**view.as_json(), "url": f"/v1/stories/{view.id}"})


class StoryPageOut(BaseModel):
    items: list[StoryOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last")


class SplitIn(BaseModel):
    record_id: str = Field(min_length=1, max_length=32)


class MergeIn(BaseModel):
    into: str = Field(min_length=1, max_length=32, description="The story that stays")
    merged: str = Field(min_length=1, max_length=32, description="The story folded into it")


def story_filter(
    since: datetime | None,
    until: datetime | None,
    topic: str | None,
    entity: str | None,
    min_relevance: int | None,
) -> StoryFilter:
    try:
        return StoryFilter(since=since, until=until, topic=topic, entity=entity, min_relevance=min_relevance)
    except ValueError as error:
        raise HTTPException(status_code=422, detail=str(error)) from None


SinceQuery = Annotated[datetime | None, Query(description="Stories still running on or after (ISO 8601)")]
UntilQuery = Annotated[datetime | None, Query(description="Stories that broke before (ISO 8601)")]
TopicQuery = Annotated[str | None, Query(max_length=200, description="A canonical topic, or any alias of it")]
EntityQuery = Annotated[str | None, Query(max_length=200, description="An entity one of its records names")]
RelevanceQuery = Annotated[int | None, Query(ge=1, le=10, description="Highest relevance at least")]


@router.get("", response_model=StoryPageOut, responses={422: {"model": ErrorOut}})
def read_stories(
    session: ReadSessionDep,
    since: SinceQuery = None,
    until: UntilQuery = None,
    topic: TopicQuery = None,
    entity: EntityQuery = None,
    min_relevance: RelevanceQuery = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 20,
) -> StoryPageOut:
    """Stories newest first (by the date they broke), each with its records and sources."""
    filters = story_filter(since, until, topic, entity, min_relevance)
    try:
        page = page_stories(session, filters=filters, limit=limit, cursor=cursor)
    except BadCursor as error:
        raise HTTPException(status_code=422, detail=str(error)) from None
    return StoryPageOut(items=[StoryOut.from_view(view) for view in page.items], next_cursor=page.next_cursor)


def _story(session: ReadSessionDep, story_id: str) -> Story:
    story = resolve_story(session, story_id=story_id)
    if story is None or story.record_count == 0:
        raise HTTPException(status_code=404, detail=f"story {story_id} not found")
    return story


@router.get(
    "/{story_id}",
    response_model=StoryOut,
    responses={404: {"model": ErrorOut}, 308: {"description": "Merged into the story in Location"}},
)
def read_story(story_id: str, session: ReadSessionDep) -> StoryOut | RedirectResponse:
    story = _story(session, story_id)
    if story.id != story_id:
        return RedirectResponse(f"/v1/stories/{story.id}", status_code=308)
    view = get_story_view(session, story_id=story.id)
    assert view is not None
    return StoryOut.from_view(view)


@router.post(
    "/split",
    response_model=StoryOut,
    status_code=201,
    responses={400: {"model": ErrorOut}, 404: {"model": ErrorOut}},
)
def post_split(body: SplitIn, session: SessionDep) -> StoryOut:
    """Take a record out of its story into one of its own; grouping will not move it back."""
    record = get_record(session, record_id=body.record_id)
    if record is None:
        raise HTTPException(status_code=404, detail=f"record {body.record_id} not found")
    if record.story_id is None:
        raise HTTPException(
            status_code=409, detail=f"record {body.record_id} is not indexed yet: try again shortly"
        )
    story = split_record(session, record=record)
    session.commit()
    view = get_story_view(session, story_id=story.id)
    assert view is not None
    return StoryOut.from_view(view)


@router.post(
    "/merge",
    response_model=StoryOut,
    responses={400: {"model": ErrorOut}, 404: {"model": ErrorOut}, 422: {"model": ErrorOut}},
)
def post_merge(body: MergeIn, session: SessionDep) -> StoryOut:
    """Fold one story into another: its records move and stay, its id leads to the merged story."""
    into, merged = _story(session, body.into), _story(session, body.merged)
    if into.id == merged.id:
        raise HTTPException(status_code=422, detail="into and merged are the same story")
    story = merge_stories(session, into=into, merged=merged)
    session.commit()
    view = get_story_view(session, story_id=story.id)
    assert view is not None
    return StoryOut.from_view(view)
