"""Fault tests with real processes and real signals: nothing lost, nothing duplicated, nothing stuck.

Each test breaks something for real (SIGKILL a worker mid-job, kill and restart a private Redis with
jobs queued, SIGKILL the API while a client is sending, two workers and the API on one SQLite file)
and then checks the database itself: every job succeeded or failed, exactly one record per
succeeded job, one job per item. Leases are 5 s and the reconciler runs every second, so faults heal
within seconds (tests/reliability_helpers.py FAST_RECOVERY_ENV).
"""

from __future__ import annotations

import signal
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from tests.conftest import API_HEADERS, apply_env
from tests.reliability_helpers import (
    FAST_RECOVERY_ENV,
    ApiServer,
    RedisServer,
    assert_nothing_lost_or_duplicated,
    read_ledger,
    running_jobs,
    wait_until_settled,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def private_redis(tmp_path):  # type: ignore[no-untyped-def]
    server = RedisServer(tmp_path / "redis.log").start()
    yield server
    server.kill()


def _post(client: TestClient | httpx.Client, item: dict, **headers: str) -> str:
    response = client.post("/v1/enhance", json=item, headers=headers)
    assert response.status_code == 202, response.text
    return str(response.json()["jobs"][0]["id"])


def _wait_for(condition, message: str, timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(message)
        time.sleep(0.05)


def _wait_for_running_job(timeout: float = 60) -> tuple[str, str]:
    """(worker pid, job id) of the first job seen running."""
    deadline = time.monotonic() + timeout
    while not (running := running_jobs()):
        if time.monotonic() > deadline:
            raise TimeoutError("no worker started a job")
        time.sleep(0.05)
    job_id, pid = next(iter(running.items()))
    return pid, job_id


@pytest.mark.parametrize("broker", ["embedded", "redis"])
def test_worker_killed_mid_job_loses_nothing(
    service_env, monkeypatch, start_worker, seed_items, private_redis, broker
) -> None:
    apply_env(
        monkeypatch,
        service_env,
        BROKER_URL=private_redis.url if broker == "redis" else None,
        ENHANCER_MAX_BATCH="1",
        **FAST_RECOVERY_ENV,
    )
    workers = [start_worker(service_env, name=f"w{n}", ready=False) for n in (1, 2)]
    for worker in workers:
        worker.wait_ready()
    with TestClient(create_app(), headers=API_HEADERS) as client:
        job_ids = [_post(client, item) for item in seed_items[:2]]
        victim_pid, killed_job = _wait_for_running_job()
        (victim,) = [w for w in workers if str(w.process.pid) == victim_pid]
        victim.process.send_signal(signal.SIGKILL)  # no cleanup, no ack: the claim stays behind
        victim.process.wait()
        assert read_ledger().job_status[killed_job] == "running"
        ledger = wait_until_settled(len(job_ids), timeout=90)
    assert_nothing_lost_or_duplicated(ledger, len(job_ids))
    assert ledger.statuses["succeeded"] == len(job_ids), ledger.errors
    assert ledger.attempts[killed_job] >= 2  # taken back from the dead worker and run again


def test_redis_restart_with_jobs_queued_loses_nothing(
    service_env, monkeypatch, start_worker, seed_items, private_redis, caplog
) -> None:
    apply_env(monkeypatch, service_env, BROKER_URL=private_redis.url, **FAST_RECOVERY_ENV)
    with TestClient(create_app(), headers=API_HEADERS) as client:
        # No worker yet: the messages sit in Redis, and Redis (no persistence) dies with them.
        queued = [_post(client, seed_items[0])]
        _wait_for(lambda: private_redis.queued_messages() >= 1, "the job never reached Redis")
        private_redis.kill()
        # Redis down: the API still accepts (the job is in the database), it just cannot enqueue.
        queued.append(_post(client, seed_items[1]))
        # its publish (after the publisher's linger) fails before Redis is back
        _wait_for(lambda: "broker unreachable" in caplog.text, "the publisher never tried the downed Redis")
        private_redis.start()
        assert private_redis.queued_messages() == 0  # every message is gone
        worker = start_worker(service_env)
        ledger = wait_until_settled(2, timeout=120)
        assert ledger.statuses["succeeded"] == 2, ledger.errors
        # Redis restarted again under a running worker: it reconnects and keeps working.
        private_redis.kill()
        time.sleep(1)
        private_redis.start()
        later = [_post(client, seed_items[2])]
        ledger = wait_until_settled(3, timeout=120)
    assert worker.process.poll() is None, worker.output()
    assert_nothing_lost_or_duplicated(ledger, 3)
    assert ledger.statuses["succeeded"] == 3, ledger.errors
    assert set(queued + later) == set(ledger.job_status)


def test_api_killed_mid_batch_loses_and_duplicates_nothing(
    service_env, monkeypatch, start_worker, seed_items, tmp_path
) -> None:
    apply_env(monkeypatch, service_env, **FAST_RECOVERY_ENV)
    worker = start_worker(service_env, ready=False)
    api = ApiServer(service_env, tmp_path / "api.log").start()
    worker.wait_ready()
    items = seed_items[:6]
    accepted: dict[int, str] = {}
    errors: list[str] = []

    def ingester() -> None:
        """Sends every item with an Idempotency-Key and retries until it gets a 202, as the ingester does."""
        with api.client(timeout=5) as client:
            for index, item in enumerate(items):
                deadline = time.monotonic() + 60
                while index not in accepted and time.monotonic() < deadline:
                    try:
                        response = client.post(
                            "/v1/enhance", json=item, headers={"Idempotency-Key": f"i-{index}"}
                        )
                    except httpx.HTTPError:
                        time.sleep(0.05)  # the API is down: retry the same request
                        continue
                    if response.status_code == 202:
                        accepted[index] = response.json()["jobs"][0]["id"]
                    else:
                        errors.append(f"{response.status_code} {response.text}")
                        time.sleep(0.05)

    sender = threading.Thread(target=ingester)
    sender.start()
    while len(accepted) < 2:
        time.sleep(0.005)
    api.kill(signal.SIGKILL)  # while the ingester is sending
    api.start()
    sender.join(timeout=120)
    assert len(accepted) == len(items) and not errors, errors
    # The ingester re-sends the whole batch after the outage: same jobs, nothing new.
    with api.client(timeout=10) as client:
        again = client.post("/v1/enhance", json={"items": items})
    assert again.status_code == 202
    assert [job["id"] for job in again.json()["jobs"]] == [accepted[i] for i in range(len(items))]
    ledger = wait_until_settled(len(items), timeout=150)
    api.kill(signal.SIGTERM)
    assert_nothing_lost_or_duplicated(ledger, len(items))
    assert ledger.statuses["succeeded"] == len(items), ledger.errors
    assert "Traceback" not in api.output(), api.output()


def test_two_workers_and_the_api_share_sqlite(
    service_env, monkeypatch, start_worker, seed_items, tmp_path
) -> None:
    apply_env(monkeypatch, service_env, ENHANCER_MAX_BATCH="1", **FAST_RECOVERY_ENV)
    workers = [start_worker(service_env, name=f"w{n}", ready=False) for n in (1, 2)]
    api = ApiServer(service_env, tmp_path / "api.log").start()
    for worker in workers:
        worker.wait_ready()
    items = seed_items[:6]
    statuses: list[int] = []

    def send(chunk: list[dict]) -> None:
        with api.client(timeout=30) as client:
            for item in chunk:
                statuses.append(client.post("/v1/enhance", json=item).status_code)
                client.get("/v1/records")  # reads interleaved with the writes

    senders = [threading.Thread(target=send, args=(items[n::3],)) for n in range(3)]
    for thread in senders:
        thread.start()
    for thread in senders:
        thread.join(timeout=60)
    assert statuses == [202] * len(items)
    ledger = wait_until_settled(len(items), timeout=150)
    api.kill(signal.SIGTERM)
    assert_nothing_lost_or_duplicated(ledger, len(items))
    assert ledger.statuses["succeeded"] == len(items), ledger.errors
    assert all(w.process.poll() is None for w in workers)
    assert set(ledger.claimed_by.values()) == {str(w.process.pid) for w in workers}  # both did jobs
    assert "locked" not in api.output() and "Traceback" not in api.output(), api.output()
    for worker in workers:
        assert "database is locked" not in worker.output()
