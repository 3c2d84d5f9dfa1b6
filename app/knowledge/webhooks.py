"""Webhooks: subscriptions, one delivery row per event and webhook, signed POSTs with retries.

The deliveries table is the source of truth (as the jobs table is for jobs); the broker only carries
delivery ids. `queue_event` inserts pending deliveries in the caller's transaction; after its commit
the caller hands the ids to `app.core.broker.enqueue_deliveries`. A worker runs `attempt_delivery`
for each: it claims the row (a conditional UPDATE that moves `next_attempt_at` forward by a lease, so
two workers never send one delivery at once), POSTs outside any transaction, and records the outcome
only if its claim still holds. A failure is retried with exponential backoff until
`webhook_max_attempts`; the reconciler (`due_deliveries`) re-sends whatever the broker lost.

Bodies and headers follow Standard Webhooks (https://www.standardwebhooks.com/): `webhook-id` is the
delivery id and stays the same on every retry, so receivers dedupe on it.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import random
import secrets
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, cast, get_args
from urllib.parse import urlsplit

import httpx
from pydantic_core import to_jsonable_python
from sqlalchemy import CursorResult, and_, delete, or_, select, update
from sqlalchemy.orm import Session
from standardwebhooks import Webhook as Signer

from app import __version__
from app.core.config import Settings
from app.core.logging import redact
from app.models import DeliveryStatus, Webhook, WebhookDelivery, utcnow

log = logging.getLogger(__name__)

EVENTS = ("record.created", "story.updated")
EventType = Literal["record.created", "story.updated"]  # EVENTS as a type (request bodies, OpenAPI)
if get_args(EventType) != EVENTS:  # pragma: no cover - a guard for whoever adds an event
    raise RuntimeError("EventType and EVENTS must list the same events")

MAX_URL_CHARS = 2000
SECRET_PREFIX = "whsec_"
MAX_ERROR_CHARS = 300
JITTER = 0.1  # each retry delay is scaled by a random factor in [1 - JITTER, 1 + JITTER]

# httpx logs every request's full URL at INFO; a webhook URL may hold a token in its path or query
# (Slack-style URLs are their own secret). Its lines for our sends are dropped: ours name the webhook id.
_sending = threading.local()


class _QuietWebhookRequests(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(_sending, "active", False)


logging.getLogger("httpx").addFilter(_QuietWebhookRequests())

SessionFactory = Callable[[], AbstractContextManager[Session]]
Result = Literal["succeeded", "retry", "failed", "skipped"]


# Validation -------------------------------------------------------------------------------


def validate_webhook_url(url: str) -> str:
    """The URL a webhook may POST to, or ValueError saying why not.

    http or https, with a host, at most MAX_URL_CHARS characters, no spaces or control characters,
    and no credentials (`user:password@host`): the URL is shown in listings and would leak them.
    """
    if len(url) > MAX_URL_CHARS:
        raise ValueError(f"the URL is longer than {MAX_URL_CHARS} characters")
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise ValueError("the URL holds spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port  # ValueError for a port that is no number or out of range
    except ValueError as error:
        raise ValueError(f"the URL cannot be parsed: {error}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError("only http and https URLs can receive webhooks")
    if "@" in parts.netloc:
        raise ValueError("the URL must not hold credentials (user:password@); authenticate by the signature")
    if not parts.hostname:
        raise ValueError("the URL has no host")
    if port == 0:
        raise ValueError("the URL's port must be 1-65535")
    return url


def validate_events(events: list[str]) -> list[str]:
    """A non-empty list of known event types, duplicates dropped (first order kept)."""
    unknown = [event for event in events if event not in EVENTS]
    if unknown:
        raise ValueError(f"unknown event {unknown[0]!r}; the events are {', '.join(EVENTS)}")
    kept = list(dict.fromkeys(events))
    if not kept:
        raise ValueError(f"subscribe to at least one event: {', '.join(EVENTS)}")
    return kept


# Webhooks ---------------------------------------------------------------------------------


def new_secret() -> str:
    """A Standard Webhooks signing secret: "whsec_" + base64 of 24 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode("ascii")


def create_webhook(session: Session, *, url: str, events: list[str], description: str | None) -> Webhook:
    webhook = Webhook(
        url=validate_webhook_url(url),
        events=validate_events(events),
        secret=new_secret(),
        description=description,
        active=True,
        created_at=utcnow(),
    )
    session.add(webhook)
    session.flush()
    return webhook


def list_webhooks(session: Session) -> list[Webhook]:
    return list(session.scalars(select(Webhook).order_by(Webhook.created_at, Webhook.id)))


def get_webhook(session: Session, *, webhook_id: str) -> Webhook | None:
    return session.get(Webhook, webhook_id)


def delete_webhook(session: Session, *, webhook_id: str) -> bool:
    """Delete a webhook and its deliveries (pending ones are never sent). False when unknown."""
    # The foreign key cascades too; deleting explicitly does not depend on SQLite's foreign_keys pragma.
    session.execute(
        delete(WebhookDelivery)
        .where(WebhookDelivery.webhook_id == webhook_id)
        .execution_options(synchronize_session=False)
    )
    return _rowcount(session.execute(delete(Webhook).where(Webhook.id == webhook_id))) > 0


def list_deliveries(
    session: Session, *, webhook_id: str, limit: int, before: str | None = None
) -> list[WebhookDelivery]:
    """A webhook's deliveries, newest first; `before` (a delivery id of this webhook) pages on.

    ValueError when `before` is not one of this webhook's deliveries.
    """
    query = select(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook_id)
    if before is not None:
        cursor = session.get(WebhookDelivery, before)
        if cursor is None or cursor.webhook_id != webhook_id:
            raise ValueError(f"delivery {before} is not one of this webhook's deliveries")
        query = query.where(
            or_(
                WebhookDelivery.created_at < cursor.created_at,
                and_(WebhookDelivery.created_at == cursor.created_at, WebhookDelivery.id < cursor.id),
            )
        )
    query = query.order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc()).limit(limit)
    return list(session.scalars(query))


# Events -----------------------------------------------------------------------------------


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def queue_event(session: Session, *, event_type: str, data: dict[str, Any]) -> list[str]:
    """One pending delivery per active webhook subscribed to `event_type`, in the caller's transaction.

    Returns the delivery ids: after committing, hand them to `app.core.broker.enqueue_deliveries`
    (if that fails or is forgotten, the reconciler sends them a few seconds later).
    """
    if event_type not in EVENTS:
        raise ValueError(f"unknown event {event_type!r}; the events are {', '.join(EVENTS)}")
    webhooks = [
        webhook
        for webhook in session.scalars(select(Webhook).where(Webhook.active.is_(True)))
        if event_type in (webhook.events or [])
    ]
    if not webhooks:
        return []
    now = utcnow()
    payload = {"type": event_type, "timestamp": _iso(now), "data": to_jsonable_python(data)}
    deliveries = [
        WebhookDelivery(
            webhook_id=webhook.id,
            event_type=event_type,
            payload=payload,
            status=DeliveryStatus.pending,
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
        for webhook in webhooks
    ]
    session.add_all(deliveries)
    session.flush()
    return [delivery.id for delivery in deliveries]


def due_deliveries(session: Session, *, now: datetime, limit: int) -> list[str]:
    """Pending deliveries of active webhooks whose next attempt was due by `now`, the most overdue
    first: what the reconciler re-sends (duplicates are harmless: every send claims its row first)."""
    return list(
        session.scalars(
            select(WebhookDelivery.id)
            .join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
            .where(
                WebhookDelivery.status == DeliveryStatus.pending,
                WebhookDelivery.next_attempt_at <= now,
                Webhook.active.is_(True),
            )
            .order_by(WebhookDelivery.next_attempt_at)
            .limit(limit)
        )
    )


# Delivery ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeliveryOutcome:
    """What one `attempt_delivery` did. `retry_in`: seconds until the next try (result "retry")."""

    delivery_id: str
    result: Result
    attempts: int = 0
    status_code: int | None = None
    error: str | None = None
    retry_in: float | None = None


def retry_delay(attempts: int, settings: Settings, *, rng: random.Random | None = None) -> float:
    """Seconds before the next try after `attempts` failed ones: base * 2^(attempts-1), capped, jittered."""
    exponent = min(max(attempts - 1, 0), 60)  # 2^60 * base is past any cap; keeps the float finite
    delay = min(settings.webhook_retry_max_seconds, settings.webhook_retry_base_seconds * 2.0**exponent)
    factor = (rng or random).uniform(1 - JITTER, 1 + JITTER)
    return min(settings.webhook_retry_max_seconds, delay * factor)


def claim_lease_seconds(settings: Settings) -> float:
    """How long a claim holds a delivery: past the longest a send can take (httpx's timeout applies
    to connecting, writing and each read on its own), so no other worker sends it meanwhile."""
    return 4 * settings.webhook_timeout_seconds + 30


def _rowcount(result: object) -> int:
    return cast(CursorResult[Any], result).rowcount


@dataclass(frozen=True)
class _Claim:
    webhook_id: str
    url: str
    secret: str
    payload: dict[str, Any]
    attempts: int  # before this one
    lease_until: datetime  # our claim token: the row's next_attempt_at while we hold it


def _claim(session: Session, *, delivery_id: str, now: datetime, lease_until: datetime) -> _Claim | None:
    active_webhooks = select(Webhook.id).where(Webhook.active.is_(True))
    won = _rowcount(
        session.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.id == delivery_id,
                WebhookDelivery.status == DeliveryStatus.pending,
                or_(WebhookDelivery.next_attempt_at.is_(None), WebhookDelivery.next_attempt_at <= now),
                WebhookDelivery.webhook_id.in_(active_webhooks),
            )
            .values(next_attempt_at=lease_until)
            .execution_options(synchronize_session=False)
        )
    )
    if won != 1:
        return None
    delivery, url, secret = session.execute(
        select(WebhookDelivery, Webhook.url, Webhook.secret)
        .join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
        .where(WebhookDelivery.id == delivery_id)
    ).one()
    return _Claim(
        webhook_id=delivery.webhook_id,
        url=url,
        secret=secret,
        payload=delivery.payload,
        attempts=delivery.attempts,
        lease_until=lease_until,
    )


def _short_error(error: Exception, url: str) -> str:
    """The exception as a short line, the URL (which may carry a token in its query) left out."""
    text = f"{type(error).__name__}: {error}".replace(url, "<url>")
    return redact(text)[:MAX_ERROR_CHARS]


def signed_request(*, delivery_id: str, secret: str, body: str, now: datetime) -> dict[str, str]:
    """The Standard Webhooks headers for one attempt (a fresh timestamp each time, the same id)."""
    return {
        "webhook-id": delivery_id,
        "webhook-timestamp": str(math.floor(now.timestamp())),
        "webhook-signature": Signer(secret).sign(delivery_id, now, body),
        "content-type": "application/json",
        "user-agent": f"newsletter-enhancer/{__version__} (webhooks)",
    }


def attempt_delivery(
    session_factory: SessionFactory, *, delivery_id: str, client: httpx.Client, settings: Settings
) -> DeliveryOutcome:
    """Claim, send and record one delivery; "skipped" when it is not due, done, or another worker's.

    `session_factory` opens a unit of work (`app.core.db.session_scope`): the claim and the outcome
    are two short transactions, and the POST runs between them, outside any.
    """
    now = utcnow()
    lease_until = now + timedelta(seconds=claim_lease_seconds(settings))
    with session_factory() as session:
        claim = _claim(session, delivery_id=delivery_id, now=now, lease_until=lease_until)
    if claim is None:
        return DeliveryOutcome(delivery_id=delivery_id, result="skipped")

    body = json.dumps(claim.payload, separators=(",", ":"), ensure_ascii=False)
    status_code: int | None = None
    error: str | None = None
    _sending.active = True
    try:
        headers = signed_request(delivery_id=delivery_id, secret=claim.secret, body=body, now=utcnow())
        with client.stream(
            "POST",
            claim.url,
            content=body.encode("utf-8"),
            headers=headers,
            timeout=settings.webhook_timeout_seconds,
            follow_redirects=False,
        ) as response:  # the answer's body is never read: only its status counts
            status_code = response.status_code
        if not 200 <= status_code < 300:
            error = f"HTTP {status_code}"
    except Exception as exc:  # connection refused, timeout, TLS, a URL httpx cannot send to
        error = _short_error(exc, claim.url)
    finally:
        _sending.active = False

    attempts = claim.attempts + 1
    finished = utcnow()
    values: dict[str, Any] = {"attempts": attempts, "last_status_code": status_code, "last_error": error}
    retry_in: float | None = None
    result: Result
    if error is None:
        result = "succeeded"
        values.update(status=DeliveryStatus.succeeded, finished_at=finished, next_attempt_at=None)
    elif attempts >= settings.webhook_max_attempts:
        result = "failed"
        values.update(status=DeliveryStatus.failed, finished_at=finished, next_attempt_at=None)
    else:
        result = "retry"
        retry_in = retry_delay(attempts, settings)
        values.update(next_attempt_at=finished + timedelta(seconds=retry_in))
    with session_factory() as session:
        kept = _rowcount(
            session.execute(
                update(WebhookDelivery)
                .where(
                    WebhookDelivery.id == delivery_id,
                    WebhookDelivery.status == DeliveryStatus.pending,
                    WebhookDelivery.next_attempt_at == claim.lease_until,
                )
                .values(**values)
                .execution_options(synchronize_session=False)
            )
        )
    if kept != 1:  # the webhook was deleted meanwhile, or our lease ran out and another worker took over
        log.info("webhook delivery %s: outcome not recorded, the delivery changed meanwhile", delivery_id)
        return DeliveryOutcome(delivery_id=delivery_id, result="skipped", attempts=attempts)
    if result == "retry":
        log.warning(
            "webhook delivery %s to webhook %s failed (attempt %d of %d): %s; next try in %.1f s",
            delivery_id,
            claim.webhook_id,
            attempts,
            settings.webhook_max_attempts,
            error,
            retry_in,
        )
    elif result == "failed":
        log.warning(
            "webhook delivery %s to webhook %s failed for good after %d attempt(s): %s",
            delivery_id,
            claim.webhook_id,
            attempts,
            error,
        )
    else:
        log.info(
            "webhook delivery %s to webhook %s succeeded (HTTP %s)",
            delivery_id,
            claim.webhook_id,
            status_code,
        )
    return DeliveryOutcome(
        delivery_id=delivery_id,
        result=result,
        attempts=attempts,
        status_code=status_code,
        error=error,
        retry_in=retry_in,
    )
