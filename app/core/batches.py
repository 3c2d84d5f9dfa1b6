"""The loop of a writer thread: take what waits in its queue as one batch, until the stop sentinel."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from typing import TypeVar

T = TypeVar("T")


def batches_until_stopped(
    pending: queue.SimpleQueue[T | None], *, max_size: int | None = None
) -> Iterator[list[T]]:
    """Block for one item, then add whatever else is already waiting (up to `max_size`) and yield them
    together. `None` in the queue stops the loop after the batch it arrived behind, so what was put
    before it is never dropped."""
    while True:
        first = pending.get()
        if first is None:
            return
        batch, stopped = [first], False
        while max_size is None or len(batch) < max_size:
            try:
                item = pending.get_nowait()
            except queue.Empty:
                break
            if item is None:
                stopped = True
                break
            batch.append(item)
        yield batch
        if stopped:
            return
