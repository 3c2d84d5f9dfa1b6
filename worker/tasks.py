"""The Celery task: enhance a batch of jobs (claim, generate within a time limit, store or fail)."""

from __future__ import annotations

import logging
import time

from sqlalchemy.exc import OperationalError

from app.core.config import get_settings
from app.core.db import session_scope
from app.core.db_errors import DatabaseUnavailable, database_unavailable
from app.core.logging import request_id_extra, use_json_on_celery_loggers
from app.crud import claim_jobs, finish_job_failed, finish_job_succeeded
from app.models import Item, new_id
from worker import housekeeping, state
from worker.celery_app import TASK_ENHANCE, celery_app, enqueue_jobs
from worker.indexing import index_records
from worker.leases import LeaseKeeper
from worker.pipeline import EnhanceOutcome, ItemInput, enhance_items
from worker.stats import WORKER_STATS
from worker.time_limit import GenerationTimedOut, batch_time_limit, run_with_time_limit

log = logging.getLogger("worker.jobs")
# A job whose result the database refused: tries at marking it re-queued (or failed), this far apart.
PUT_BACK_TRIES = 3
PUT_BACK_PAUSE_SECONDS = 5.0
use_json_on_celery_loggers()  # ENHANCER_LOG_FORMAT=json; as text, a job's request id ends its lines
# Celery imports this module (app.core.broker's include): importing housekeeping connects its
# worker_ready / worker_shutdown handlers.
__all__ = ["enhance_jobs", "housekeeping"]


@celery_app.task(name=TASK_ENHANCE)
def enhance_jobs(job_ids: list[str]) -> dict[str, int]:
    settings = get_settings()
    claim_token = f"{state.WORKER_ID}:{new_id()[:8]}"
    job_ids = job_ids[: settings.max_batch_size]  # ids past a batch stay queued for the reconciler
    try:
        with session_scope() as session:
            jobs = claim_jobs(
                session,
                job_ids=job_ids,
                claim_token=claim_token,
                lease_seconds=settings.job_lease_seconds,
                extra=max(0, settings.max_batch_size - len(job_ids)),
            )
            claimed = [(job.id, job.attempts, job.item, ItemInput.from_submitted(job.item)) for job in jobs]
            # Each job's lines carry the X-Request-ID of the request that created it.
            request_ids = {job.id: request_id_extra(job.request_id) for job in jobs}
    except OperationalError as exc:
        unavailable = database_unavailable(exc)
        if unavailable is None:
            raise
        # Nothing was claimed: the jobs are still queued. Ask again later (the reconciler would too).
        log.error("%d job(s) not claimed, %s", len(job_ids), unavailable.describe())
        enqueue_jobs(job_ids, countdown=float(unavailable.retry_after))
        return {"claimed": 0}
    if not claimed:
        return {"claimed": 0}
    for job_id, attempt, _, _ in claimed:
        log.info(
            "job %s running (attempt %d) on %s", job_id, attempt, state.WORKER_ID, extra=request_ids[job_id]
        )
    started = time.perf_counter()
    model_failure = False
    version_id: str | None = None
    keeper = LeaseKeeper(claim_token, settings.job_lease_seconds)
    keeper.start()
    try:
        loaded = state.model_holder().get()
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
            state.model_holder().abandon(loaded)
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
    stored: list[str] = []
    for (job_id, attempt, item, _), outcome in zip(claimed, outcomes, strict=True):
        extra = request_ids[job_id]
        try:
            record_id = _close_job(
                job_id,
                attempt,
                item,
                outcome,
                claim_token,
                version_id,
                model_failure=model_failure,
                elapsed=elapsed,
                extra=extra,
            )
        except OperationalError as exc:
            unavailable = database_unavailable(exc)
            if unavailable is None:
                raise
            _put_back(job_id, attempt, claim_token, unavailable, extra=extra)
            continue
        if record_id is not None:
            succeeded += 1
            stored.append(record_id)
    state.count_jobs_done(succeeded)
    index_records(stored)  # after the jobs are closed: a client polling sees its record at once
    return {"claimed": len(claimed), "succeeded": succeeded}


def _close_job(
    job_id: str,
    attempt: int,
    item: Item,
    outcome: EnhanceOutcome,
    claim_token: str,
    version_id: str | None,
    *,
    model_failure: bool,
    elapsed: float,
    extra: dict,
) -> str | None:
    """Store the record and mark the job succeeded, or fail / re-queue it. The stored record's id."""
    settings = get_settings()
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
            log.info(
                "job %s succeeded in %.2f s (%d tokens, %d decoding attempt(s))",
                job_id,
                elapsed,
                outcome.new_tokens,
                outcome.attempts,
                extra=extra,
            )
            return record.id if record is not None else None
        retry = model_failure and attempt < settings.job_max_attempts
        finish_job_failed(
            session, job_id=job_id, claim_token=claim_token, error=outcome.error or "unknown", retry=retry
        )
    if retry:
        log.info("job %s re-queued after attempt %d: %s", job_id, attempt, outcome.error, extra=extra)
        enqueue_jobs([job_id], countdown=min(60.0, 2.0**attempt))
    else:
        log.info("job %s failed: %s", job_id, outcome.error, extra=extra)
    return None


def _put_back(
    job_id: str, attempt: int, claim_token: str, unavailable: DatabaseUnavailable, *, extra: dict
) -> None:
    """The database refused the job's result (locked past the busy timeout, disk full): say so on the
    job and re-queue it, or fail it when out of attempts, rather than leave it running until its lease
    runs out with the cause lost. That small update is tried a few times; if the database still
    refuses it, the lease brings the job back."""
    settings = get_settings()
    error = f"database unavailable: {unavailable.describe()}"
    retry = attempt < settings.job_max_attempts
    log.error("job %s not stored, %s", job_id, error, extra=extra)
    for tries_left in reversed(range(PUT_BACK_TRIES)):
        try:
            with session_scope() as session:
                finish_job_failed(session, job_id=job_id, claim_token=claim_token, error=error, retry=retry)
            break
        except OperationalError as exc:
            if database_unavailable(exc) is None or not tries_left:
                log.error(
                    "job %s: could not record it (%s); its lease will re-queue it", job_id, exc, extra=extra
                )
                return
            time.sleep(min(float(unavailable.retry_after), PUT_BACK_PAUSE_SECONDS))
    log.info("job %s %s", job_id, "re-queued" if retry else "failed", extra=extra)
    if retry:
        enqueue_jobs([job_id], countdown=float(unavailable.retry_after))
