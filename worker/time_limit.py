"""A batch's generate call gets a bounded time: a hung one fails its jobs and frees the worker.

The model call runs in native code (OpenVINO, torch) that Python cannot interrupt, so the call runs in
its own daemon thread and the task stops waiting for it. The thread is left behind with the runtime it
holds; the caller drops that runtime so the next batch loads a fresh one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from worker.runtime.schema_budget import batch_token_budget

T = TypeVar("T")


class GenerationTimedOut(RuntimeError):
    pass


def batch_time_limit(rows: int, *, min_tokens_per_second: float, overhead_seconds: float) -> float:
    """Seconds a batch may take: its whole token budget (every row, every decoding attempt) at the
    slowest throughput still counted as working, plus a fixed allowance (prompt prefill, grammar)."""
    return overhead_seconds + batch_token_budget(rows) / min_tokens_per_second


def run_with_time_limit(call: Callable[[], T], seconds: float, *, what: str) -> T:
    """`call()`'s result, its exception, or GenerationTimedOut after `seconds`."""
    done = threading.Event()
    result: list[T] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            result.append(call())
        except BaseException as exc:  # handed to the waiting task as it is
            error.append(exc)
        finally:
            done.set()

    threading.Thread(target=run, name="enhancer-generate", daemon=True).start()
    if not done.wait(seconds):
        raise GenerationTimedOut(f"{what} did not finish within its time limit of {seconds:.1f} s; given up")
    if error:
        raise error[0]
    return result[0]
