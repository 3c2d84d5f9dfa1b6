"""POST /v1/enhance -> real Celery worker process -> tiny real model -> validated record.

Runs against the embedded defaults (SQLite + SQLAlchemy broker, no Redis) and against
PostgreSQL + Redis, and checks every stored record against `enhancer schema`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import jsonschema
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from tests.conftest import API_HEADERS, REDIS_URL, apply_env, wait_for_jobs


def _schema() -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "app.cli", "schema"], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


@pytest.mark.parametrize("broker", ["embedded", "redis"])
def test_items_become_valid_records(
    service_env, database_url, broker, monkeypatch, start_worker, seed_items
) -> None:
    redis_db = f"{REDIS_URL}/{9 if database_url else 8}"
    if broker == "redis":
        import redis

        redis.Redis.from_url(redis_db).flushdb()
    apply_env(
        monkeypatch,
        service_env,
        DATABASE_URL=database_url,
        BROKER_URL=redis_db if broker == "redis" else None,
    )
    start_worker(service_env)
    items = seed_items[:3]
    with TestClient(create_app(), headers=API_HEADERS) as client:
        single = client.post("/v1/enhance", json=items[0])
        batch = client.post("/v1/enhance", json={"items": items[1:]})
        assert single.status_code == batch.status_code == 202
        job_ids = [j["id"] for j in single.json()["jobs"] + batch.json()["jobs"]]
        jobs = wait_for_jobs(client, job_ids)
        assert [j["status"] for j in jobs] == ["succeeded"] * 3, jobs
        schema = _schema()
        for job, item in zip(jobs, items, strict=True):
            record = client.get(job["record_url"]).json()
            jsonschema.validate(record["metadata"], schema)
            assert record["job_id"] == job["id"]
            assert record["metadata"]["source"] == item["source"]
            assert record["metadata"]["headline"] == item["subject"]
            assert all("utm_" not in link for link in record["metadata"]["links"])
            text = (item["subject"] + " " + item["content"]).casefold()
            assert all(entity.casefold() in text for entity in record["metadata"]["entities"])
        page = client.get("/v1/records", params={"source": items[0]["source"], "limit": 2}).json()
        assert page["total"] >= 1 and len(page["items"]) <= 2
        assert client.get("/readyz").status_code == 200
        # The worker indexes each record after storing it: every record lands in exactly one story.
        record_ids = {job["record_url"].rsplit("/", 1)[1] for job in jobs}
        deadline = time.monotonic() + 60
        while True:
            stories = client.get("/v1/stories", params={"limit": 100}).json()["items"]
            in_stories = [r["id"] for story in stories for r in story["records"]]
            if set(in_stories) >= record_ids or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert sorted(in_stories) == sorted(record_ids), stories
        assert client.get("/v1/topics").json()["items"], "the records' topics are in the vocabulary"


def test_failing_model_ends_in_failed_job_with_reason(
    service_env, monkeypatch, start_worker, seed_items, tmp_path
) -> None:
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    apply_env(monkeypatch, service_env, ENHANCER_MODEL=str(broken), ENHANCER_JOB_MAX_ATTEMPTS="2")
    start_worker(service_env)
    with TestClient(create_app(), headers=API_HEADERS) as client:
        job_id = client.post("/v1/enhance", json=seed_items[0]).json()["jobs"][0]["id"]
        (job,) = wait_for_jobs(client, [job_id], timeout=60)
    assert job["status"] == "failed"
    assert job["attempts"] == 2
    assert job["error"].startswith("model error:")
    assert job["record_id"] is None


def test_jobs_queued_while_no_worker_runs_are_done_when_one_starts(
    service_env, monkeypatch, start_worker, seed_items
) -> None:
    apply_env(monkeypatch, service_env)
    with TestClient(create_app(), headers=API_HEADERS) as client:
        job_ids = [client.post("/v1/enhance", json=item).json()["jobs"][0]["id"] for item in seed_items[3:5]]
        assert {client.get(f"/v1/jobs/{j}").json()["status"] for j in job_ids} == {"queued"}
        start_worker(service_env)
        jobs = wait_for_jobs(client, job_ids)
    assert {j["status"] for j in jobs} == {"succeeded"}
