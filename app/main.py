"""Builds the FastAPI app."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app import __version__
from app.api.deps import ApiKeyDep, ReviewKeyDep, close_submission_writer, open_submission_writer
from app.api.docs import hoist_local_defs, install_docs
from app.api.exposure import OperatorAccessDep
from app.api.limits import JSON_TOO_DEEP, BodySizeLimit
from app.api.metrics import install_metrics
from app.api.request_ids import RequestIds
from app.api.routes import (
    corrections,
    digests,
    emails,
    enhance,
    export,
    feeds,
    health,
    jobs,
    records,
    search,
    stories,
    topics,
    webhooks,
)
from app.api.schemas import ErrorOut
from app.api.security_headers import SecurityHeaders
from app.core.config import get_settings
from app.core.db_errors import database_unavailable
from app.core.migrate import upgrade_database
from app.core.security import ensure_api_key
from app.web.knowledge import router as review_knowledge_router
from app.web.routes import router as review_router
from app.web.signin import router as signin_router

log = logging.getLogger(__name__)


def _describe(errors: list[dict]) -> str:
    parts = []
    for error in errors[:5]:
        loc = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
        parts.append(f"{loc}: {error.get('msg')}")
    return "; ".join(parts)


async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    errors = jsonable_encoder(exc.errors(), custom_encoder={bytes: lambda b: b.decode("utf-8", "replace")})
    for error in errors:
        error.pop("input", None)  # do not echo (possibly huge or hostile) input back
        error.pop("url", None)
        error.pop("ctx", None)
    return JSONResponse({"detail": errors, "message": _describe(errors)}, status_code=422)


async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    detail: str | list[dict[str, Any]] = exc.detail
    if exc.status_code == 422 and isinstance(detail, str):
        # Every 422 has the same shape (the spec's HTTPValidationError): a list of errors + message.
        detail = [{"loc": [], "msg": detail, "type": "value_error"}]
    return JSONResponse(
        {"detail": detail, "message": str(exc.detail)},
        status_code=exc.status_code,
        headers=getattr(exc, "headers", None),
    )


async def _data_error(_: Request, exc: DataError) -> JSONResponse:
    """A value the database cannot store or compare (e.g. NUL in a PostgreSQL query parameter)."""
    log.warning("database rejected a request value: %s", str(exc.orig).splitlines()[0] if exc.orig else exc)
    message = "a value in the request cannot be stored or searched (control characters?)"
    return JSONResponse(
        {"detail": [{"loc": [], "msg": message, "type": "value_error"}], "message": message}, status_code=422
    )


async def _database_unavailable(request: Request, exc: OperationalError) -> JSONResponse:
    """A locked, full or unreachable database: 503 + Retry-After (the cause is logged, not sent)."""
    unavailable = database_unavailable(exc)
    if unavailable is None:
        return await _unhandled(request, exc)
    log.error(
        "database unavailable (%s): %s",
        unavailable.reason,
        str(exc.orig).splitlines()[0] if exc.orig else exc,
    )
    message = unavailable.describe()
    return JSONResponse(
        {"detail": message, "message": message, "reason": f"database_{unavailable.reason}"},
        status_code=503,
        headers={"Retry-After": str(unavailable.retry_after)},
    )


async def _too_deep(request: Request, _: RecursionError) -> JSONResponse:
    """A body nested too deep for json's decoder (it recurses once a level): the 422 of the depth check."""
    error = {"loc": ("body",), "msg": JSON_TOO_DEEP, "type": "json_too_deep"}
    return await _validation_error(request, RequestValidationError([error]))


async def _unhandled(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error")
    return JSONResponse({"detail": "internal error", "message": type(exc).__name__}, status_code=500)


# The 429 of a key over its rate limit, on every keyed route (routes that queue jobs: a full queue too).
RATE_LIMITED: dict[int | str, dict[str, Any]] = {
    429: {"model": ErrorOut, "description": "Over the API key's rate limit; see the Retry-After header"}
}


def create_app(*, migrate: bool = True) -> FastAPI:
    settings = get_settings()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        settings.ensure_dirs()
        ensure_api_key(settings)  # first start without ENHANCER_API_KEYS: create <data dir>/api_key
        if migrate:
            upgrade_database(settings.sqlalchemy_url)
        open_submission_writer(app, settings)
        yield
        close_submission_writer(app)  # store and publish submissions still waiting

    # /docs, /redoc and /openapi.json: install_docs below (self-served assets, ENHANCER_DOCS_AND_METRICS).
    app = FastAPI(
        title="newsletter-enhancer",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(DataError, _data_error)  # type: ignore[arg-type]
    app.add_exception_handler(OperationalError, _database_unavailable)  # type: ignore[arg-type]
    app.add_exception_handler(RecursionError, _too_deep)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unhandled)
    # Every /v1 route needs an API key, and the key's rate limit applies (app/api/rate_limit.py).
    v1 = APIRouter(prefix="/v1", dependencies=[ApiKeyDep], responses=RATE_LIMITED)
    v1.include_router(enhance.router)
    v1.include_router(emails.router)
    v1.include_router(jobs.router)
    v1.include_router(records.router)
    v1.include_router(corrections.router)
    v1.include_router(export.router)
    v1.include_router(search.router)
    v1.include_router(stories.router)
    v1.include_router(topics.router)
    v1.include_router(webhooks.router)
    v1.include_router(digests.router)
    v1.include_router(feeds.router)
    app.include_router(feeds.atom_router)  # no API key: the feed token in its URL is the credential
    app.include_router(v1)
    app.include_router(enhance.alias_router, dependencies=[ApiKeyDep], responses=RATE_LIMITED)
    app.include_router(health.router)
    app.include_router(signin_router)  # before the review pages: /review/login needs no session
    app.include_router(review_router, dependencies=[ReviewKeyDep])
    app.include_router(review_knowledge_router, dependencies=[ReviewKeyDep])
    app.add_middleware(  # inside metrics: 413s counted
        BodySizeLimit,
        max_bytes=settings.max_body_bytes,
        path_limits={"/v1/emails": settings.max_email_bytes},
    )
    app.add_middleware(SecurityHeaders)
    install_metrics(app, dependencies=[OperatorAccessDep])
    install_docs(app, dependencies=[OperatorAccessDep])
    _add_request_ids(app)
    _add_request_schemas(app)
    return app


def _add_request_ids(app: FastAPI) -> None:
    """RequestIds around the whole stack, Starlette's ServerErrorMiddleware included: a 500 has the id too."""
    build = app.build_middleware_stack

    def build_middleware_stack() -> Any:
        return RequestIds(build())

    app.build_middleware_stack = build_middleware_stack  # type: ignore[method-assign]


def _add_request_schemas(app: FastAPI) -> None:
    """The enhance body is parsed by hand (one item or a batch); publish its schemas anyway."""
    from app.contract import EnhanceItem
    from app.contract.request import EnhanceBatch

    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = build()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in (EnhanceItem, EnhanceBatch):
                generated = model.model_json_schema(
                    ref_template="#/components/schemas/{model}", by_alias=True
                )
                components.update(generated.pop("$defs", {}))
                components[model.__name__] = generated
            app.openapi_schema = hoist_local_defs(schema)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
