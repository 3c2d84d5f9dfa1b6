"""The worker's side of the Celery application (app.core.broker): what runs when a worker starts.

`celery -A worker.celery_app:celery_app worker` names this module; the tasks are in worker.tasks.
"""

from __future__ import annotations

from celery.signals import worker_init

from app.core.broker import (
    QUEUE,
    TASK_ENHANCE,
    celery_app,
    declare_broker_queue,
    enqueue_jobs,
    make_celery,
)
from worker.pools import refuse_process_pools

__all__ = ["QUEUE", "TASK_ENHANCE", "celery_app", "declare_broker_queue", "enqueue_jobs", "make_celery"]


@worker_init.connect
def _declare_queue_before_consuming(sender: object = None, **_: object) -> None:
    refuse_process_pools(getattr(sender, "pool_cls", None))
    declare_broker_queue(getattr(sender, "app", None) or celery_app)
