"""Which Celery pools a worker may run: decided here, for the CLI's choices and for any `celery worker`."""

from __future__ import annotations

# Pools whose tasks run in the process that started the worker: the model holder, the heartbeat
# (host:pid, jobs done, stats) and the housekeeper are per process and start on worker_ready, in that
# process. A prefork child would load its own model (N copies in 16 GB) and do jobs no heartbeat counts.
SUPPORTED_POOLS = ("solo", "threads")
PREFORK_REFUSED = (
    "enhancer workers run --pool=solo (default) or --pool=threads; the prefork pool is not supported: "
    "each child would load its own copy of the model and the worker's heartbeat would not see its jobs. "
    "For more throughput raise ENHANCER_MAX_BATCH, or run another `enhancer worker` process."
)


def refuse_process_pools(pool_cls: object) -> None:
    """SystemExit with PREFORK_REFUSED for a pool that runs tasks in child processes."""
    from celery import concurrency
    from celery.concurrency.prefork import TaskPool as PreforkPool

    resolved = concurrency.get_implementation(pool_cls) if isinstance(pool_cls, str) else pool_cls
    if isinstance(resolved, type) and issubclass(resolved, PreforkPool):
        # SystemExit, not an exception: Celery logs and ignores exceptions raised by signal handlers.
        raise SystemExit(PREFORK_REFUSED)
