"""Scale-out: two worker processes against Redis and PostgreSQL share the queue, each job done once."""

from __future__ import annotations

from collections import Counter

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.main import create_app
from tests.conftest import API_HEADERS, REDIS_URL, apply_env, wait_for_jobs


def test_two_workers_on_redis_and_postgresql_do_every_job_once(
    service_env, monkeypatch, start_worker, seed_items
) -> None:
    import redis

    from app.core.db import session_scope
    from app.models import Job, Record
    from tests.conftest import _create_pg_database, _drop_pg_database

    name, pg_url = _create_pg_database()
    broker = f"{REDIS_URL}/7"
    redis.Redis.from_url(broker).flushdb()
    try:
        # One job per generate call, so the queue (not batch claiming) decides who does what.
        apply_env(monkeypatch, service_env, DATABASE_URL=pg_url, BROKER_URL=broker, ENHANCER_MAX_BATCH="1")
        first = start_worker(service_env, name="w1")
        second = start_worker(service_env, name="w2")
        items = seed_items[10:20]
        with TestClient(create_app(), headers=API_HEADERS) as client:
            job_ids = [j["id"] for j in client.post("/v1/enhance", json={"items": items}).json()["jobs"]]
            jobs = wait_for_jobs(client, job_ids, timeout=300)
        assert [j["status"] for j in jobs] == ["succeeded"] * len(items)
        with session_scope() as session:
            per_job = dict(
                session.execute(
                    select(Record.job_id, func.count())
                    .where(Record.job_id.in_(job_ids))
                    .group_by(Record.job_id)
                ).all()
            )
            claims = [session.get(Job, job_id).worker for job_id in job_ids]
        assert per_job == dict.fromkeys(job_ids, 1)
        by_process = Counter(claim.split(":")[1] for claim in claims)
        assert set(by_process) == {str(first.process.pid), str(second.process.pid)}, by_process
    finally:
        from app.core.db import reset_caches

        for worker in (locals().get("first"), locals().get("second")):
            if worker is not None:
                worker.stop()
        reset_caches()
        _drop_pg_database(name)
