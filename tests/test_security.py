"""API keys, Idempotency-Key, and request limits, through the real app and database (no worker)."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from tests.conftest import API_HEADERS, REPO_ROOT, TEST_API_KEY, apply_env
from tests.reliability_helpers import ApiServer, free_port

ITEM = {
    "source": "TLDR AI",
    "subject": "OpenAI and Broadcom announce a chip deal",
    "from": "dan@tldrnewsletter.com",
    "date": "2025-10-16T08:00:00Z",
    "message_id": "<abc@tldr>",
    "content": "OpenAI will design custom AI chips with Broadcom.",
}


def _item(n: int, **changes: object) -> dict:
    return {**ITEM, "message_id": f"<m{n}@x>", **changes}


# API keys -----------------------------------------------------------------------------------


def _csrf_token(html: str) -> str:
    tokens = set(re.findall(r'<input type="hidden" name="csrf_token" value="([^"]*)">', html))
    assert len(tokens) == 1 and "" not in tokens, tokens
    return tokens.pop()


# The Atom feed: RSS readers cannot send headers, so its per-feed token (tests/test_feeds.py) is the key.
KEYLESS_V1 = {"/v1/feeds/stories.atom"}


def _v1_routes() -> list[tuple[str, str]]:
    """Every /v1 operation in the spec (so routers added later are covered too), with dummy ids."""
    routes = []
    for path, operations in create_app().openapi()["paths"].items():
        if path.startswith("/v1") and path not in KEYLESS_V1:
            routes += [(method.upper(), re.sub(r"\{[^}]+\}", "x", path)) for method in operations]
    return routes


def test_every_v1_route_needs_a_key(client: TestClient) -> None:
    routes = _v1_routes()
    assert len(routes) >= 5 and ("POST", "/v1/enhance") in routes
    for method, path in routes:
        missing = client.request(method, path)
        assert missing.status_code == 401, (method, path, missing.text)
        assert missing.headers["www-authenticate"].startswith("Bearer")
        assert "X-API-Key" in missing.json()["message"]
        wrong = client.request(method, path, headers={"X-API-Key": TEST_API_KEY + "x"})
        assert wrong.status_code == 403, (method, path)
        wrong_bearer = client.request(method, path, headers={"Authorization": "Bearer nope"})
        assert wrong_bearer.status_code == 403, (method, path)
        for headers in (API_HEADERS, {"Authorization": f"Bearer {TEST_API_KEY}"}):
            assert client.request(method, path, headers=headers).status_code not in (401, 403), (method, path)


def test_health_and_metrics_stay_open(client: TestClient) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code in (200, 503)
    assert client.get("/metrics").status_code == 200


def test_any_of_several_configured_keys_works(app_env) -> None:  # type: ignore[no-untyped-def]
    app_env(ENHANCER_API_KEYS=" first-key , second-key ")
    with TestClient(create_app()) as client:
        for key in ("first-key", "second-key"):
            assert client.get("/v1/records", headers={"X-API-Key": key}).status_code == 200
        assert client.get("/v1/records", headers={"X-API-Key": "first"}).status_code == 403
        assert client.get("/v1/records", headers={"X-API-Key": ""}).status_code == 401


def test_review_sign_in_exchanges_the_key_for_a_session_that_sign_out_ends(client: TestClient) -> None:
    html = {"Accept": "text/html"}
    assert client.get("/review").status_code == 401  # a script without the key
    to_login = client.get("/review", headers=html, follow_redirects=False)
    assert to_login.status_code == 303 and to_login.headers["location"] == "/review/login"
    # An old link with the key in the URL is not taken: the key goes in the sign-in form only.
    old_link = client.get("/review", params={"api_key": TEST_API_KEY}, follow_redirects=False)
    assert old_link.status_code == 303 and old_link.headers["location"] == "/review/login"
    assert "set-cookie" not in old_link.headers

    here = {"Origin": "http://testserver"}
    assert client.post("/review/login", data={"api_key": "wrong"}, headers=here).status_code == 401
    signed_in = client.post(
        "/review/login", data={"api_key": TEST_API_KEY}, headers=here, follow_redirects=False
    )
    assert signed_in.status_code == 303 and signed_in.headers["location"] == "/review"
    cookie = signed_in.headers["set-cookie"]
    assert all(part in cookie.lower() for part in ("httponly", "samesite=strict", "path=/review"))
    token = client.cookies["enhancer_review_session"]
    assert TEST_API_KEY not in cookie and TEST_API_KEY not in token  # the cookie never holds the key
    page = client.get("/review", headers=html)
    assert page.status_code == 200 and "Sign out" in page.text

    other = TestClient(client.app, cookies={"enhancer_review_session": "forged-" + token[7:]})
    assert other.get("/review").status_code == 401  # a guessed token is no session
    assert client.post("/review/logout", headers=here).status_code == 403  # no CSRF token
    csrf = _csrf_token(page.text)
    signed_out = client.post(
        "/review/logout", data={"csrf_token": csrf}, headers=here, follow_redirects=False
    )
    assert signed_out.status_code == 303
    client.cookies.set("enhancer_review_session", token, path="/review")  # replaying the old cookie
    assert client.get("/review").status_code == 401  # the session ended on the server
    assert client.get("/review", headers=API_HEADERS).status_code == 200  # scripts: the header


def test_a_sign_in_post_must_come_from_this_site(client: TestClient, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    def post(**headers: str):  # type: ignore[no-untyped-def]
        return client.post(
            "/review/login", data={"api_key": TEST_API_KEY}, headers=headers, follow_redirects=False
        )

    assert post(Origin="https://evil.example").status_code == 403
    assert post().status_code == 403  # neither Origin nor Referer
    assert post(Origin="null", Referer="http://testserver/review/login").status_code == 303
    proxied = {"Origin": "https://enhancer.lan", "X-Forwarded-Host": "enhancer.lan"}
    assert post(**proxied).status_code == 403  # the test client is no trusted proxy ...
    from app.core.config import get_settings

    monkeypatch.setenv("ENHANCER_TRUSTED_PROXIES", "127.0.0.1")
    get_settings.cache_clear()
    assert post(**proxied).status_code == 303  # ... until it is configured as one


def test_first_start_creates_a_private_key_file(app_env, service_env) -> None:  # type: ignore[no-untyped-def]
    app_env(ENHANCER_API_KEYS=None)
    key_file = os.path.join(service_env["ENHANCER_DATA_DIR"], "api_key")
    with TestClient(create_app()) as client:
        key = Path(key_file).read_text().strip()
        assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
        assert client.get("/v1/records", headers={"X-API-Key": key}).status_code == 200
        assert client.get("/v1/records", headers=API_HEADERS).status_code == 403
    with TestClient(create_app()):  # a restart keeps the key
        assert Path(key_file).read_text().strip() == key


def test_enhancer_serve_prints_how_to_use_its_new_key(service_env, tmp_path) -> None:
    env = {k: v for k, v in {**os.environ, **service_env}.items() if k != "ENHANCER_API_KEYS"}
    port = free_port()
    command = [sys.executable, "-m", "app.cli", "serve", "--no-worker", "--port", str(port)]
    server = subprocess.Popen(
        command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        lines = []
        for line in iter(server.stdout.readline, b""):  # type: ignore[union-attr]
            lines.append(line.decode())
            if "curl" in line.decode():
                break
        printed = "".join(lines)
        key_file = Path(service_env["ENHANCER_DATA_DIR"]) / "api_key"
        assert f"created the API key in {key_file}" in printed, printed
        key = key_file.read_text().strip()
        assert key not in printed  # the output ends up in logs: it says where the key is, not the key
        assert f'curl -H "X-API-Key: $(cat {key_file})" http://127.0.0.1:{port}/v1/records' in printed
        deadline = time.monotonic() + 60
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/v1/records", headers={"X-API-Key": key})
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and server.poll() is None
                time.sleep(0.2)
        # What could put the key in the access log: an old link with it in the URL, a sign-in.
        base = f"http://127.0.0.1:{port}"
        httpx.get(f"{base}/review", params={"api_key": key}, headers={"Accept": "text/html"})
        signed_in = httpx.post(f"{base}/review/login", data={"api_key": key}, headers={"Origin": base})
        assert signed_in.status_code == 303
        assert response.status_code == 200
        assert httpx.get(f"http://127.0.0.1:{port}/v1/records").status_code == 401
    finally:
        server.terminate()
        server.wait(timeout=30)
    log = printed + server.stdout.read().decode(errors="replace")  # type: ignore[union-attr]
    assert "GET /review?api_key=[redacted]" in log  # the access log line is there, the key is not
    assert "POST /review/login" in log
    assert key not in log


# Idempotency --------------------------------------------------------------------------------


@pytest.fixture
def db_client(service_env, database_url, monkeypatch) -> Iterator[TestClient]:
    apply_env(monkeypatch, service_env, DATABASE_URL=database_url)
    with TestClient(create_app(), headers=API_HEADERS, raise_server_exceptions=False) as test_client:
        yield test_client


def test_idempotency_key_maps_a_retry_to_the_same_jobs(db_client: TestClient) -> None:
    batch = {"items": [_item(1), _item(2)]}
    first = db_client.post("/v1/enhance", json=batch, headers={"Idempotency-Key": "batch-1"})
    assert first.status_code == 202 and "idempotent-replayed" not in first.headers
    # The same JSON value serialized differently is the same payload.
    reordered = {"items": [dict(reversed(list(item.items()))) for item in batch["items"]]}
    again = db_client.post("/v1/enhance", json=reordered, headers={"Idempotency-Key": "batch-1"})
    assert again.status_code == 202 and again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    single = db_client.post("/v1/enhance", json=_item(3), headers={"Idempotency-Key": "one"})
    replay = db_client.post("/v1/enhance", json=_item(3), headers={"Idempotency-Key": "one"})
    assert replay.headers["location"] == single.headers["location"]


def test_idempotency_key_with_another_payload_is_422(db_client: TestClient) -> None:
    assert db_client.post("/v1/enhance", json=_item(1), headers={"Idempotency-Key": "k"}).status_code == 202
    other = db_client.post("/v1/enhance", json=_item(2), headers={"Idempotency-Key": "k"})
    assert other.status_code == 422
    assert "Idempotency-Key 'k' was already used with a different payload" in other.json()["message"]
    too_long = db_client.post("/v1/enhance", json=_item(2), headers={"Idempotency-Key": "k" * 201})
    assert too_long.status_code == 422 and "Idempotency-Key" in too_long.json()["message"]


def test_message_id_and_content_map_resends_without_a_key(db_client: TestClient) -> None:
    first = db_client.post("/v1/enhance", json=_item(1)).json()
    assert db_client.post("/v1/enhance", json=_item(1)).json() == first
    changed = db_client.post("/v1/enhance", json=_item(1, content="A corrected text.")).json()
    assert changed != first  # same e-mail, new content: a new job


def test_concurrent_first_uses_of_one_key_make_one_job(
    service_env, database_url, monkeypatch, tmp_path
) -> None:
    apply_env(monkeypatch, service_env, DATABASE_URL=database_url)
    api = ApiServer(service_env, tmp_path / "api.log").start()
    answers: list[tuple[int, str]] = []

    def post() -> None:
        with api.client(timeout=30) as client:
            response = client.post("/v1/enhance", json=_item(7), headers={"Idempotency-Key": "race"})
            answers.append((response.status_code, response.text))

    threads = [threading.Thread(target=post) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    api.kill()
    assert {status for status, _ in answers} == {202}, answers
    assert len({text for _, text in answers}) == 1  # everyone got the same job
    from tests.reliability_helpers import read_ledger

    assert sum(read_ledger().statuses.values()) == 1


# Limits --------------------------------------------------------------------------------------


def test_body_over_the_limit_is_413_before_parsing(app_env) -> None:  # type: ignore[no-untyped-def]
    app_env(ENHANCER_MAX_BODY_BYTES="2048")
    with TestClient(create_app(), headers=API_HEADERS) as client:
        big = _item(1, content="x" * 3000)
        declared = client.post("/v1/enhance", json=big)
        assert declared.status_code == 413
        assert "2048 bytes" in declared.json()["message"]

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
            yield b'{"items": ['
            for _ in range(100):
                yield b'"' + b"y" * 100 + b'",'
            yield b'"z"]}'

        streamed = client.post("/v1/enhance", content=chunks(), headers={"content-type": "application/json"})
        assert streamed.status_code == 413
        assert client.post("/v1/enhance", json=_item(1)).status_code == 202


def test_streamed_body_is_cut_off_at_the_limit_by_a_real_server(service_env, monkeypatch, tmp_path) -> None:
    """Over a real socket: the 413 arrives while the client is still sending an endless chunked body."""
    import socket

    apply_env(monkeypatch, service_env, ENHANCER_MAX_BODY_BYTES="65536")
    api = ApiServer(service_env, tmp_path / "api.log").start()
    try:
        with socket.create_connection(("127.0.0.1", api.port), timeout=10) as conn:
            head = (
                f"POST /v1/enhance HTTP/1.1\r\nHost: x\r\nX-API-Key: {TEST_API_KEY}\r\n"
                "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            conn.sendall(head.encode())
            chunk = b"x" * 8192
            sent, reply = 0, b""
            conn.settimeout(0.05)
            while sent < 50 * 1024 * 1024 and not reply:
                try:
                    conn.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                    sent += len(chunk)
                    reply = conn.recv(4096)
                except TimeoutError:
                    continue
                except OSError:  # the server closed the connection after answering
                    break
            conn.settimeout(5)
            reply = reply or conn.recv(4096)
        assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
        assert sent < 1024 * 1024  # it did not read the whole (endless) body first
    finally:
        api.kill()


def test_item_limits_are_422_with_the_limit(app_env) -> None:  # type: ignore[no-untyped-def]
    app_env(ENHANCER_MAX_BATCH_ITEMS="3", ENHANCER_MAX_ITEM_CHARS="100")
    with TestClient(create_app(), headers=API_HEADERS) as client:
        batch = client.post("/v1/enhance", json={"items": [_item(n) for n in range(4)]})
        assert batch.status_code == 422
        assert batch.json()["message"] == "items: at most 3 items per request, got 4"
        long_item = client.post("/v1/enhance", json={"items": [_item(1), _item(2, content="c" * 101)]})
        assert long_item.status_code == 422
        assert (
            long_item.json()["message"]
            == "items.1.content: at most 100 characters of content per item, got 101"
        )
        single = client.post("/v1/enhance", json=_item(1, content="c" * 101))
        assert single.json()["message"] == "content: at most 100 characters of content per item, got 101"
        assert client.post("/v1/enhance", json={"items": [_item(n) for n in range(3)]}).status_code == 202


def test_default_limits_come_from_the_contract(client: TestClient) -> None:
    too_many = client.post("/v1/enhance", json={"items": [_item(n) for n in range(101)]}, headers=API_HEADERS)
    assert "at most 100 items" in too_many.json()["message"]
    too_long = client.post("/v1/enhance", json=_item(1, content="c" * 100_001), headers=API_HEADERS)
    assert "at most 100000 characters" in too_long.json()["message"]


def test_full_queue_is_429_with_retry_after(app_env) -> None:  # type: ignore[no-untyped-def]
    app_env(ENHANCER_MAX_QUEUED_JOBS="3", ENHANCER_QUEUE_RETRY_AFTER="7")
    with TestClient(create_app(), headers=API_HEADERS) as client:
        assert client.post("/v1/enhance", json={"items": [_item(1), _item(2)]}).status_code == 202
        over = client.post("/v1/enhance", json={"items": [_item(3), _item(4)]})
        assert over.status_code == 429
        assert over.headers["retry-after"] == "7"
        assert "queue full: 2 jobs waiting, the limit is 3" in over.json()["message"]
        # Nothing of the refused batch was stored: a re-send of known items is still answered.
        assert client.post("/v1/enhance", json=_item(1)).status_code == 202
        assert client.post("/v1/enhance", json=_item(3)).status_code == 202  # fits: 3 of 3
        assert client.post("/v1/enhance", json=_item(4)).status_code == 429


def test_review_pages_forbid_scripts_and_framing_and_every_answer_is_nosniff(client: TestClient) -> None:
    page = client.get("/review/login")
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp and "script-src" not in csp
    assert page.headers["x-frame-options"] == "DENY"
    api = client.get("/v1/records", headers=API_HEADERS)
    assert (
        api.headers["x-content-type-options"] == "nosniff" and api.headers["referrer-policy"] == "same-origin"
    )
    assert "content-security-policy" not in api.headers


# CSRF ----------------------------------------------------------------------------------------


def _signed_in(app) -> tuple[TestClient, str]:  # type: ignore[no-untyped-def]
    """A browser-like client with a review session, and the CSRF token its pages carry."""
    browser = TestClient(app, headers={"Origin": "http://testserver"})
    assert browser.post("/review/login", data={"api_key": TEST_API_KEY}).status_code == 200
    page = browser.get("/review/topics", headers={"Accept": "text/html"})
    assert page.status_code == 200
    return browser, _csrf_token(page.text)


def _review_posts() -> list[str]:
    """Every state-changing route of the review routers (routes added later too), with dummy ids."""
    from app.web import knowledge, routes, signin

    paths = []
    for router in (routes.router, knowledge.router, signin.router):
        for route in router.routes:
            path = getattr(route, "path", "")
            if "POST" in getattr(route, "methods", ()) and path != "/review/login":
                paths.append(re.sub(r"\{[^}]+\}", "x", path))
    return paths


def _one_char_off(token: str) -> str:
    """The token with its last character changed (a fixed replacement equals it 1 time in 16)."""
    return token[:-1] + ("1" if token.endswith("0") else "0")


def test_every_review_form_post_needs_the_sessions_csrf_token(client: TestClient) -> None:
    posts = _review_posts()
    assert {"/review/records/x", "/review/records/x/split", "/review/stories/x/merge"} <= set(posts)
    assert {"/review/topics/x", "/review/logout"} <= set(posts)
    browser, csrf = _signed_in(client.app)
    _, other_csrf = _signed_in(client.app)
    assert other_csrf != csrf  # one token per session
    for path in posts:
        for data in ({}, {"csrf_token": ""}, {"csrf_token": _one_char_off(csrf)}, {"csrf_token": other_csrf}):
            refused = browser.post(path, data={**data, "action": "save"}, follow_redirects=False)
            assert refused.status_code == 403, (path, data, refused.text)
            assert "CSRF token is missing or wrong" in refused.json()["message"]
        # The right token passes the check (then: no such record, story or topic).
        passed = browser.post(path, data={"csrf_token": csrf, "action": "rename"}, follow_redirects=False)
        assert passed.status_code in (303, 404), (path, passed.text)
        if path == "/review/logout":
            browser, csrf = _signed_in(client.app)
        # The Origin check still comes first: the right token from another site is refused too.
        evil = browser.post(path, data={"csrf_token": csrf}, headers={"Origin": "https://evil.example"})
        assert evil.status_code == 403 and "cross-site" in evil.json()["message"]
    # Scripts that send the API key header need no token: no browser sends that header cross-site.
    scripted = TestClient(client.app, headers={**API_HEADERS, "Origin": "http://testserver"})
    assert scripted.post("/review/topics/x", data={"action": "rename"}).status_code == 404


def test_a_refused_csrf_post_saves_nothing(service_env) -> None:  # type: ignore[no-untyped-def]
    from tests.knowledge_helpers import add_record

    with TestClient(create_app()) as client:
        record_id = add_record(
            source="TLDR AI", headline="A headline", summary="The model's own summary of the item.",
            entities=["Broadcom"], key_topics=["Chips"], date="2025-06-10T08:00:00Z",
        )  # fmt: skip
        browser, csrf = _signed_in(client.app)
        page = browser.get(f"/review/records/{record_id}", headers={"Accept": "text/html"})
        assert _csrf_token(page.text) == csrf
        form = {
            "summary": "A corrected summary that is long enough.", "key_topics": "AI",
            "categories": "research", "sentiment": "neutral", "urgency_level": "low",
            "relevance_score": "5", "action": "save",
        }  # fmt: skip
        assert browser.post(f"/review/records/{record_id}", data=form).status_code == 403
        record = client.get(f"/v1/records/{record_id}", headers=API_HEADERS).json()
        assert record["reviewed"] is False
        saved = browser.post(f"/review/records/{record_id}", data={**form, "csrf_token": csrf})
        assert saved.status_code == 200 and saved.history[0].status_code == 303
        assert client.get(f"/v1/records/{record_id}", headers=API_HEADERS).json()["reviewed"] is True


# Exposure: /metrics, /docs, /redoc, /openapi.json, /readyz -----------------------------------

OPERATOR_PATHS = ("/metrics", "/docs", "/redoc", "/openapi.json")
LAN = ("203.0.113.5", 40123)


def _from(app, address: tuple[str, int], **headers: str) -> TestClient:  # type: ignore[no-untyped-def]
    return TestClient(app, client=address, headers=headers, raise_server_exceptions=False)


def test_docs_and_metrics_are_served_to_loopback_clients_only_by_default(client: TestClient) -> None:
    for address in (("127.0.0.1", 5000), ("::1", 5000), ("127.0.0.2", 5000)):
        local = _from(client.app, address)
        for path in OPERATOR_PATHS:
            assert local.get(path).status_code == 200, (address, path)
        assert "checks" in local.get("/readyz").json()
    for lan in (_from(client.app, LAN), _from(client.app, LAN, **{"X-Forwarded-For": "127.0.0.1"})):
        for path in OPERATOR_PATHS:
            refused = lan.get(path)
            assert refused.status_code == 403, path
            assert f"{path} is served to clients on this host only" in refused.json()["message"]
            assert "ENHANCER_DOCS_AND_METRICS" in refused.json()["message"]
        ready = lan.get("/readyz")
        assert ready.status_code == 503 and ready.json() == {"status": "not ready"}  # no reasons
        assert lan.get("/healthz").status_code == 200
        assert lan.get("/v1/records", headers=API_HEADERS).status_code == 200  # the API itself is open


def test_behind_a_trusted_proxy_the_forwarded_client_counts(app_env) -> None:  # type: ignore[no-untyped-def]
    app_env(ENHANCER_TRUSTED_PROXIES="127.0.0.1, 10.0.0.2")
    app = create_app()
    via_local_proxy = ("127.0.0.1", 5000)
    assert (
        _from(app, via_local_proxy, **{"X-Forwarded-For": "203.0.113.5"}).get("/metrics").status_code == 403
    )
    spoofed = _from(app, via_local_proxy, **{"X-Forwarded-For": "127.0.0.1, 203.0.113.5"})
    assert spoofed.get("/metrics").status_code == 403  # the nearest hop is what the proxy saw
    # A client on this host through the proxy on this host, or a request of that host without the header.
    for forwarded in ("::1", "127.0.0.1"):
        local = _from(app, via_local_proxy, **{"X-Forwarded-For": forwarded})
        assert local.get("/metrics").status_code == 200, forwarded
    assert _from(app, via_local_proxy).get("/metrics").status_code == 200
    chained = _from(app, via_local_proxy, **{"X-Forwarded-For": "10.0.0.2, 127.0.0.1"})
    assert chained.get("/metrics").status_code == 403  # every hop a proxy: the first, on another host
    # A proxy on another host: its loopback clients are not this host's.
    remote = _from(app, ("10.0.0.2", 5000), **{"X-Forwarded-For": "127.0.0.1"})
    assert remote.get("/metrics").status_code == 403
    ready = remote.get("/readyz").json()
    assert set(ready) == {"status"}


def test_docs_and_metrics_settings_key_and_open(app_env) -> None:  # type: ignore[no-untyped-def]
    app_env(ENHANCER_DOCS_AND_METRICS="key")
    lan = _from(create_app(), LAN)
    for path in OPERATOR_PATHS:
        missing = lan.get(path)
        assert missing.status_code == 401 and "needs an API key" in missing.json()["message"], path
        assert lan.get(path, headers={"X-API-Key": "wrong"}).status_code == 403
        assert lan.get(path, headers=API_HEADERS).status_code == 200
        assert lan.get(path, headers={"Authorization": f"Bearer {TEST_API_KEY}"}).status_code == 200
    assert set(lan.get("/readyz").json()) == {"status"}
    assert "checks" in lan.get("/readyz", headers=API_HEADERS).json()
    assert _from(lan.app, ("127.0.0.1", 1)).get("/metrics").status_code == 200  # loopback: as before

    app_env(ENHANCER_DOCS_AND_METRICS="open")
    lan = _from(create_app(), LAN)
    assert all(lan.get(path).status_code == 200 for path in OPERATOR_PATHS)
    assert "checks" in lan.get("/readyz").json()


def test_docs_pages_load_nothing_from_other_sites(client: TestClient) -> None:
    external = re.compile(r"(?:https?:)?//[\w.-]+", re.IGNORECASE)
    for path in ("/docs", "/redoc"):
        page = client.get(path)
        assert page.status_code == 200 and "newsletter-enhancer" in page.text
        assert not external.findall(page.text), (path, external.findall(page.text))
        urls = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert urls and all(url.startswith("/docs/assets/") for url in urls), urls
        for url in urls:
            asset = client.get(url)
            assert asset.status_code == 200 and len(asset.content) > 100, url
            assert asset.headers["content-type"].split(";")[0] in {"text/javascript", "text/css", "image/png"}
        csp = page.headers["content-security-policy"]
        directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
        assert directives["script-src"] == "'self'", csp  # no inline script, no other host
        assert directives["default-src"] == "'none'" and directives["frame-ancestors"] == "'none'"
        assert "http" not in csp and page.headers["x-frame-options"] == "DENY"
    assert "SwaggerUIBundle" in client.get("/docs/assets/swagger-init.js").text
    assert client.get("/docs/assets/../../core/config.py").status_code == 404
    assert client.get("/docs/assets/core.py").status_code == 404  # only the listed files
    assert "content-security-policy" not in client.get("/openapi.json").headers
