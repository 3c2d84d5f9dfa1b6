"""A token bucket per API key, in this API process's memory: `ENHANCER_RATE_LIMIT_PER_SECOND` tokens
a second, up to `ENHANCER_RATE_LIMIT_BURST` saved; a request takes one, and without one it is a 429
with `Retry-After` (whole seconds until a token is back). Either setting at 0 turns the limit off.

Applied by require_api_key (app/api/deps.py) after the key is checked, so a request without a valid
key is never counted, and only the keyed routes (/v1, /enhance) are limited. A bucket is named by
the key's sha256, never the key. Each API process has its own buckets: with N uvicorn workers
(or N API containers) a key gets up to N times the rate.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from dataclasses import dataclass

from fastapi import HTTPException


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimited(HTTPException):
    def __init__(self, retry_after: int, *, rate: float, burst: int) -> None:
        super().__init__(
            status_code=429,
            detail=f"rate limit: this API key may make {rate:g} requests a second (bursts of {burst}); "
            f"retry in {retry_after} s",
            headers={"Retry-After": str(retry_after)},
        )


class RateLimiter:
    """Buckets only for keys that passed the check, so their number is bounded by the configured keys."""

    def __init__(self, per_second: float, burst: int) -> None:
        self.per_second = per_second
        self.burst = burst
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.per_second > 0 and self.burst > 0

    def take(self, key: str, now: float | None = None) -> int:
        """0 when the request may go; else the whole seconds (>= 1) until a token is back."""
        if not self.enabled:
            return 0
        now = time.monotonic() if now is None else now
        name = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
        with self._lock:
            bucket = self._buckets.get(name)
            if bucket is None:
                bucket = self._buckets[name] = _Bucket(tokens=float(self.burst), at=now)
            else:
                bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.at) * self.per_second)
                bucket.at = now
            if bucket.tokens >= 1:
                bucket.tokens -= 1
                return 0
            return max(1, math.ceil((1 - bucket.tokens) / self.per_second))

    def check(self, key: str) -> None:
        retry_after = self.take(key)
        if retry_after:
            raise RateLimited(retry_after, rate=self.per_second, burst=self.burst)
