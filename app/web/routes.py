"""The review page (/review): browse records, read one beside its source text, correct and label it.

Server-rendered (Jinja2), no JavaScript needed. Corrections go through the same validation as
`PUT /v1/records/{id}/correction`; an invalid one is shown again with inline errors and nothing
is saved. Every form post of a signed-in browser carries the session's CSRF token and names this
site as its origin (`check_form_post`).
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import date, datetime, time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from markupsafe import Markup

from app.api.deps import REVIEW_SESSION_COOKIE, sent_api_key
from app.contract import CATEGORIES, GeneratedMetadata, html_to_text
from app.contract.metadata import Sentiment, Urgency
from app.core.config import get_settings
from app.core.db import read_session_scope, session_scope
from app.core.security import configured_key_digests, key_is_valid
from app.corrections import (
    CorrectionInvalid,
    clear_correction,
    form_to_correction,
    save_correction,
    validate_correction,
)
from app.crud import get_record
from app.knowledge.story_query import get_story_view
from app.models import Record
from app.record_query import RecordFilter, RecordRow, distinct_sources, get_row, page_records

PAGE_SIZE = 25
FILTER_FIELDS = ("since", "until", "source", "topic", "entity", "reviewed")

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
router = APIRouter(prefix="/review", include_in_schema=False)


def _parse_day(value: str, name: str, errors: dict[str, str]) -> datetime | None:
    if not value:
        return None
    try:
        if len(value) == 10:  # a date from <input type=date>: the whole day counts
            return datetime.combine(date.fromisoformat(value), time.min)
        return datetime.fromisoformat(value)
    except ValueError:
        errors[name] = f"{name} must be a date such as 2025-10-16"
        return None


def _filter_args(request: Request) -> dict[str, str]:
    # NUL: no meaning in a filter, and PostgreSQL cannot compare text containing it.
    params = request.query_params
    return {name: params.get(name, "").replace("\x00", "").strip()[:200] for name in FILTER_FIELDS}


def _filters(args: dict[str, str], errors: dict[str, str]) -> RecordFilter:
    since = _parse_day(args["since"], "since", errors)
    until = _parse_day(args["until"], "until", errors)
    if until is not None and len(args["until"]) == 10:
        until = until.replace(hour=23, minute=59, second=59, microsecond=999999)  # inclusive end day
    reviewed = {"yes": True, "no": False}.get(args["reviewed"])
    try:
        return RecordFilter(
            since=since, until=until, source=args["source"] or None, topic=args["topic"] or None,
            entity=args["entity"] or None, reviewed=reviewed,
        )  # fmt: skip
    except ValueError as error:
        errors["until"] = str(error)
        return RecordFilter(source=args["source"] or None, reviewed=reviewed)


def _query(args: dict[str, str], **extra: Any) -> str:
    values = {k: v for k, v in {**args, **extra}.items() if v not in ("", None)}
    return urlencode(values)


@router.get("", response_class=HTMLResponse)
def review_list(request: Request) -> Response:
    args = _filter_args(request)
    errors: dict[str, str] = {}
    filters = _filters(args, errors)
    try:
        page = max(1, int(request.query_params.get("page", "1")))
    except ValueError:
        page = 1
    with read_session_scope() as session:  # one snapshot: the total, the page and the sources agree
        result = page_records(session, filters=filters, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
        sources = distinct_sources(session)
    pages = max(1, -(-result.total // PAGE_SIZE))
    context = {
        "args": args,
        "errors": errors,
        "rows": result.rows,
        "total": result.total,
        "page": page,
        "pages": pages,
        "sources": sources,
        "query": _query(args),
        "prev_query": _query(args, page=page - 1) if page > 1 else None,
        "next_query": _query(args, page=page + 1) if page < pages else None,
    }
    status = 422 if errors else 200
    return templates.TemplateResponse(request, "review_list.html", context, status_code=status)


def _form_values(metadata: dict[str, Any]) -> dict[str, Any]:
    """Metadata as the form shows it: list fields one entry per line."""
    return {
        "summary": metadata.get("summary", ""),
        "key_topics": "\n".join(metadata.get("key_topics", [])),
        "entities": "\n".join(metadata.get("entities", [])),
        "categories": list(metadata.get("categories", [])),
        "sentiment": metadata.get("sentiment", ""),
        "urgency_level": metadata.get("urgency_level", ""),
        "relevance_score": metadata.get("relevance_score", ""),
        "action_items": "\n".join(metadata.get("action_items", [])),
    }


def _render_record(
    request: Request,
    row: RecordRow,
    *,
    values: dict[str, Any],
    errors: dict[str, list[str]] | None = None,
    status_code: int = 200,
) -> Response:
    args = _filter_args(request)
    source_text = row.content or ""
    if row.has_html:
        source_text = html_to_text(source_text, is_html=True)
    with read_session_scope() as session:
        record = session.get(Record, row.id)
        story = get_story_view(session, story_id=record.story_id) if record and record.story_id else None
    context = {
        "row": row,
        "story": story,
        "values": values,
        "errors": errors or {},
        "source_text": source_text,
        "model_output": {name: row.data.get(name) for name in GeneratedMetadata.model_fields},
        "categories": CATEGORIES,
        "sentiments": [s.value for s in Sentiment],
        "urgencies": [u.value for u in Urgency],
        "query": _query(args),
        "saved": request.query_params.get("saved"),
    }
    return templates.TemplateResponse(request, "review_record.html", context, status_code=status_code)


def _row_or_404(record_id: str) -> RecordRow:
    row = get_row(record_id)
    if row is None:
        raise HTTPException(status_code=404, detail=f"record {record_id} not found")
    return row


@router.get("/records/{record_id}", response_class=HTMLResponse)
def review_record(request: Request, record_id: str) -> Response:
    row = _row_or_404(record_id)
    return _render_record(request, row, values=_form_values(row.metadata))


def same_origin(request: Request) -> bool:
    """A form post must name this site as where it comes from: Origin (browsers send it on every
    POST), else Referer (sent within the site: Referrer-Policy same-origin). Behind a reverse
    proxy the page's host is X-Forwarded-Host, believed only from ENHANCER_TRUSTED_PROXIES."""
    source = request.headers.get("origin")
    if not source or source == "null":
        source = request.headers.get("referer")
    if not source:
        return False
    hosts = {request.headers.get("host", "")}
    client = request.client.host if request.client else None
    if client is not None and client in get_settings().trusted_proxy_hosts:
        hosts.add(request.headers.get("x-forwarded-host", ""))
    return urlsplit(source).netloc in hosts - {""}


CSRF_FIELD = "csrf_token"
_CSRF_CONTEXT = b"enhancer review form post"


def csrf_token(request: Request) -> str:
    """The signed-in session's form token: an HMAC of the session's random token (the httponly
    cookie), so each session has its own and the server stores nothing more. A page that another
    site cannot read is the only place to learn it. Empty without a session (the API key header)."""
    session = request.cookies.get(REVIEW_SESSION_COOKIE)
    if not session:
        return ""
    return hmac.new(session.encode(), _CSRF_CONTEXT, hashlib.sha256).hexdigest()


def _header_key_valid(request: Request) -> bool:
    """A script's API key header: no browser sends that cross-site, so such a post needs no token."""
    key = sent_api_key(request)
    return key is not None and key_is_valid(key, configured_key_digests(get_settings()))


async def check_form_post(request: Request) -> None:
    """Every state-changing review post: its origin is this site, and (signed in with a session)
    the form carries the session's CSRF token. 403 otherwise, before anything is read or saved."""
    if not same_origin(request):
        raise HTTPException(status_code=403, detail="cross-site form post refused")
    if _header_key_valid(request):
        return
    expected = csrf_token(request)
    sent = str((await request.form()).get(CSRF_FIELD) or "")
    if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise HTTPException(
            status_code=403,
            detail="the form's CSRF token is missing or wrong (a form of another session, or from "
            "another site): reload the page and submit it again; nothing was saved",
        )


FormPostDep = Depends(check_form_post)


def csrf_field(request: Request) -> Markup:
    """The hidden input every review form carries (`{{ csrf_field(request) }}` in the templates)."""
    return Markup('<input type="hidden" name="{}" value="{}">').format(CSRF_FIELD, csrf_token(request))


templates.env.globals["csrf_field"] = csrf_field


@router.post("/records/{record_id}", response_class=HTMLResponse, dependencies=[FormPostDep])
async def review_save(request: Request, record_id: str) -> Response:
    form = await request.form()
    row = _row_or_404(record_id)
    args = _filter_args(request)
    if form.get("action") == "revert":
        with session_scope() as session:
            record = get_record(session, record_id=record_id)
            if record is not None:
                clear_correction(session, record=record)
        target = f"/review/records/{record_id}?{_query(args, saved='reverted')}"
        return RedirectResponse(target, status_code=303)
    payload = form_to_correction(form, getlist=form.getlist)
    try:
        metadata = validate_correction(payload)
    except CorrectionInvalid as invalid:
        values = {**payload, **{k: form.get(k, "") for k in ("key_topics", "entities", "action_items")}}
        return _render_record(request, row, values=values, errors=invalid.by_field(), status_code=422)
    with session_scope() as session:
        record = get_record(session, record_id=record_id)
        if record is None:
            raise HTTPException(status_code=404, detail=f"record {record_id} not found")
        save_correction(session, record=record, metadata=metadata)
    return RedirectResponse(f"/review/records/{record_id}?{_query(args, saved='1')}", status_code=303)
