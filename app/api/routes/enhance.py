from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.api.deps import SessionDep, SettingsDep
from app.api.schemas import EnhanceAccepted, ErrorOut, JobRef
from app.contract import EnhanceItem
from app.contract.request import EnhanceBatch
from app.core.config import Settings
from app.crud import (
    count_queued_jobs,
    find_idempotency_key,
    jobs_by_ids,
    save_idempotency_key,
    submit_items,
)
from app.models import Job
from worker.celery_app import enqueue_jobs

router = APIRouter(tags=["enhance"])

_REQUEST_SCHEMA = {
    "oneOf": [
        {"$ref": "#/components/schemas/EnhanceItem"},
        {"$ref": "#/components/schemas/EnhanceBatch"},
    ]
}
# Concurrent first uses of one Idempotency-Key (or one new item) on PostgreSQL: the loser of the
# unique-constraint race rolls back and reads what the winner stored.
_SUBMIT_TRIES = 3


def _invalid(loc: tuple[str | int, ...], msg: str, kind: str) -> RequestValidationError:
    return RequestValidationError([{"loc": ("body", *loc), "msg": msg, "type": kind}])


def check_item_limits(body: Any, *, max_items: int, max_chars: int) -> None:
    """The configured limits, checked before validating anything, with the limit in the message."""
    if isinstance(body, dict) and isinstance(body.get("items"), list):
        count = len(body["items"])
        if count > max_items:
            raise _invalid(("items",), f"at most {max_items} items per request, got {count}", "too_long")
        entries: list[tuple[tuple[str | int, ...], Any]] = [
            (("items", index), item) for index, item in enumerate(body["items"])
        ]
    else:
        entries = [((), body)]
    for loc, item in entries:
        content = item.get("content") if isinstance(item, dict) else None
        if isinstance(content, str) and len(content) > max_chars:
            raise _invalid(
                (*loc, "content"),
                f"at most {max_chars} characters of content per item, got {len(content)}",
                "string_too_long",
            )


def parse_enhance_body(body: Any) -> tuple[list[EnhanceItem], bool]:
    """(items, single). One item object, or {"items": [...]}; errors name the field."""
    try:
        if isinstance(body, dict) and "items" in body:
            return EnhanceBatch.model_validate(body).items, False
        return [EnhanceItem.model_validate(body)], True
    except ValidationError as error:
        raise RequestValidationError(
            [
                {**e, "loc": ("body", *e["loc"])}
                for e in error.errors(include_url=False, include_context=False)
            ]
        ) from None


def request_sha256(body: Any) -> str:
    """Hash of the JSON value, not its bytes: a retry that re-serializes the same payload matches."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


@router.post(
    "/enhance",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=EnhanceAccepted,
    responses={
        413: {"model": ErrorOut, "description": "The body is larger than ENHANCER_MAX_BODY_BYTES"},
        422: {
            "model": ErrorOut,
            "description": "The body is not a valid item or batch, breaks a limit, or reuses an "
            "Idempotency-Key with a different payload",
        },
        429: {"model": ErrorOut, "description": "Too many queued jobs; see the Retry-After header"},
    },
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": _REQUEST_SCHEMA}}}
    },
)
async def enhance(
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=200,
            description="Retries with the same key get the same jobs; "
            "the same key with another payload is a 422.",
        ),
    ] = None,
) -> EnhanceAccepted:
    """Queue one enhancement job per item. Re-sent items map to their existing jobs."""
    try:
        body = await request.json()
    except ValueError as error:
        raise _invalid((), f"body is not valid JSON: {error}", "json_invalid") from None
    check_item_limits(body, max_items=settings.max_batch_items, max_chars=settings.max_item_chars)
    items, single = parse_enhance_body(body)
    body_hash = request_sha256(body) if idempotency_key else ""
    # Database and broker calls block (a lock wait, a broker timeout): keep them off the event loop.
    jobs, replayed = await run_in_threadpool(
        accept_items, session, settings, items=items, idempotency_key=idempotency_key, body_hash=body_hash
    )
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    if single and jobs:
        response.headers["Location"] = f"/v1/jobs/{jobs[0].id}"
    return EnhanceAccepted(jobs=[JobRef(id=job.id, status=job.status) for job in jobs])


def accept_items(
    session: Session,
    settings: Settings,
    *,
    items: list[EnhanceItem],
    idempotency_key: str | None,
    body_hash: str,
) -> tuple[list[Job], bool]:
    """(jobs, replayed): persist items and jobs in one transaction, then enqueue the new jobs."""
    key_max_age = timedelta(hours=settings.idempotency_ttl_hours)
    for attempt in range(_SUBMIT_TRIES):
        try:
            if idempotency_key:
                stored = find_idempotency_key(session, key=idempotency_key, max_age=key_max_age)
                if stored is not None:
                    if stored.request_sha256 != body_hash:
                        message = (
                            f"Idempotency-Key {idempotency_key!r} was already used with a different "
                            "payload; send a new key for a new request"
                        )
                        loc = ("header", "Idempotency-Key")
                        raise RequestValidationError(
                            [{"loc": loc, "msg": message, "type": "idempotency_key_reused"}]
                        )
                    return jobs_by_ids(session, job_ids=stored.job_ids), True
            queued_before = count_queued_jobs(session)
            submitted = submit_items(session, items=items, idempotency_key=idempotency_key)
            created = [s.job.id for s in submitted if s.created]
            if created and queued_before + len(created) > settings.max_queued_jobs:
                session.rollback()
                raise HTTPException(
                    status_code=429,
                    detail=f"queue full: {queued_before} jobs waiting, the limit is "
                    f"{settings.max_queued_jobs}; retry in {settings.queue_full_retry_after_seconds} s",
                    headers={"Retry-After": str(settings.queue_full_retry_after_seconds)},
                )
            if idempotency_key:
                save_idempotency_key(
                    session,
                    key=idempotency_key,
                    request_sha256=body_hash,
                    job_ids=[s.job.id for s in submitted],
                    max_age=key_max_age,
                )
            session.commit()
            break
        except IntegrityError:
            session.rollback()
            if attempt == _SUBMIT_TRIES - 1:
                raise
    if created:
        enqueue_jobs(created)  # broker down: the jobs wait in the database for the reconciler
    return [s.job for s in submitted], False
