"""The broker: the Celery application, its queue, and sending job ids to it.

Core, not worker: the API enqueues through it (no torch here); the worker's tasks register on the
same application (worker/celery_app.py, worker/tasks.py).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from functools import lru_cache, partial

from celery import Celery
from kombu import Queue

from app.core.config import get_settings
from app.core.private_files import sqlite_file

TASK_ENHANCE = "worker.tasks.enhance_jobs"
TASK_DELIVER_WEBHOOKS = "worker.webhook_tasks.deliver_webhooks"
# Webhook deliveries per message: one slow receiver (its timeout per delivery) holds up only these.
DELIVERY_BATCH = 10
QUEUE = "enhance"


def _embedded_broker_connection(database: str) -> sqlite3.Connection:
    """A connection to the embedded broker's SQLite file, in WAL mode with synchronous=NORMAL.

    kombu would open it in rollback-journal mode with synchronous=FULL: every message a commit that
    creates, syncs and deletes a journal file, and holds the file's lock against the polling
    worker meanwhile - most of the API's CPU per POST under load. In WAL a commit appends to the log.
    NORMAL may lose the last messages to a power cut (never to a crash); the reconciler re-sends
    those jobs, since the jobs table, not the broker, is the truth.
    """
    connection = sqlite3.connect(database, timeout=30, check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")  # kept in the file; a no-op once set
    connection.execute("PRAGMA synchronous=NORMAL")
    return connection


def _transport_options(broker_url: str, lease_seconds: int) -> dict[str, object]:
    if broker_url.startswith("sqla+"):
        # kombu hands these to create_engine(); it takes no transport knobs
        database = sqlite_file(broker_url.removeprefix("sqla+"))
        return {} if database is None else {"creator": partial(_embedded_broker_connection, str(database))}
    # Redis redelivers unacked messages after this; keep it above the longest job.
    return {"visibility_timeout": lease_seconds * 2, "polling_interval": 0.2}


def make_celery(broker_url: str | None = None) -> Celery:
    settings = get_settings()
    settings.ensure_dirs()
    broker_url = broker_url or settings.celery_broker_url
    app = Celery("enhancer", broker=broker_url, include=["worker.tasks", "worker.webhook_tasks"])
    app.conf.update(
        task_default_queue=QUEUE,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        result_backend=None,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        # The jobs table is the source of truth; a broker outage must not hang the API.
        broker_connection_timeout=2,
        broker_connection_max_retries=1,
        broker_transport_options=_transport_options(broker_url, settings.job_lease_seconds),
        # Loading a model takes longer than the default 4 s; we load lazily anyway.
        worker_proc_alive_timeout=120,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    return app


celery_app = make_celery()


def declare_broker_queue(app: Celery, *, attempts: int = 10) -> None:
    """Create the queue in the embedded (SQLAlchemy) broker before anything consumes from it.

    kombu's SQLAlchemy transport inserts the queue row on first use and only tolerates an
    OperationalError: two workers starting at once against a new broker file race on the UNIQUE
    name, and the loser's consumer dies with an IntegrityError. They race on its tables too: kombu's
    first connection runs CREATE TABLE after checking they are absent, and the loser's fails with
    "table ... already exists" (an OperationalError; kombu caches no engine then). Either way the
    loser's next try finds what the winner made.
    """
    if not str(app.conf.broker_url).startswith("sqla+"):
        return  # Redis declares nothing persistent
    from sqlalchemy.exc import IntegrityError, OperationalError

    for attempt in range(1, attempts + 1):
        try:
            with app.connection_for_write() as connection:
                Queue(QUEUE).bind(connection.default_channel).declare()
            return
        except (IntegrityError, OperationalError):
            if attempt == attempts:
                raise
            logging.getLogger(__name__).info("broker queue or tables made by another process; looking again")
            time.sleep(0.05 * attempt)


@lru_cache(maxsize=4)
def _producer(broker_url: str) -> Celery:
    """The app that sends: follows the current settings (tests and CLIs switch data dirs)."""
    return celery_app if broker_url == celery_app.conf.broker_url else make_celery(broker_url)


def enqueue_jobs(job_ids: list[str], *, countdown: float | None = None) -> bool:
    """Send job ids to the broker. False when it is unreachable: the reconciler re-sends later."""
    if not job_ids:
        return True
    settings = get_settings()
    try:
        producer = _producer(settings.celery_broker_url)
        # One message per model batch: a 100-item request (or a reconciler pass over a backlog)
        # must not become one task that claims every job in a single generate call.
        for start in range(0, len(job_ids), settings.max_batch_size):
            chunk = job_ids[start : start + settings.max_batch_size]
            producer.send_task(TASK_ENHANCE, args=[chunk], countdown=countdown, retry=False)
    except Exception:  # broker down: jobs stay queued in the database and are not lost
        import logging

        logging.getLogger(__name__).warning(
            "broker unreachable; %d job(s) wait for the reconciler", len(job_ids)
        )
        return False
    return True


def enqueue_deliveries(delivery_ids: list[str], *, countdown: float | None = None) -> bool:
    """Send webhook delivery ids to the broker. False when it is unreachable: the reconciler re-sends."""
    if not delivery_ids:
        return True
    settings = get_settings()
    try:
        producer = _producer(settings.celery_broker_url)
        for start in range(0, len(delivery_ids), DELIVERY_BATCH):
            chunk = delivery_ids[start : start + DELIVERY_BATCH]
            producer.send_task(TASK_DELIVER_WEBHOOKS, args=[chunk], countdown=countdown, retry=False)
    except Exception:  # broker down: deliveries stay pending in the database and are not lost
        logging.getLogger(__name__).warning(
            "broker unreachable; %d webhook delivery(ies) wait for the reconciler", len(delivery_ids)
        )
        return False
    return True
