"""Per-process generation statistics; the heartbeat carries them to the database, /metrics reads them there.

Workers may run on other hosts with no port of their own to scrape, so the API exposes their numbers:
cumulative counters (Prometheus computes rates) and the throughput of the most recent batch.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, Protocol


class _Outcome(Protocol):
    new_tokens: int


class _RuntimeInfo(Protocol):
    backend: str
    device: str
    precision: str
    load_seconds: float


class _Loaded(Protocol):
    version_id: str

    @property
    def runtime(self) -> Any: ...


class WorkerStats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.items_total = 0
        self.tokens_total = 0
        self.generation_seconds_total = 0.0
        self.batches_total = 0
        self.last_tokens_per_second = 0.0
        self.last_items_per_second = 0.0
        self.model: dict[str, Any] = {}

    def batch_done(self, outcomes: Sequence[_Outcome], seconds: float) -> None:
        """One generate call over `outcomes` (valid or not: the tokens were generated either way)."""
        tokens = sum(max(0, int(o.new_tokens)) for o in outcomes)
        with self._lock:
            self.batches_total += 1
            self.items_total += len(outcomes)
            self.tokens_total += tokens
            self.generation_seconds_total += max(0.0, seconds)
            if seconds > 0:
                self.last_tokens_per_second = tokens / seconds
                self.last_items_per_second = len(outcomes) / seconds

    def model_loaded(self, loaded: _Loaded) -> None:
        info: _RuntimeInfo = loaded.runtime.info
        with self._lock:
            self.model = {
                "version": loaded.version_id,
                "backend": info.backend,
                "device": info.device,
                "precision": info.precision,
                "load_seconds": float(info.load_seconds),
            }

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "items_total": self.items_total,
                "tokens_total": self.tokens_total,
                "generation_seconds_total": round(self.generation_seconds_total, 6),
                "batches_total": self.batches_total,
                "last_tokens_per_second": round(self.last_tokens_per_second, 3),
                "last_items_per_second": round(self.last_items_per_second, 4),
                "model": dict(self.model),
            }


WORKER_STATS = WorkerStats()
