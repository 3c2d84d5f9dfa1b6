"""Housekeeping in every worker: the heartbeat (/readyz, /metrics) and the reconciler, on a timer."""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta

from celery.signals import worker_ready, worker_shutdown

from app.core.broker import enqueue_deliveries
from app.core.config import get_settings
from app.core.db import read_session_scope, session_scope
from app.core.db_errors import warn_database_failure
from app.crud import reconcile_jobs, record_heartbeat
from app.knowledge.webhooks import due_deliveries
from app.models import utcnow
from worker import state
from worker.celery_app import enqueue_jobs
from worker.indexing import index_backlog
from worker.stats import WORKER_STATS

log = logging.getLogger("worker.jobs")
# A webhook delivery this far past its next attempt lost its broker message (or its worker).
DELIVERY_OVERDUE_SECONDS = 5.0
DELIVERY_RESEND_LIMIT = 500


def reconcile_once() -> dict[str, int]:
    settings = get_settings()
    with session_scope() as session:
        requeue, failed = reconcile_jobs(
            session,
            max_attempts=settings.job_max_attempts,
            queued_older_than=timedelta(seconds=settings.requeue_after_seconds),
        )
    for job_id in failed:
        log.info("job %s failed: lease expired and no attempts left", job_id)
    if requeue:
        log.info("reconciler re-sent %d job(s)", len(requeue))
        enqueue_jobs(requeue)
    with read_session_scope() as session:
        overdue = utcnow() - timedelta(seconds=DELIVERY_OVERDUE_SECONDS)
        deliveries = due_deliveries(session, now=overdue, limit=DELIVERY_RESEND_LIMIT)
    if deliveries:
        log.info("reconciler re-sent %d webhook delivery(ies)", len(deliveries))
        enqueue_deliveries(deliveries)
    return {"requeued": len(requeue), "failed": len(failed), "deliveries": len(deliveries)}


class Housekeeper(threading.Thread):
    """Heartbeat for /readyz and the reconciler, on a timer, in every worker."""

    def __init__(self) -> None:
        super().__init__(name="enhancer-housekeeper", daemon=True)
        self.stopped = threading.Event()

    def run(self) -> None:
        settings = get_settings()
        last_reconcile = 0.0
        while not self.stopped.is_set():
            try:
                with session_scope() as session:
                    record_heartbeat(
                        session,
                        worker_id=state.WORKER_ID,
                        model_version_id=state.model_holder().current_version,
                        jobs_done=state.jobs_done,
                        stats=WORKER_STATS.snapshot(),
                    )
                if time.monotonic() - last_reconcile >= settings.reconcile_interval_seconds:
                    last_reconcile = time.monotonic()
                    reconcile_once()
                    index_backlog()
            except Exception as exc:  # the database may be briefly locked or down; try again next tick
                warn_database_failure(log, "housekeeping failed", exc)
            self.stopped.wait(settings.worker_heartbeat_seconds)


_housekeeper: Housekeeper | None = None


@worker_ready.connect
def _start_housekeeping(**_: object) -> None:
    global _housekeeper
    _housekeeper = Housekeeper()
    _housekeeper.start()

    def preload() -> None:
        try:
            WORKER_STATS.model_loaded(state.model_holder().get())
        except Exception as error:  # jobs will report it; the worker stays up to serve a later model
            log.warning("model not loaded at start: %s", error)

    threading.Thread(target=preload, name="enhancer-preload", daemon=True).start()


@worker_shutdown.connect
def _stop_housekeeping(**_: object) -> None:
    if _housekeeper is not None:
        _housekeeper.stopped.set()
