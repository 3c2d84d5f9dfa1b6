"""GET /v1/topics: the topic vocabulary with record counts; rename and merge entries."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, Field

from app.api.deps import ReadSessionDep, SessionDep
from app.api.schemas import ErrorOut
from app.knowledge.embeddings import get_minilm
from app.knowledge.topics import (
    TopicConflict,
    get_topic,
    list_topics,
    merge_topics,
    rename_topic,
    topic_record_count,
)
from app.models import Topic

router = APIRouter(prefix="/topics", tags=["topics"])


class TopicOut(BaseModel):
    id: str
    name: str
    records: int = Field(description="Records that carry it")


class TopicPageOut(BaseModel):
    items: list[TopicOut]
    limit: int
    offset: int


class RenameIn(BaseModel):
    name: str = Field(min_length=2, max_length=48)


class TopicMergeIn(BaseModel):
    into: str = Field(min_length=1, max_length=32, description="The entry that stays")
    merged: str = Field(min_length=1, max_length=32, description="The entry folded into it")


class TopicMergeOut(BaseModel):
    topic: TopicOut
    records_moved: int


def _topic(session: ReadSessionDep, topic_id: str) -> Topic:
    topic = get_topic(session, topic_id=topic_id)
    if topic is None:
        raise HTTPException(status_code=404, detail=f"topic {topic_id} not found")
    return topic


def _count(session: ReadSessionDep, topic: Topic) -> TopicOut:
    return TopicOut(id=topic.id, name=topic.name, records=topic_record_count(session, topic_id=topic.id))


@router.get("", response_model=TopicPageOut)
def read_topics(
    session: ReadSessionDep,
    prefix: Annotated[str | None, Query(max_length=48, description="Names starting with this")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> TopicPageOut:
    """Vocabulary entries, the most used first."""
    rows = list_topics(session, limit=limit, offset=offset, prefix=prefix)
    return TopicPageOut(
        items=[TopicOut(id=row.id, name=row.name, records=row.records) for row in rows],
        limit=limit,
        offset=offset,
    )


@router.patch(
    "/{topic_id}",
    response_model=TopicOut,
    responses={400: {"model": ErrorOut}, 404: {"model": ErrorOut}, 409: {"model": ErrorOut}},
)
def patch_topic(topic_id: str, body: RenameIn, session: SessionDep) -> TopicOut:
    """Rename an entry; the old spelling stays an alias, so the model's next use of it lands here."""
    topic = _topic(session, topic_id)
    try:
        rename_topic(session, topic=topic, name=body.name, embed=get_minilm().vectors)
    except TopicConflict as conflict:
        raise HTTPException(status_code=409, detail=str(conflict)) from None
    except ValueError as error:
        raise HTTPException(status_code=422, detail=str(error)) from None
    session.commit()
    return _count(session, topic)


@router.post(
    "/merge",
    response_model=TopicMergeOut,
    responses={400: {"model": ErrorOut}, 404: {"model": ErrorOut}, 422: {"model": ErrorOut}},
)
def post_merge(body: TopicMergeIn, session: SessionDep) -> TopicMergeOut:
    """Fold one entry into another: every record that had it now has the one that stays."""
    into, merged = _topic(session, body.into), _topic(session, body.merged)
    if into.id == merged.id:
        raise HTTPException(status_code=422, detail="into and merged are the same topic")
    moved = merge_topics(session, into=into, merged=merged)
    session.commit()
    return TopicMergeOut(topic=_count(session, into), records_moved=moved)
