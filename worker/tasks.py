"""Celery tasks: enhance a batch of jobs; keep the jobs table honest (heartbeat + reconciler)."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from datetime import timedelta

from celery.signals import worker_ready, worker_shutdown

from app.core.config import get_settings
from app.core.db import session_scope
from app.core.logging import use_json_on_celery_loggers
from app.crud import (
    claim_jobs,
    finish_job_failed,
    finish_job_succeeded,
    reconcile_jobs,
    record_heartbeat,
    renew_leases,
)
from app.models import new_id
from worker.celery_app import TASK_ENHANCE, celery_app, enqueue_jobs
from worker.model_holder import ModelHolder
from worker.pipeline import EnhanceOutcome, ItemInput, enhance_items
from worker.stats import WORKER_STATS
from worker.time_limit import GenerationTimedOut, batch_time_limit, run_with_time_limit

log = logging.getLogger("worker.jobs")
use_json_on_celery_loggers()  # ENHANCER_LOG_FORMAT=json

WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"  # this process: a heartbeat row, a claim token prefix
_holder: ModelHolder | None = None
_jobs_done = 0


def model_holder() -> ModelHolder:
    global _holder
    if _holder is None:
        _holder = ModelHolder(get_settings())
    return _holder


@celery_app.task(name=TASK_ENHANCE)
def enhance_jobs(job_ids: list[str]) -> dict[str, int]:
    global _jobs_done
    settings = get_settings()
    claim_token = f"{WORKER_ID}:{new_id()[:8]}"
    job_ids = job_ids[: settings.max_batch_size]  # ids past a batch stay queued for the reconciler
    with session_scope() as session:
        jobs = claim_jobs(
            session,
            job_ids=job_ids,
            claim_token=claim_token,
            lease_seconds=settings.job_lease_seconds,
            extra=max(0, settings.max_batch_size - len(job_ids)),
        )
        claimed = [(job.id, job.attempts, job.item, ItemInput.from_submitted(job.item)) for job in jobs]
    if not claimed:
        return {"claimed": 0}
    for job_id, attempt, _, _ in claimed:
        log.info("job %s running (attempt %d) on %s", job_id, attempt, WORKER_ID)
    started = time.perf_counter()
    model_failure = False
    version_id: str | None = None
    keeper = LeaseKeeper(claim_token, settings.job_lease_seconds)
    keeper.start()
    try:
        loaded = model_holder().get()
        version_id = loaded.version_id
        WORKER_STATS.model_loaded(loaded)
        limit = batch_time_limit(
            len(claimed),
            min_tokens_per_second=settings.generation_min_tokens_per_second,
            overhead_seconds=settings.generation_overhead_seconds,
        )
        try:
            outcomes = run_with_time_limit(
                lambda: enhance_items(loaded.runtime, [c[3] for c in claimed]),
                limit,
                what=f"generating {len(claimed)} item(s)",
            )
        except GenerationTimedOut:
            model_holder().abandon(loaded)
            raise
    except Exception as exc:  # model could not load or generate: retry with backoff, then fail
        log.exception("model call failed for %d job(s)", len(claimed))
        model_failure = True
        outcomes = [EnhanceOutcome(error=f"model error: {type(exc).__name__}: {exc}") for _ in claimed]
    finally:
        keeper.stop()
    elapsed = time.perf_counter() - started
    if not model_failure:
        WORKER_STATS.batch_done(outcomes, elapsed)
    succeeded = 0
    for (job_id, attempt, item, _), outcome in zip(claimed, outcomes, strict=True):
        with session_scope() as session:
            if outcome.metadata is not None:
                record = finish_job_succeeded(
                    session,
                    job_id=job_id,
                    claim_token=claim_token,
                    data=outcome.metadata.model_dump(mode="json"),
                    item=item,
                    model_version_id=version_id,
                    generation_seconds=outcome.seconds,
                )
                succeeded += record is not None
                log.info(
                    "job %s succeeded in %.2f s (%d tokens, %d decoding attempt(s))",
                    job_id,
                    elapsed,
                    outcome.new_tokens,
                    outcome.attempts,
                )
                continue
            retry = model_failure and attempt < settings.job_max_attempts
            error = outcome.error or "unknown"
            finish_job_failed(session, job_id=job_id, claim_token=claim_token, error=error, retry=retry)
        if retry:
            log.info("job %s re-queued after attempt %d: %s", job_id, attempt, outcome.error)
            enqueue_jobs([job_id], countdown=min(60.0, 2.0**attempt))
        else:
            log.info("job %s failed: %s", job_id, outcome.error)
    _jobs_done += succeeded
    return {"claimed": len(claimed), "succeeded": succeeded}


class LeaseKeeper(threading.Thread):
    """Renews this claim's leases while its batch generates, so a lease can be short (a dead
    worker's jobs come back quickly) without a slow batch being taken from a live worker.
    It runs in the process that runs the task: when that process dies, renewal stops with it.
    """

    def __init__(self, claim_token: str, lease_seconds: int) -> None:
        super().__init__(name="enhancer-lease", daemon=True)
        self.claim_token, self.lease_seconds = claim_token, lease_seconds
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.lease_seconds / 3):
            try:
                with session_scope() as session:
                    renew_leases(session, claim_token=self.claim_token, lease_seconds=self.lease_seconds)
            except Exception:  # database briefly locked: the next tick (well within the lease) retries
                log.warning("lease renewal failed", exc_info=True)

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=5)


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
    return {"requeued": len(requeue), "failed": len(failed)}


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
                        worker_id=WORKER_ID,
                        model_version_id=model_holder().current_version,
                        jobs_done=_jobs_done,
                        stats=WORKER_STATS.snapshot(),
                    )
                if time.monotonic() - last_reconcile >= settings.reconcile_interval_seconds:
                    last_reconcile = time.monotonic()
                    reconcile_once()
            except Exception:  # the database may be briefly locked or down; try again next tick
                log.warning("housekeeping failed", exc_info=True)
            self.stopped.wait(settings.worker_heartbeat_seconds)


_housekeeper: Housekeeper | None = None


@worker_ready.connect
def _start_housekeeping(**_: object) -> None:
    global _housekeeper
    _housekeeper = Housekeeper()
    _housekeeper.start()

    def preload() -> None:
        try:
            WORKER_STATS.model_loaded(model_holder().get())
        except Exception as error:  # jobs will report it; the worker stays up to serve a later model
            log.warning("model not loaded at start: %s", error)

    threading.Thread(target=preload, name="enhancer-preload", daemon=True).start()


@worker_shutdown.connect
def _stop_housekeeping(**_: object) -> None:
    if _housekeeper is not None:
        _housekeeper.stopped.set()
