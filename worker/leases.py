"""Lease keeping: a live worker's claim on the jobs of the batch it is generating stays fresh."""

from __future__ import annotations

import logging
import threading

from app.core.db import session_scope
from app.core.db_errors import warn_database_failure
from app.crud import renew_leases

log = logging.getLogger("worker.jobs")


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
            except Exception as exc:  # database briefly locked: the next tick (well within the lease) retries
                warn_database_failure(log, "lease renewal failed", exc)

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=5)
