"""Typed dependencies."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session
from starlette.applications import Starlette

from app.api.rate_limit import RateLimiter
from app.api.submissions import SubmissionWriter
from app.core.config import Settings, get_settings
from app.core.db import read_session_scope, session_scope
from app.core.security import configured_key_digests, key_is_valid


def get_db() -> Iterator[Session]:
    """A unit of work per request: committed when the route returns, rolled back on error."""
    with session_scope() as session:
        yield session


def get_read_db() -> Iterator[Session]:
    """A read-only session (SQLite: no write lock) for GET routes."""
    with read_session_scope() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_db)]
ReadSessionDep = Annotated[Session, Depends(get_read_db)]


async def current_settings() -> Settings:
    """get_settings as an async dependency: FastAPI runs sync ones in a thread pool, per request."""
    return get_settings()


SettingsDep = Annotated[Settings, Depends(current_settings)]


def open_submission_writer(app: Starlette, settings: Settings) -> SubmissionWriter:
    """The app's one writer thread (app/api/submissions.py); the lifespan opens it."""
    state = app.state
    if getattr(state, "submission_writer", None) is None:
        state.submission_writer = SubmissionWriter(settings)
    return state.submission_writer  # type: ignore[no-any-return]


def close_submission_writer(app: Starlette) -> None:
    """At shutdown: store what is waiting, publish it, stop the threads."""
    state = app.state
    writer = getattr(state, "submission_writer", None)
    if writer is not None:
        state.submission_writer = None  # a restarted app gets a fresh writer
        writer.close()


async def submission_writer(request: Request, settings: SettingsDep) -> SubmissionWriter:
    # Opened here too when the app runs without its lifespan (a TestClient used outside `with`).
    return open_submission_writer(request.app, settings)


SubmissionWriterDep = Annotated[SubmissionWriter, Depends(submission_writer)]


# API keys ---------------------------------------------------------------------------------
# Applied once to the /v1 router in app/main.py, so every /v1 route (present and future) needs a key.
# The scheme objects below only read headers (auto_error=False: we answer 401/403 ourselves) and
# put both ways of sending the key into the OpenAPI spec.

API_KEY_HEADER = "X-API-Key"
REVIEW_SESSION_COOKIE = "enhancer_review_session"  # an opaque session token (see require_review_key)
API_KEY_QUERY = "api_key"  # no longer accepted: only recognised, to send old links to the sign-in page
_UNAUTHORIZED_HEADERS = {"WWW-Authenticate": 'Bearer realm="enhancer"'}

_header_scheme = APIKeyHeader(
    name=API_KEY_HEADER, auto_error=False, description="API key (ENHANCER_API_KEYS or <data dir>/api_key)"
)
_bearer_scheme = HTTPBearer(auto_error=False, description="The same API key as a bearer token")


def _check_key(key: str | None, settings: Settings) -> None:
    if not key:
        raise HTTPException(
            status_code=401,
            detail=f"API key required: send it in the {API_KEY_HEADER} header "
            "or as 'Authorization: Bearer <key>'",
            headers=_UNAUTHORIZED_HEADERS,
        )
    digests = configured_key_digests(settings)
    if not key_is_valid(key, digests):
        detail = "invalid API key" if digests else "no API key is configured on this server"
        raise HTTPException(status_code=403, detail=detail)


def rate_limiter(app: Starlette, settings: Settings) -> RateLimiter:
    """The app's buckets (app/api/rate_limit.py), made afresh when the settings change."""
    limiter: RateLimiter | None = getattr(app.state, "rate_limiter", None)
    wanted = (settings.rate_limit_per_second, settings.rate_limit_burst)
    if limiter is None or (limiter.per_second, limiter.burst) != wanted:
        limiter = app.state.rate_limiter = RateLimiter(*wanted)
    return limiter


async def require_api_key(  # async: no I/O here, and a thread hop per request would cost more
    request: Request,
    settings: SettingsDep,
    header_key: Annotated[str | None, Security(_header_scheme)] = None,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer_scheme)] = None,
) -> None:
    """401 without a key, 403 with a wrong one. Header `X-API-Key`, or `Authorization: Bearer`.
    Then the key's rate limit: 429 with Retry-After over it (a request with no valid key is not counted)."""
    key = header_key or (bearer.credentials if bearer else None)
    _check_key(key, settings)
    rate_limiter(request.app, settings).check(key or "")


ApiKeyDep = Depends(require_api_key)


def sent_api_key(request: Request) -> str | None:
    """The API key a request sends, in the X-API-Key header or as 'Authorization: Bearer <key>'
    (for checks outside the /v1 dependency, which reads the same two through FastAPI's schemes)."""
    authorization = request.headers.get("authorization", "")
    bearer = authorization[7:].strip() if authorization[:7].lower() == "bearer " else None
    return request.headers.get(API_KEY_HEADER) or bearer


def _review_session_ok(token: str) -> bool:
    from app.crud import review_session_valid

    with read_session_scope() as session:
        return review_session_valid(session, token=token)


async def require_review_key(request: Request, settings: SettingsDep) -> None:
    """For the browser pages under /review: the API key as a header (scripts), or a session cookie.

    A browser signs in at /review/login with a form POST that exchanges the key for an opaque,
    expiring session (app.web.signin); the cookie holds that session's random token, never the key,
    and no URL carries the key (an old `/review?api_key=...` link is sent to the sign-in page, the
    key unused; the access log redacts it). Without credentials a browser is sent to the sign-in
    page, other clients get the 401.
    """
    key = sent_api_key(request)
    if key:
        _check_key(key, settings)
        return
    token = request.cookies.get(REVIEW_SESSION_COOKIE)
    if token is not None:
        valid: bool = await run_in_threadpool(_review_session_ok, token)
        if valid:
            return
    if "text/html" in request.headers.get("accept", "") or API_KEY_QUERY in request.query_params:
        raise HTTPException(status_code=303, detail="sign in", headers={"Location": "/review/login"})
    _check_key(None, settings)


ReviewKeyDep = Depends(require_review_key)
