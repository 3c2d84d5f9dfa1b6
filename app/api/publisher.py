"""Hands new job ids to the broker from one background thread, so a POST never waits on the broker.

The jobs table is the source of truth: a job is committed before its id gets here, and the
reconciler re-sends any queued job the broker never saw. So publishing can happen after the 202 -
and ids that arrive while a send is in flight are coalesced into the next send (one broker message
per model batch, see `enqueue_jobs`), which under load means fewer messages for the same jobs. With
the broker down, requests stay fast; the ids of the failed send wait in the database.

Ids wait up to `LINGER_SECONDS` for a full model batch: at 200 POST/s the group commits came 1-3 ids
at a time, so one broker message per 1.7 jobs on average (each a kombu publish, a SQLite commit on the
embedded broker), a fifth of the API's CPU. A job reaching the worker 50 ms later costs nothing next
to its seconds of generation.
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


def _enqueue(job_ids: list[str]) -> bool:
    from app.core.broker import enqueue_jobs

    return enqueue_jobs(job_ids)


LINGER_SECONDS = 0.05


class JobPublisher:
    def __init__(
        self,
        send: Callable[[list[str]], bool] = _enqueue,
        *,
        batch_size: int,  # ids per broker message: the worker's model batch (settings.max_batch_size)
        linger_seconds: float = LINGER_SECONDS,
    ) -> None:
        self._send = send
        self.batch_size = batch_size
        self.linger_seconds = linger_seconds
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
        waiting: list[str] = []
        send_by = 0.0  # when the oldest waiting id goes out, full batch or not
        while True:
            try:
                ids = self._pending.get(timeout=max(0.0, send_by - time.monotonic()) if waiting else None)
            except queue.Empty:
                ids = []
            if ids is None:
                self._send_safely(waiting)
                return
            if ids and not waiting:
                send_by = time.monotonic() + self.linger_seconds
            waiting += ids
            if time.monotonic() >= send_by:
                self._send_safely(waiting)
                waiting = []
            elif len(waiting) >= self.batch_size:
                full = len(waiting) - len(waiting) % self.batch_size
                self._send_safely(waiting[:full])
                waiting = waiting[full:]
                send_by = time.monotonic() + self.linger_seconds

    def _send_safely(self, job_ids: list[str]) -> None:
        if not job_ids:
            return
        try:
            self._send(job_ids)
        except Exception:  # never let the thread die; the reconciler covers these ids
            log.exception("publishing %d job id(s) failed", len(job_ids))
