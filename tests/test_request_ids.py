"""X-Request-ID (accepted or generated, returned, on every log line of the request and of its jobs) and
the per-key rate limit, through the real app, a real uvicorn (`enhancer serve`) and a real worker."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from app.api.rate_limit import RateLimiter
from app.main import create_app
from tests.conftest import API_HEADERS, REPO_ROOT, TEST_API_KEY, wait_for_jobs
from tests.reliability_helpers import free_port

GENERATED = re.compile(r"[0-9a-f]{32}")


def _item(n: int, **changes: object) -> dict:
    return {
        "source": "TLDR AI",
        "subject": "OpenAI and Broadcom announce a chip deal",
        "from": "dan@tldrnewsletter.com",
        "date": "2025-10-16T08:00:00Z",
        "message_id": f"<req{n}@x>",
        "content": "OpenAI will design custom AI chips with Broadcom, shipping in 2026.",
        **changes,
    }


def _asgi_get(app, path: str, headers: list[tuple[bytes, bytes]]) -> tuple[int, dict[bytes, bytes]]:  # type: ignore[no-untyped-def]
    """One GET straight through the ASGI app, with header bytes no HTTP client would send."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), *headers],
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
    }
    started: dict = {}

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            started.update(message)

    asyncio.run(app(scope, receive, send))
    return started["status"], dict(started["headers"])


# Request ids on responses ---------------------------------------------------------------------


def test_an_incoming_id_is_echoed_and_a_bad_one_is_replaced(client: TestClient) -> None:
    for good in ("abc-1", "trace.01:span_2-3", "A" * 128, "x"):
        answer = client.get("/v1/records", headers={**API_HEADERS, "X-Request-ID": good})
        assert answer.status_code == 200 and answer.headers["x-request-id"] == good
    # Bad ids go into logs, so they are replaced, not trusted: sent as raw header bytes (an HTTP client
    # refuses some of them, a server behind a proxy might not).
    bad_ids = [
        b"two\nlines",
        b"cr\rlf",
        b"a" * 200,
        b"a" * 129,
        "caf\u00e9".encode(),
        "\u202eevil".encode(),
        b"",
        b"with space",
        b"semi;colon",
        b'quote"d',
        b"tab\there",
        b"\x00nul",
    ]
    seen = set()
    for bad in bad_ids:
        status, headers = _asgi_get(client.app, "/healthz", [(b"x-request-id", bad)])
        assert status == 200
        returned = headers[b"x-request-id"].decode("ascii")
        assert returned != bad.decode("latin-1") and GENERATED.fullmatch(returned), (bad, returned)
        seen.add(returned)
    assert len(seen) == len(bad_ids)  # a fresh one each time
    # The first of two headers counts; a route never sends two ids back.
    status, headers = _asgi_get(
        client.app, "/healthz", [(b"x-request-id", b"one"), (b"x-request-id", b"two")]
    )
    assert headers[b"x-request-id"] == b"one"


def test_a_generated_id_is_on_every_response(app_env) -> None:  # type: ignore[no-untyped-def]
    app_env(ENHANCER_MAX_BODY_BYTES="2048")
    app = create_app()

    @app.get("/boom-for-test")
    def boom() -> None:
        raise RuntimeError("boom")

    answers = {}
    with TestClient(app, raise_server_exceptions=False) as client:
        answers["200 healthz"] = client.get("/healthz")
        answers["200 metrics"] = client.get("/metrics")
        answers["202"] = client.post("/v1/enhance", json=_item(1), headers=API_HEADERS)
        answers["401"] = client.get("/v1/records")
        answers["403"] = client.get("/v1/records", headers={"X-API-Key": "wrong"})
        answers["404 route"] = client.get("/no/such/route")
        answers["404 job"] = client.get("/v1/jobs/nope", headers=API_HEADERS)
        answers["413"] = client.post("/v1/enhance", json=_item(2, content="x" * 3000), headers=API_HEADERS)
        answers["422"] = client.post("/v1/enhance", json={"nope": 1}, headers=API_HEADERS)
        answers["405"] = client.delete("/healthz")
        answers["500"] = client.get("/boom-for-test")
        answers["303 review"] = client.get("/review", headers={"Accept": "text/html"}, follow_redirects=False)
    statuses = {name: answer.status_code for name, answer in answers.items()}
    assert statuses == {
        "200 healthz": 200,
        "200 metrics": 200,
        "202": 202,
        "401": 401,
        "403": 403,
        "404 route": 404,
        "404 job": 404,
        "413": 413,
        "422": 422,
        "405": 405,
        "500": 500,
        "303 review": 303,
    }
    ids = {name: answer.headers.get("x-request-id", "") for name, answer in answers.items()}
    assert all(GENERATED.fullmatch(value) for value in ids.values()), ids
    assert len(set(ids.values())) == len(ids)
    # Other middleware's headers are still there (security headers, the 413's own answer).
    assert answers["413"].headers["x-content-type-options"] == "nosniff"
    assert "2048 bytes" in answers["413"].json()["message"]


# Request ids in logs -----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_the_log_lines_of_a_request_carry_its_id(
    fmt: str, client: TestClient, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    from app.core.logging import configure_logging

    app = client.app
    said = logging.getLogger("app.test_request_ids")

    @app.get("/v1/log-for-test")  # type: ignore[attr-defined]
    def sync_route() -> dict:  # in the thread pool: the context travels with the call
        said.info("sync line")
        return {}

    @app.get("/v1/log-async-for-test")  # type: ignore[attr-defined]
    async def async_route() -> dict:
        said.warning("async line")
        raise RuntimeError("and then it broke")

    monkeypatch.setenv("ENHANCER_LOG_FORMAT", fmt)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    capfd.readouterr()
    try:
        configure_logging()
        said.info("outside any request")
        assert client.get("/v1/log-for-test", headers={"X-Request-ID": "req-sync-1"}).status_code == 200
        broken = client.get("/v1/log-async-for-test", headers={"X-Request-ID": "req-async-2"})
        assert broken.status_code == 500 and broken.headers["x-request-id"] == "req-async-2"
        said.info("outside again")
    finally:
        root.handlers, root.level = saved
    lines = capfd.readouterr().err.strip().splitlines()
    if fmt == "json":
        entries = [json.loads(line) for line in lines if line.startswith("{")]
        by_message = {entry["message"]: entry for entry in entries}
        assert by_message["sync line"]["request_id"] == "req-sync-1"
        assert by_message["async line"]["request_id"] == "req-async-2"
        assert by_message["unhandled error"]["request_id"] == "req-async-2"  # app.main's 500 handler
        assert "RuntimeError: and then it broke" in by_message["unhandled error"]["exc_info"]
        assert "request_id" not in by_message["outside any request"]
        assert "request_id" not in by_message["outside again"]
    else:
        text = "\n".join(lines)
        assert re.search(r"INFO app\.test_request_ids: sync line \[req req-sync-1\]$", text, re.M), text
        assert re.search(r"WARNING app\.test_request_ids: async line \[req req-async-2\]$", text, re.M)
        # The id ends the line of the message, ahead of the traceback.
        assert re.search(r"ERROR app\.main: unhandled error \[req req-async-2\]\nTraceback", text), text
        assert re.search(r"app\.test_request_ids: outside any request$", text, re.M)
        assert re.search(r"app\.test_request_ids: outside again$", text, re.M)


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_the_access_line_of_a_real_uvicorn_carries_the_request_id(
    fmt: str, service_env: dict[str, str], tmp_path: Path
) -> None:
    """`enhancer serve` (uvicorn with app.core.logging's config): uvicorn writes the access line from
    inside the app's first `send`, while the request's context is current."""
    port = free_port()
    log_path = tmp_path / "serve.log"
    env = {**os.environ, **service_env, "ENHANCER_LOG_FORMAT": fmt}
    command = [sys.executable, "-m", "app.cli", "serve", "--no-worker", "--port", str(port)]
    with log_path.open("wb") as log:
        server = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                httpx.get(f"{base}/healthz", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and server.poll() is None, log_path.read_text()
                time.sleep(0.2)
        with httpx.Client(base_url=base, headers=API_HEADERS) as http:
            ok = http.get("/v1/records?limit=1", headers={"X-Request-ID": "access-ok-1"})
            missing = http.get("/v1/jobs/nope", headers={"X-Request-ID": "access-404-2"})
            generated = http.get("/v1/records?limit=2")
        assert (ok.status_code, missing.status_code, generated.status_code) == (200, 404, 200)
        assert ok.headers["x-request-id"] == "access-ok-1"
        generated_id = generated.headers["x-request-id"]
        assert GENERATED.fullmatch(generated_id)
    finally:
        server.terminate()
        server.wait(timeout=30)
    output = log_path.read_text(errors="replace")
    expected = {
        "GET /v1/records?limit=1 HTTP/1.1": "access-ok-1",
        "GET /v1/jobs/nope HTTP/1.1": "access-404-2",
        "GET /v1/records?limit=2 HTTP/1.1": generated_id,
    }
    if fmt == "json":
        entries = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
        access = [e for e in entries if e["logger"] == "uvicorn.access"]
        for request_line, request_id in expected.items():
            (entry,) = [e for e in access if request_line in e["message"]]
            assert entry["request_id"] == request_id, entry
        startup = [e for e in entries if "Application startup complete" in e["message"]]
        assert startup and "request_id" not in startup[0]
        assert all("request_id" in e for e in access)  # the start-up probes' too (generated ids)
    else:
        for request_line, request_id in expected.items():
            (line,) = [line for line in output.splitlines() if request_line in line]
            assert line.endswith(f" [req {request_id}]"), line
        (startup,) = [line for line in output.splitlines() if "Application startup complete" in line]
        assert "[req " not in startup


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_jobs_worker_lines_carry_the_request_id_that_created_it(
    fmt: str, service_env: dict[str, str], start_worker
) -> None:  # type: ignore[no-untyped-def]
    worker = start_worker({**service_env, "ENHANCER_LOG_FORMAT": fmt})
    with TestClient(create_app(), headers=API_HEADERS) as client:
        accepted = client.post("/v1/enhance", json=_item(1), headers={"X-Request-ID": "job-trace-7"})
        assert accepted.status_code == 202 and accepted.headers["x-request-id"] == "job-trace-7"
        job_id = accepted.json()["jobs"][0]["id"]
        (job,) = wait_for_jobs(client, [job_id], timeout=300)
        assert job["request_id"] == "job-trace-7"
    output = worker.output()
    if fmt == "json":
        entries = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
        job_entries = [e for e in entries if f"job {job_id} " in e["message"]]
        messages = [e["message"] for e in job_entries]
        assert any("running" in m for m in messages) and any(job["status"] in m for m in messages), output
        assert all(e["request_id"] == "job-trace-7" for e in job_entries), job_entries
        assert all("[req " not in m for m in messages)  # a field, not in the message
        others = [e for e in entries if "reconciler" in e["message"] or "ready" in e["message"]]
        assert all("request_id" not in e for e in others)
        return
    job_lines = [line for line in output.splitlines() if f"job {job_id} " in line]
    assert any("running" in line for line in job_lines), output
    assert any(job["status"] in line for line in job_lines), output
    assert all(line.endswith(" [req job-trace-7]") for line in job_lines), job_lines
    # The worker's own lines (no request behind them) stay as they were.
    others = [line for line in output.splitlines() if "ready." in line or "reconciler" in line]
    assert others and all("[req " not in line for line in others)


def test_jobs_keep_the_request_id_that_created_them(client: TestClient) -> None:
    from tests.mail_factory import tldr_email

    def job_request_id(job_id: str) -> str | None:
        return client.get(f"/v1/jobs/{job_id}", headers=API_HEADERS).json()["request_id"]  # type: ignore[no-any-return]

    def post(path: str, body: dict, request_id: str, **headers: str) -> list[str]:
        answer = client.post(path, json=body, headers={**API_HEADERS, "X-Request-ID": request_id, **headers})
        assert answer.status_code == 202, answer.text
        return [job["id"] for job in answer.json()["jobs"]]

    (single,) = post("/v1/enhance", _item(1), "req-single")
    batch = post("/v1/enhance", {"items": [_item(2), _item(3)]}, "req-batch")
    (alias,) = post("/enhance", _item(4), "req-alias")
    keyed = post("/v1/enhance", {"items": [_item(5)]}, "req-keyed", **{"Idempotency-Key": "k-1"})
    assert [job_request_id(j) for j in [single, *batch, alias, *keyed]] == [
        "req-single", "req-batch", "req-batch", "req-alias", "req-keyed",
    ]  # fmt: skip
    # A resubmission maps to the existing job, which keeps the id of the request that created it.
    assert post("/v1/enhance", _item(1), "req-resent") == [single]
    assert post("/v1/enhance", {"items": [_item(2), _item(6)]}, "req-mixed")[0] == batch[0]
    assert post("/v1/enhance", {"items": [_item(5)]}, "req-replay", **{"Idempotency-Key": "k-1"}) == keyed
    assert job_request_id(single) == "req-single" and job_request_id(batch[0]) == "req-batch"
    assert job_request_id(keyed[0]) == "req-keyed"
    # A raw e-mail's jobs; posting it again changes none of them.
    email = {"Content-Type": "message/rfc822", "X-Request-ID": "req-email", **API_HEADERS}
    first = client.post("/v1/emails", content=tldr_email(), headers=email)
    assert first.status_code == 202, first.text
    email_jobs = [job["id"] for job in first.json()["jobs"]]
    assert email_jobs and {job_request_id(j) for j in email_jobs} == {"req-email"}
    again = client.post("/v1/emails", content=tldr_email(), headers={**email, "X-Request-ID": "req-email-2"})
    assert again.headers["idempotent-replayed"] == "true"
    assert {job_request_id(j) for j in email_jobs} == {"req-email"}
    # Without an incoming id, the job stores the generated one the response returned.
    answer = client.post("/v1/enhance", json=_item(7), headers=API_HEADERS)
    assert job_request_id(answer.json()["jobs"][0]["id"]) == answer.headers["x-request-id"]


# The per-key rate limit ------------------------------------------------------------------------


def test_the_token_bucket_refills_at_its_rate() -> None:
    limiter = RateLimiter(per_second=2, burst=3)
    assert [limiter.take("k", now=100.0) for _ in range(3)] == [0, 0, 0]
    assert limiter.take("k", now=100.0) == 1  # one token back in 0.5 s: whole seconds, at least 1
    assert limiter.take("other", now=100.0) == 0  # a bucket per key
    assert limiter.take("k", now=100.5) == 0  # refilled
    assert limiter.take("k", now=100.5) == 1
    assert [limiter.take("k", now=200.0) for _ in range(4)] == [0, 0, 0, 1]  # never past the burst
    slow = RateLimiter(per_second=0.1, burst=1)
    assert slow.take("k", now=0.0) == 0 and slow.take("k", now=0.0) == 10
    assert slow.take("k", now=5.0) == 5
    assert RateLimiter(per_second=0, burst=3).take("k") == 0
    assert RateLimiter(per_second=5, burst=0).take("k") == 0
    assert set(limiter._buckets) == {hashlib.sha256(k.encode()).hexdigest() for k in ("k", "other")}


def test_over_the_rate_limit_is_429_with_retry_after(app_env) -> None:  # type: ignore[no-untyped-def]
    app_env(
        ENHANCER_API_KEYS=f"{TEST_API_KEY},second-key",
        # A token every 2 s: slow enough that a busy machine's requests (each POST waits for an
        # fsync) do not earn a token back before the 4th; a refill is checked below.
        ENHANCER_RATE_LIMIT_PER_SECOND="0.5",
        ENHANCER_RATE_LIMIT_BURST="3",
    )
    other = {"X-API-Key": "second-key"}
    with TestClient(create_app()) as client:
        # Requests without a valid key are not counted: they get their 401 / 403 first.
        for _ in range(5):
            assert client.get("/v1/records").status_code == 401
            assert client.get("/v1/records", headers={"X-API-Key": "wrong"}).status_code == 403
        answers = [
            client.get("/v1/records", headers=API_HEADERS),
            client.post("/v1/enhance", json=_item(1), headers=API_HEADERS),
            client.post("/enhance", json=_item(2), headers=API_HEADERS),  # the alias shares the bucket
            client.get("/v1/records", headers={"Authorization": f"Bearer {TEST_API_KEY}"}),
        ]
        assert [a.status_code for a in answers] == [200, 202, 202, 429]
        limited = answers[3]
        assert int(limited.headers["retry-after"]) >= 1
        body = limited.json()
        assert set(body) == {"detail", "message"} and body["detail"] == body["message"]
        assert (
            "rate limit" in body["message"]
            and f"retry in {limited.headers['retry-after']} s" in body["message"]
        )
        assert GENERATED.fullmatch(limited.headers["x-request-id"])
        assert client.post("/v1/enhance", json=_item(3), headers=API_HEADERS).status_code == 429
        # Another key has its own bucket; the open routes and the review pages are not limited.
        assert [client.get("/v1/records", headers=other).status_code for _ in range(3)] == [200] * 3
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code in (200, 503)
        assert client.get("/metrics").status_code == 200
        assert client.get("/review", headers=API_HEADERS).status_code == 200
        # The buckets are named by the keys' sha256, never the keys.
        names = set(client.app.state.rate_limiter._buckets)  # type: ignore[attr-defined]
        assert names == {hashlib.sha256(k.encode()).hexdigest() for k in (TEST_API_KEY, "second-key")}
        # A wait refills: one token in 2 s.
        time.sleep(2.2)
        assert client.get("/v1/records", headers=API_HEADERS).status_code == 200
        assert client.get("/v1/records", headers=API_HEADERS).status_code == 429


@pytest.mark.parametrize("setting", ["ENHANCER_RATE_LIMIT_PER_SECOND", "ENHANCER_RATE_LIMIT_BURST"])
def test_a_zero_setting_turns_the_rate_limit_off(app_env, setting: str) -> None:  # type: ignore[no-untyped-def]
    app_env(**{"ENHANCER_RATE_LIMIT_PER_SECOND": "1", "ENHANCER_RATE_LIMIT_BURST": "1", setting: "0"})
    with TestClient(create_app(), headers=API_HEADERS) as client:
        assert {client.get("/v1/records").status_code for _ in range(30)} == {200}


def test_the_defaults_and_the_spec_document_the_429(service_env) -> None:  # type: ignore[no-untyped-def]
    from app.core.config import get_settings

    settings = get_settings()
    assert (settings.rate_limit_per_second, settings.rate_limit_burst) == (50, 200)
    spec = create_app().openapi()
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            # The feed's Atom URL takes a feed token, not an API key: not limited.
            keyed = (path.startswith("/v1") and path != "/v1/feeds/stories.atom") or path == "/enhance"
            assert ("429" in operation["responses"]) == keyed, (method, path)
