from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Request, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from app.api.deps import SettingsDep, SubmissionWriterDep
from app.api.limits import JSON_TOO_DEEP, MAX_JSON_DEPTH, json_depth
from app.api.schemas import EnhanceAccepted, ErrorOut, JobRef
from app.api.submissions import IdempotencyKeyReused, QueueFull, Submission
from app.contract import EnhanceItem
from app.contract.request import EnhanceBatch
from app.core.logging import current_request_id

router = APIRouter(tags=["enhance"])
# POST /enhance: the path the user's own ingester is written against; /v1/enhance stays canonical.
alias_router = APIRouter(tags=["enhance"])

_REQUEST_SCHEMA = {
    "oneOf": [
        {"$ref": "#/components/schemas/EnhanceItem"},
        {"$ref": "#/components/schemas/EnhanceBatch"},
    ]
}


def queue_full_error(full: QueueFull) -> HTTPException:
    """The 429 of every route that submits jobs: the limit in the message, when to retry in the header."""
    return HTTPException(status_code=429, detail=str(full), headers={"Retry-After": str(full.retry_after)})


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


async def enhance(
    request: Request,
    response: Response,
    settings: SettingsDep,
    writer: SubmissionWriterDep,
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
    # Too deep for json's decoder (it recurses once a level) is app.main's RecursionError handler.
    if json_depth(body) > MAX_JSON_DEPTH:
        raise _invalid((), JSON_TOO_DEEP, "json_too_deep")
    check_item_limits(body, max_items=settings.max_batch_items, max_chars=settings.max_item_chars)
    items, single = parse_enhance_body(body)
    body_hash = request_sha256(body) if idempotency_key else ""
    try:
        accepted = await writer.submit(
            Submission(items, idempotency_key, body_hash, request_id=current_request_id())
        )
    except QueueFull as full:
        raise queue_full_error(full) from None
    except IdempotencyKeyReused as reused:
        raise RequestValidationError(
            [{"loc": ("header", "Idempotency-Key"), "msg": str(reused), "type": "idempotency_key_reused"}]
        ) from None
    if accepted.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    if single and accepted.jobs:
        response.headers["Location"] = f"/v1/jobs/{accepted.jobs[0][0]}"
    return EnhanceAccepted(jobs=[JobRef(id=job_id, status=status) for job_id, status in accepted.jobs])


_ROUTE = {
    "status_code": status.HTTP_202_ACCEPTED,
    "response_model": EnhanceAccepted,
    "responses": {
        413: {"model": ErrorOut, "description": "The body is larger than ENHANCER_MAX_BODY_BYTES"},
        422: {
            "model": ErrorOut,
            "description": "The body is not a valid item or batch, breaks a limit, or reuses an "
            "Idempotency-Key with a different payload",
        },
        429: {
            "model": ErrorOut,
            "description": "Too many queued jobs, or over the API key's rate limit; see Retry-After",
        },
    },
    "openapi_extra": {
        "requestBody": {"required": True, "content": {"application/json": {"schema": _REQUEST_SCHEMA}}}
    },
}
router.add_api_route("/enhance", enhance, methods=["POST"], **_ROUTE)  # type: ignore[arg-type]
alias_router.add_api_route(
    "/enhance",
    enhance,
    methods=["POST"],
    operation_id="enhance_alias",
    summary="Enhance (alias of POST /v1/enhance)",
    description="The same route as POST /v1/enhance - same API key, body and answers - at the path "
    "existing ingesters post to. New clients should use /v1/enhance.",
    **_ROUTE,  # type: ignore[arg-type]
)
