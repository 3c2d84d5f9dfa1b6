"""Review pages for the knowledge layer: a story with its records (split one out, merge stories),
the topic vocabulary (rename, merge), and search.

The same rules as the record pages: server-rendered, no script, every form post checked for its
origin and CSRF token (`check_form_post`), and the decisions go through the knowledge layer's own
functions, which the API's POST /v1/stories/split|merge and /v1/topics routes use too.
"""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.core.db import read_session_scope, session_scope
from app.crud import get_record
from app.knowledge.embeddings import get_minilm
from app.knowledge.search import search
from app.knowledge.stories import merge_stories, resolve_story, split_record
from app.knowledge.story_query import get_story_view
from app.knowledge.topics import TopicConflict, get_topic, list_topics, merge_topics, rename_topic
from app.web.routes import FormPostDep, templates

router = APIRouter(prefix="/review", include_in_schema=False)
TOPICS_PAGE = 200


@router.get("/stories/{story_id}", response_class=HTMLResponse)
def review_story(request: Request, story_id: str) -> Response:
    with read_session_scope() as session:
        story = resolve_story(session, story_id=story_id)
        if story is not None and story.id != story_id:
            return RedirectResponse(f"/review/stories/{story.id}", status_code=303)
        view = get_story_view(session, story_id=story_id) if story is not None else None
    if view is None:
        raise HTTPException(status_code=404, detail=f"story {story_id} not found")
    context = {"story": view, "notice": request.query_params.get("notice"), "error": None}
    return templates.TemplateResponse(request, "review_story.html", context)


@router.post("/records/{record_id}/split", dependencies=[FormPostDep])
def review_split(record_id: str) -> Response:
    with session_scope() as session:
        record = get_record(session, record_id=record_id)
        if record is None or record.story_id is None:
            raise HTTPException(status_code=404, detail=f"record {record_id} is in no story")
        story = split_record(session, record=record)
        story_id = story.id
    return RedirectResponse(f"/review/stories/{story_id}?notice=split", status_code=303)


@router.post("/stories/{story_id}/merge", dependencies=[FormPostDep])
async def review_merge_story(request: Request, story_id: str) -> Response:
    form = await request.form()
    other_id = str(form.get("merged") or "").strip()[:32]
    with session_scope() as session:
        into, merged = resolve_story(session, story_id=story_id), resolve_story(session, story_id=other_id)
        if into is None:
            raise HTTPException(status_code=404, detail=f"story {story_id} not found")
        if merged is None or merged.id == into.id or merged.record_count == 0:
            view = get_story_view(session, story_id=into.id)
            error = (
                f"no other story with id {other_id!r}" if other_id else "give the id of the story to merge"
            )
            context = {"story": view, "notice": None, "error": error}
            return templates.TemplateResponse(request, "review_story.html", context, status_code=422)
        merge_stories(session, into=into, merged=merged)
    return RedirectResponse(f"/review/stories/{story_id}?notice=merged", status_code=303)


@router.get("/topics", response_class=HTMLResponse)
def review_topics(request: Request) -> Response:
    prefix = request.query_params.get("prefix", "").replace("\x00", "").strip()[:48] or None
    with read_session_scope() as session:
        topics = list_topics(session, limit=TOPICS_PAGE, prefix=prefix)
    context = {
        "topics": topics,
        "prefix": prefix or "",
        "notice": request.query_params.get("notice"),
        "error": request.query_params.get("error"),
    }
    return templates.TemplateResponse(request, "review_topics.html", context)


@router.post("/topics/{topic_id}", dependencies=[FormPostDep])
async def review_topic_change(request: Request, topic_id: str) -> Response:
    """One form per topic: rename it, or merge it into another entry."""
    form = await request.form()
    action = form.get("action")
    with session_scope() as session:
        topic = get_topic(session, topic_id=topic_id)
        if topic is None:
            raise HTTPException(status_code=404, detail=f"topic {topic_id} not found")
        try:
            if action == "rename":
                rename_topic(
                    session, topic=topic, name=str(form.get("name") or "")[:48], embed=get_minilm().vectors
                )
                notice = "renamed"
            elif action == "merge":
                into = get_topic(session, topic_id=str(form.get("into") or "")[:32])
                if into is None:
                    raise ValueError("choose the topic to merge into")
                merge_topics(session, into=into, merged=topic)
                notice = "merged"
            else:
                raise ValueError("unknown action")
        except (TopicConflict, ValueError) as error:
            session.rollback()
            return RedirectResponse(f"/review/topics?error={quote(str(error))}", status_code=303)
    return RedirectResponse(f"/review/topics?notice={notice}", status_code=303)


@router.get("/search", response_class=HTMLResponse)
def review_search(request: Request) -> Response:
    q = request.query_params.get("q", "").replace("\x00", "").strip()[:500]
    result, error = None, None
    if q:
        with read_session_scope() as session:
            try:
                result = search(session, q=q, limit=30)
            except ValueError as problem:
                error = str(problem)
    context = {"q": q, "result": result, "error": error}
    return templates.TemplateResponse(
        request, "review_search.html", context, status_code=422 if error else 200
    )
