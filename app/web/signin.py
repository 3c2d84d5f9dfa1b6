"""Signing in to the review page: a form POST exchanges the API key for an opaque session.

The cookie holds a random token (256 bits); the database holds its sha256 and expiry (the
`review_sessions` table), so a session can be ended at once (sign out) and a leaked database
holds no usable token. The key itself travels only in the POST body: never in a URL, a cookie or a
log line.
"""

from __future__ import annotations

import secrets
from datetime import timedelta

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.api.deps import REVIEW_SESSION_COOKIE, SettingsDep
from app.core.config import Settings
from app.core.db import session_scope
from app.core.security import configured_key_digests, key_is_valid
from app.crud import create_review_session, delete_review_session
from app.web.routes import check_form_post, same_origin, templates

router = APIRouter(prefix="/review", include_in_schema=False)


def _page(request: Request, settings: Settings, status_code: int = 200, **context: object) -> Response:
    hours = round(settings.review_session_hours)
    values = {"signin_page": True, "key_file": settings.api_key_file, "hours": hours, **context}
    return templates.TemplateResponse(request, "review_login.html", values, status_code=status_code)


@router.get("/login", response_class=HTMLResponse)
async def signin_page(request: Request, settings: SettingsDep) -> Response:
    return _page(request, settings, signed_out=request.query_params.get("signed_out") == "1")


def _start_session(token: str, settings: Settings) -> None:
    with session_scope() as session:
        create_review_session(session, token=token, max_age=timedelta(hours=settings.review_session_hours))


@router.post("/login", response_class=HTMLResponse)
async def sign_in(request: Request, settings: SettingsDep) -> Response:
    # No session yet, so no CSRF token: the origin check (and the key in the form) stand for it.
    if not same_origin(request):
        raise HTTPException(status_code=403, detail="cross-site form post refused")
    key = str((await request.form()).get("api_key") or "").strip()
    if not key or not key_is_valid(key, configured_key_digests(settings)):
        return _page(request, settings, status_code=401, error="That is not an API key of this server.")
    token = secrets.token_urlsafe(32)
    await run_in_threadpool(_start_session, token, settings)
    response = RedirectResponse("/review", status_code=303)
    response.set_cookie(
        REVIEW_SESSION_COOKIE,
        token,
        path="/review",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        max_age=int(settings.review_session_hours * 3600),
    )
    return response


def _end_session(token: str) -> None:
    with session_scope() as session:
        delete_review_session(session, token=token)


@router.post("/logout")
async def sign_out(request: Request) -> Response:
    token = request.cookies.get(REVIEW_SESSION_COOKIE)
    if token:
        await check_form_post(request)  # the origin, and the session's CSRF token
        await run_in_threadpool(_end_session, token)
    elif not same_origin(request):
        raise HTTPException(status_code=403, detail="cross-site form post refused")
    response = RedirectResponse("/review/login?signed_out=1", status_code=303)
    response.delete_cookie(REVIEW_SESSION_COOKIE, path="/review")
    return response
