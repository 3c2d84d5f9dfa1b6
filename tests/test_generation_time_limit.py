"""A hung generate call is given up: its jobs fail with a readable reason and the worker goes on."""

from __future__ import annotations

import threading
import time

import pytest
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.main import create_app
from tests.conftest import API_HEADERS, apply_env, wait_for_jobs
from worker.runtime.schema_budget import batch_token_budget
from worker.time_limit import GenerationTimedOut, batch_time_limit, run_with_time_limit

SLOWEST_MEASURED_TOKENS_PER_SECOND = 17.9  # torch fp32 eager on 2 CPU cores (docs/performance.md)


def test_a_call_that_never_returns_is_given_up_after_its_limit() -> None:
    never = threading.Event()
    started = time.monotonic()
    with pytest.raises(GenerationTimedOut, match="generating 2 item"):
        run_with_time_limit(never.wait, 0.3, what="generating 2 item(s)")
    assert 0.3 <= time.monotonic() - started < 3
    never.set()


def test_results_and_errors_of_a_call_within_its_limit_come_back_as_they_are() -> None:
    assert run_with_time_limit(lambda: 42, 5, what="x") == 42
    with pytest.raises(KeyError, match="boom"):
        run_with_time_limit(lambda: {}["boom"], 5, what="x")


@pytest.mark.parametrize("rows", [1, 4, 16])
def test_the_default_limit_never_cuts_a_slow_but_working_batch(rows: int) -> None:
    settings = Settings()
    limit = batch_time_limit(
        rows,
        min_tokens_per_second=settings.generation_min_tokens_per_second,
        overhead_seconds=settings.generation_overhead_seconds,
    )
    # every row at its whole budget, on every attempt, at the slowest throughput ever measured here
    assert limit > batch_token_budget(rows) / SLOWEST_MEASURED_TOKENS_PER_SECOND * 2
    assert limit < 4 * 3600  # and a hang is noticed within hours, not never


def test_a_batch_over_its_time_limit_fails_its_job_and_the_worker_takes_the_next(
    service_env, monkeypatch, start_worker, seed_items
) -> None:
    # A limit no generate call can meet stands in for a hung one: the real model, the real worker.
    apply_env(
        monkeypatch,
        service_env,
        ENHANCER_MIN_TOKENS_PER_SECOND="1e9",
        ENHANCER_GENERATION_OVERHEAD_SECONDS="0",
        ENHANCER_JOB_MAX_ATTEMPTS="1",
        ENHANCER_MAX_BATCH="1",
    )
    worker = start_worker(service_env)
    with TestClient(create_app(), headers=API_HEADERS) as client:
        first = client.post("/v1/enhance", json=seed_items[0]).json()["jobs"][0]["id"]
        (job,) = wait_for_jobs(client, [first], timeout=120)
        second = client.post("/v1/enhance", json=seed_items[1]).json()["jobs"][0]["id"]
        (next_job,) = wait_for_jobs(client, [second], timeout=120)
    assert job["status"] == "failed", job
    assert "GenerationTimedOut: generating 1 item(s) did not finish within its time limit" in job["error"]
    assert job["record_id"] is None
    assert next_job["status"] == "failed" and "time limit" in next_job["error"]  # the worker went on
    assert worker.process.poll() is None
    assert worker.output().count("loading model") == 2  # the abandoned runtime was not reused
