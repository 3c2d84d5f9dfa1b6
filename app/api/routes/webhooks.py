"""Webhooks: subscribe a URL to knowledge-layer events, follow its deliveries (docs/api.md#webhooks)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Response
from pydantic import BaseModel, Field, field_validator

from app.api.deps import ReadSessionDep, SessionDep
from app.api.schemas import ErrorOut
from app.crud import as_utc
from app.knowledge.webhooks import (
    EVENTS,
    MAX_URL_CHARS,
    EventType,
    create_webhook,
    delete_webhook,
    get_webhook,
    list_deliveries,
    list_webhooks,
    validate_events,
    validate_webhook_url,
)
from app.models import Webhook, WebhookDelivery

router = APIRouter(prefix="/webhooks", tags=["webhooks"])

MAX_LIMIT = 200
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorOut}}


class WebhookIn(BaseModel):
    url: str = Field(
        min_length=1,
        max_length=MAX_URL_CHARS,
        description="http or https, no credentials in it: requests are signed (see the secret)",
        examples=["https://example.com/hooks/enhancer"],
    )
    events: list[EventType] = Field(
        min_length=1, max_length=20, description=f"A non-empty subset of {', '.join(EVENTS)}"
    )
    description: str | None = Field(default=None, max_length=500)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return validate_webhook_url(value)

    @field_validator("events")
    @classmethod
    def _events(cls, value: list[str]) -> list[str]:
        return validate_events(value)


class WebhookOut(BaseModel):
    id: str
    url: str
    events: list[str]
    description: str | None
    active: bool
    created_at: datetime
    deliveries_url: str

    @classmethod
    def from_row(cls, webhook: Webhook) -> WebhookOut:
        return cls(
            id=webhook.id,
            url=webhook.url,
            events=list(webhook.events),
            description=webhook.description,
            active=webhook.active,
            created_at=as_utc(webhook.created_at),  # type: ignore[arg-type]
            deliveries_url=f"/v1/webhooks/{webhook.id}/deliveries",
        )


class WebhookCreated(WebhookOut):
    secret: str = Field(
        description="The Standard Webhooks signing secret (whsec_...): shown in this answer only; "
        "every request to the URL is signed with it"
    )


class WebhookList(BaseModel):
    items: list[WebhookOut]


class DeliveryOut(BaseModel):
    id: str = Field(description="Also the webhook-id header of every attempt: receivers dedupe on it")
    webhook_id: str
    event_type: str
    status: str = Field(description="pending, succeeded or failed")
    attempts: int
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    next_attempt_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def from_row(cls, delivery: WebhookDelivery) -> DeliveryOut:
        return cls(
            id=delivery.id,
            webhook_id=delivery.webhook_id,
            event_type=delivery.event_type,
            status=delivery.status,
            attempts=delivery.attempts,
            last_status_code=delivery.last_status_code,
            last_error=delivery.last_error,
            created_at=as_utc(delivery.created_at),  # type: ignore[arg-type]
            next_attempt_at=as_utc(delivery.next_attempt_at),
            finished_at=as_utc(delivery.finished_at),
        )


class DeliveryPage(BaseModel):
    items: list[DeliveryOut]
    limit: int
    next_before: str | None = Field(
        description="Pass as `before` for the next (older) page; null on the last page"
    )


def _found(webhook: Webhook | None, webhook_id: str) -> Webhook:
    if webhook is None:
        raise HTTPException(status_code=404, detail=f"webhook {webhook_id} not found")
    return webhook


# 400: a body that is not UTF-8 (FastAPI's "There was an error parsing the body"); 422: anything else wrong.
@router.post("", status_code=201, response_model=WebhookCreated, responses={400: {"model": ErrorOut}})
def create(body: WebhookIn, session: SessionDep, response: Response) -> WebhookCreated:
    """Subscribe a URL. The answer holds the signing secret: keep it, it is not shown again."""
    try:
        webhook = create_webhook(
            session, url=body.url, events=list(body.events), description=body.description
        )
    except ValueError as error:  # the body model checked the same: only a race with a change there
        raise HTTPException(status_code=422, detail=str(error)) from None
    response.headers["Location"] = f"/v1/webhooks/{webhook.id}"
    return WebhookCreated(**WebhookOut.from_row(webhook).model_dump(), secret=webhook.secret)


@router.get("", response_model=WebhookList)
def read_webhooks(session: ReadSessionDep) -> WebhookList:
    """Every webhook, oldest first (without secrets)."""
    return WebhookList(items=[WebhookOut.from_row(webhook) for webhook in list_webhooks(session)])


@router.get("/{webhook_id}", response_model=WebhookOut, responses=_NOT_FOUND)
def read_webhook(webhook_id: str, session: ReadSessionDep) -> WebhookOut:
    return WebhookOut.from_row(_found(get_webhook(session, webhook_id=webhook_id), webhook_id))


@router.delete("/{webhook_id}", status_code=204, response_class=Response, responses=_NOT_FOUND)
def remove_webhook(webhook_id: str, session: SessionDep) -> Response:
    """Delete a webhook and its deliveries; pending ones are not sent."""
    if not delete_webhook(session, webhook_id=webhook_id):
        raise HTTPException(status_code=404, detail=f"webhook {webhook_id} not found")
    return Response(status_code=204)


@router.get("/{webhook_id}/deliveries", response_model=DeliveryPage, responses=_NOT_FOUND)
def read_deliveries(
    webhook_id: str,
    session: ReadSessionDep,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size")] = 50,
    before: Annotated[
        str | None,
        Query(max_length=64, description="A delivery id (`next_before` of the previous page)"),
    ] = None,
) -> DeliveryPage:
    """The webhook's deliveries, newest first, with each one's attempts and last error."""
    _found(get_webhook(session, webhook_id=webhook_id), webhook_id)
    try:
        deliveries = list_deliveries(session, webhook_id=webhook_id, limit=limit, before=before)
    except ValueError as error:
        raise HTTPException(status_code=422, detail=str(error)) from None
    next_before = deliveries[-1].id if len(deliveries) == limit else None
    return DeliveryPage(
        items=[DeliveryOut.from_row(delivery) for delivery in deliveries],
        limit=limit,
        next_before=next_before,
    )
