"""GET /v1/search: full-text and semantic search over the records, with their stories."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, Field

from app.api.deps import ReadSessionDep
from app.knowledge.search import MAX_LIMIT, MAX_QUERY_CHARS, SearchHit, SearchResult, search

router = APIRouter(prefix="/search", tags=["search"])


class SearchHitOut(BaseModel):
    record_id: str
    story_id: str | None
    score: float = Field(description="Reciprocal rank fusion of the two channels (higher is better)")
    channel: Literal["text", "semantic", "both"] = Field(description="Which channel found the record")
    headline: str
    summary: str
    source: str
    date: datetime | None
    url: str | None
    text_rank: int | None = Field(description="Rank in the full-text channel (1 = best), if it matched")
    similarity: float | None = Field(description="Cosine with the query, if the semantic channel matched")
    record_url: str

    @classmethod
    def from_hit(cls, hit: SearchHit) -> SearchHitOut:
        return cls(
            record_id=hit.record_id,
            story_id=hit.story_id,
            score=hit.score,
            channel=hit.channel,
            headline=hit.headline,
            summary=hit.summary,
            source=hit.source,
            date=hit.date,
            url=hit.url,
            text_rank=hit.text_rank,
            similarity=hit.similarity,
            record_url=f"/v1/records/{hit.record_id}",
        )


class SearchStoryOut(BaseModel):
    id: str
    title: str
    score: float = Field(description="Its best matching record's score")
    records: list[SearchHitOut] = Field(description="Its records among the hits, best first")


class SearchOut(BaseModel):
    query: str
    semantic: bool = Field(description="Whether the semantic channel ran (false: full-text only)")
    hits: list[SearchHitOut]
    stories: list[SearchStoryOut]

    @classmethod
    def from_result(cls, result: SearchResult) -> SearchOut:
        return cls(
            query=result.query,
            semantic=result.semantic,
            hits=[SearchHitOut.from_hit(hit) for hit in result.hits],
            stories=[
                SearchStoryOut(
                    id=story.story_id,
                    title=story.title,
                    score=story.score,
                    records=[SearchHitOut.from_hit(hit) for hit in story.records],
                )
                for story in result.stories
            ],
        )


@router.get("", response_model=SearchOut)
def search_records(
    session: ReadSessionDep,
    q: Annotated[str, Query(description=f"Words or a question, 1-{MAX_QUERY_CHARS} characters")],
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Records to return")] = 20,
    since: Annotated[datetime | None, Query(description="Item date from (inclusive), ISO 8601")] = None,
    until: Annotated[datetime | None, Query(description="Item date until (exclusive), ISO 8601")] = None,
    semantic: Annotated[bool, Query(description="false: full-text channel only")] = True,
) -> SearchOut:
    """Records matching `q` in headline, summary, topics, entities or the item's text (full-text),
    or close to it in meaning (embedding similarity), fused into one ranked list; then the stories
    of those records, in the order of their best record."""
    try:
        result = search(session, q=q, limit=limit, since=since, until=until, semantic=semantic)
    except ValueError as error:
        raise HTTPException(status_code=422, detail=str(error)) from None
    return SearchOut.from_result(result)
