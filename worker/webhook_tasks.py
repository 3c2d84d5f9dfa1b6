"""The Celery task that sends webhook deliveries (app/knowledge/webhooks.py does the work).

The deliveries table is the source of truth: a delivery that fails and may be tried again goes back
to the broker with its backoff as the countdown; if that message is lost, the reconciler
(worker/housekeeping.py) re-sends the delivery once it is overdue.
"""

from __future__ import annotations

import logging

import httpx

from app.core.broker import TASK_DELIVER_WEBHOOKS, enqueue_deliveries
from app.core.config import get_settings
from app.core.db import session_scope
from app.knowledge.webhooks import DeliveryOutcome, attempt_delivery
from worker.celery_app import celery_app

log = logging.getLogger("worker.webhooks")


@celery_app.task(name=TASK_DELIVER_WEBHOOKS)
def deliver_webhooks(delivery_ids: list[str]) -> dict[str, int]:
    """Attempt each delivery once; re-enqueue those that failed and remain pending."""
    settings = get_settings()
    outcomes: list[DeliveryOutcome] = []
    # No redirects (a receiver is addressed as registered); HTTP(S)_PROXY from the environment apply.
    with httpx.Client(follow_redirects=False) as client:
        for delivery_id in delivery_ids:
            try:
                outcome = attempt_delivery(
                    session_scope, delivery_id=delivery_id, client=client, settings=settings
                )
            except Exception:  # the database was briefly unavailable: the reconciler re-sends it
                log.warning("webhook delivery %s not attempted", delivery_id, exc_info=True)
                continue
            outcomes.append(outcome)
            if outcome.result == "retry" and outcome.retry_in is not None:
                enqueue_deliveries([delivery_id], countdown=outcome.retry_in)
    counts = {"attempted": 0, "succeeded": 0, "retry": 0, "failed": 0, "skipped": 0}
    for outcome in outcomes:
        counts[outcome.result] += 1
        counts["attempted"] += outcome.result != "skipped"
    return counts
