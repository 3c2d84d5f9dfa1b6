"""This worker process's state: who it is, the model it serves, the jobs it finished.

Per process: the solo and threads pools (worker/pools.py) run every task in the process that started
the worker, where the heartbeat reports these.
"""

from __future__ import annotations

import os
import socket

from app.core.config import get_settings
from worker.model_holder import ModelHolder

WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"  # a heartbeat row, a claim token prefix
_holder: ModelHolder | None = None
jobs_done = 0


def model_holder() -> ModelHolder:
    global _holder
    if _holder is None:
        _holder = ModelHolder(get_settings())
    return _holder


def count_jobs_done(succeeded: int) -> None:
    global jobs_done
    jobs_done += succeeded
