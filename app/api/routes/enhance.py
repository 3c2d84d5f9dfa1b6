from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from app.api.deps import SessionDep
from app.api.schemas import EnhanceAccepted, ErrorOut, JobRef
from app.contract import EnhanceItem
from app.contract.request import EnhanceBatch
from app.crud import submit_items
from worker.celery_app import enqueue_jobs

router = APIRouter(tags=["enhance"])

_REQUEST_SCHEMA = {
    "oneOf": [
        {"$ref": "#/components/schemas/EnhanceItem"},
        {"$ref": "#/components/schemas/EnhanceBatch"},
    ]
}


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


@router.post(
    "/enhance",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=EnhanceAccepted,
    responses={422: {"model": ErrorOut, "description": "The body is not a valid item or batch"}},
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": _REQUEST_SCHEMA}}}
    },
)
async def enhance(request: Request, response: Response, session: SessionDep) -> EnhanceAccepted:
    """Queue one enhancement job per item. Re-sent items map to their existing jobs."""
    try:
        body = await request.json()
    except ValueError as error:
        raise RequestValidationError(
            [{"loc": ("body",), "msg": f"body is not valid JSON: {error}", "type": "json_invalid"}]
        ) from None
    items, single = parse_enhance_body(body)
    submitted = submit_items(session, items=items)
    session.commit()
    enqueue_jobs([s.job.id for s in submitted if s.created])
    if single:
        response.headers["Location"] = f"/v1/jobs/{submitted[0].job.id}"
    return EnhanceAccepted(jobs=[JobRef(id=s.job.id, status=s.job.status) for s in submitted])
