"""Hands new job ids to the broker from one background thread, so a POST never waits on the broker.

The jobs table is the source of truth: a job is committed before its id gets here, and the
reconciler re-sends any queued job the broker never saw. So publishing can happen after the 202 -
and ids that arrive while a send is in flight are coalesced into the next send (one broker message
per model batch, see `enqueue_jobs`), which under load means fewer messages for the same jobs. With
the broker down, requests stay fast; the ids of the failed send wait in the database.
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
from collections.abc import Callable

from app.core.batches import batches_until_stopped

log = logging.getLogger(__name__)


def _enqueue(job_ids: list[str]) -> bool:
    from app.core.broker import enqueue_jobs

    return enqueue_jobs(job_ids)


class JobPublisher:
    def __init__(self, send: Callable[[list[str]], bool] = _enqueue) -> None:
        self._send = send
        self._pending: queue.SimpleQueue[list[str] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="enhancer-publisher", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def publish(self, job_ids: list[str]) -> None:
        """Non-blocking: safe to call from the event loop."""
        if job_ids:
            self._pending.put(list(job_ids))

    def close(self, timeout: float = 10.0) -> None:
        """Send what is pending, then stop (at shutdown; unsent ids are re-sent by the reconciler)."""
        if self._thread.is_alive():
            self._pending.put(None)
            self._thread.join(timeout)

    def _run(self) -> None:
        # ids that arrived while a send was in flight go out together in the next one
        for batches in batches_until_stopped(self._pending):
            batch = [job_id for ids in batches for job_id in ids]
            try:
                self._send(batch)
            except Exception:  # never let the thread die; the reconciler covers these ids
                log.exception("publishing %d job id(s) failed", len(batch))
