"""/metrics after real jobs: a real worker process, the tiny model, the API through TestClient."""

from __future__ import annotations

import json
import time

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import API_HEADERS, wait_for_jobs

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: TestClient) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def matching(samples: Samples, name: str, **labels: str) -> dict[frozenset[tuple[str, str]], float]:
    wanted = set(labels.items())
    return {key: v for (n, key), v in samples.items() if n == name and wanted <= set(key)}


def test_metrics_and_json_job_logs_after_real_jobs(service_env, start_worker, seed_items) -> None:  # type: ignore[no-untyped-def]
    from app.main import create_app

    items = seed_items[:2]
    with TestClient(create_app(), headers=API_HEADERS) as client:
        before = scrape(client)
        # JSON logs on in the worker too: checked at the end, without starting a second worker.
        worker = start_worker({**service_env, "ENHANCER_LOG_FORMAT": "json"})

        accepted = client.post("/v1/enhance", json={"items": items})
        assert accepted.status_code == 202, accepted.text
        job_ids = [job["id"] for job in accepted.json()["jobs"]]
        jobs = wait_for_jobs(client, job_ids, timeout=300)  # the 2-core CI machine may be busy
        assert client.get("/v1/jobs/no-such-job").status_code == 404
        assert client.get("/no/such/route").status_code == 404

        # The worker's numbers arrive with its next heartbeat (every 0.5 s in tests).
        deadline = time.monotonic() + 20
        while True:
            after = scrape(client)
            items_done = sum(matching(after, "enhancer_worker_generated_items_total").values())
            # Jobs count once stored, after generation: a heartbeat may fall between the two.
            jobs_done = sum(matching(after, "enhancer_worker_jobs_succeeded_total").values())
            if (items_done >= len(items) and jobs_done >= len(items)) or time.monotonic() > deadline:
                break
            time.sleep(0.3)

    # HTTP: counted by route template, method and status; latency observed for the same requests.
    enhance = {"route": "/v1/enhance", "method": "POST", "status": "202"}
    assert (
        value(after, "enhancer_http_requests_total", **enhance)
        == value(before, "enhancer_http_requests_total", **enhance) + 1
    )
    assert value(after, "enhancer_http_request_duration_seconds_count", **enhance) >= 1
    assert value(after, "enhancer_http_request_duration_seconds_sum", **enhance) > 0
    polls = value(
        after, "enhancer_http_requests_total", route="/v1/jobs/{job_id}", method="GET", status="200"
    )
    assert polls >= len(job_ids)
    assert (
        value(after, "enhancer_http_requests_total", route="/v1/jobs/{job_id}", method="GET", status="404")
        >= 1
    )
    assert value(after, "enhancer_http_requests_total", route="<unmatched>", method="GET", status="404") >= 1
    routes = {dict(key)["route"] for key in matching(after, "enhancer_http_requests_total")}
    assert not any(job_id in route for route in routes for job_id in job_ids), routes

    # Jobs by state match what the API says; nothing is left waiting.
    states = [job["status"] for job in jobs]
    for state in ("succeeded", "failed"):
        assert value(after, "enhancer_jobs", state=state) == states.count(state)
    assert value(after, "enhancer_jobs", state="queued") == 0
    assert value(after, "enhancer_queue_depth") == 0
    assert value(after, "enhancer_workers_live") == 1
    assert value(after, "enhancer_metrics_database_up") == 1

    # Generation numbers came from the worker through its heartbeat.
    [worker_labels] = matching(after, "enhancer_worker_generated_tokens_total")
    worker_name = dict(worker_labels)["worker"]
    assert value(after, "enhancer_worker_generated_items_total", worker=worker_name) == len(items)
    assert value(after, "enhancer_worker_generated_tokens_total", worker=worker_name) > 0
    assert value(after, "enhancer_worker_generation_seconds_total", worker=worker_name) > 0
    assert value(after, "enhancer_generation_tokens_per_second", worker=worker_name) > 0
    assert value(after, "enhancer_generation_items_per_second", worker=worker_name) > 0
    assert value(after, "enhancer_worker_jobs_succeeded_total", worker=worker_name) == states.count(
        "succeeded"
    )
    [(model_labels, load_seconds)] = matching(
        after, "enhancer_model_load_seconds", worker=worker_name
    ).items()
    model = dict(model_labels)
    assert model["model_version"] == f"env:{service_env['ENHANCER_MODEL']}"
    assert model["backend"] == "torch"
    assert load_seconds > 0
    assert value(after, "enhancer_worker_model_info", **model) == 1

    # One JSON line per job state change (running, then succeeded or failed), from the Celery worker.
    worker.stop()
    log_lines = worker.log_path.read_text(errors="replace").splitlines()
    for job in jobs:
        # json.loads raises on a text line: the format did not reach that handler.
        entries = [json.loads(line) for line in log_lines if job["id"] in line]
        job_lines = [e for e in entries if e["logger"] == "worker.jobs"]  # Celery's own lines mention it too
        assert len(job_lines) == 2, entries
        assert "running" in job_lines[0]["message"]
        assert job["status"] in job_lines[1]["message"]
        assert {"ts", "level", "process"} <= set(job_lines[1])


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_cli_logging_format(
    fmt: str, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    import logging

    from app.core.logging import configure_logging

    monkeypatch.setenv("ENHANCER_LOG_FORMAT", fmt)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging()
        logging.getLogger("worker.jobs").info("job %s succeeded", "abc123", extra={"job_id": "abc123"})
    finally:
        root.handlers, root.level = saved
    line = capfd.readouterr().err.strip().splitlines()[-1]
    if fmt == "json":
        entry = json.loads(line)
        assert entry["message"] == "job abc123 succeeded"
        assert entry["job_id"] == "abc123"
        assert entry["level"] == "INFO" and entry["logger"] == "worker.jobs"
    else:
        assert line.endswith("INFO worker.jobs: job abc123 succeeded")
        with pytest.raises(json.JSONDecodeError):
            json.loads(line)


def test_bad_log_format_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from app.core.logging import configure_logging

    monkeypatch.setenv("ENHANCER_LOG_FORMAT", "yaml")
    with pytest.raises(ValueError, match="ENHANCER_LOG_FORMAT must be 'text' or 'json'"):
        configure_logging()
