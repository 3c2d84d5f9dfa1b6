"""Webhooks: the /v1/webhooks API, fan-out of events, and signed deliveries with retries to a real
HTTP receiver (every request's signature checked with standardwebhooks), through a real Celery worker
and in-process on SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import standardwebhooks
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.core.broker import enqueue_deliveries
from app.core.config import get_settings
from app.core.db import session_scope
from app.knowledge.webhooks import (
    EVENTS,
    attempt_delivery,
    due_deliveries,
    queue_event,
    retry_delay,
    validate_webhook_url,
)
from app.main import create_app
from app.models import Webhook, WebhookDelivery, utcnow
from tests.conftest import API_HEADERS, TEST_API_KEY, apply_env

RECORD = {"id": "rec1", "headline": "OpenAI and Broadcom announce a chip deal", "key_topics": ["AI Chip"]}
STORY = {"id": "story1", "title": "AI chips", "record_ids": ["rec1", "rec2"]}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Receiver:
    """A real HTTP server on 127.0.0.1 that verifies each request's Standard Webhooks signature.

    Answers `status` to requests that verify (401 to those that do not) and records every request:
    (webhook-id, webhook-timestamp, the parsed body or None, whether it verified, the answer).
    """

    def __init__(self, port: int | None = None, status: int = 200, headers: dict[str, str] | None = None):
        self.port = port or free_port()
        self.status = status
        self.answer_headers = headers or {}
        self.secret: str | None = None
        self.delay = 0.0
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/enhancer"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                headers = {key.lower(): value for key, value in self.headers.items()}
                try:
                    if not receiver.secret:
                        raise ValueError("the receiver has no secret yet")
                    payload = standardwebhooks.Webhook(receiver.secret).verify(body, headers)
                    verified = True
                except Exception:
                    payload, verified = None, False
                status = receiver.status if verified else 401
                if receiver.delay:
                    time.sleep(receiver.delay)
                with receiver._lock:
                    receiver.requests.append(
                        {
                            "id": headers.get("webhook-id"),
                            "timestamp": int(headers.get("webhook-timestamp", 0)),
                            "content_type": headers.get("content-type"),
                            "path": self.path,
                            "payload": payload,
                            "verified": verified,
                            "status": status,
                        }
                    )
                self.send_response(status)
                for key, value in receiver.answer_headers.items():
                    self.send_header(key, value)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def got(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.requests)


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    made: list[Receiver] = []

    def make(**kwargs: Any) -> Receiver:
        receiver = Receiver(**kwargs)
        made.append(receiver)
        return receiver

    yield make
    for receiver in made:
        receiver.stop()


FAST_RETRIES = {
    "ENHANCER_WEBHOOK_RETRY_SECONDS": "0.2",
    "ENHANCER_WEBHOOK_RETRY_MAX_SECONDS": "1",
    "ENHANCER_WEBHOOK_TIMEOUT_SECONDS": "3",
}


@pytest.fixture
def client(service_env, database_url, monkeypatch) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    apply_env(monkeypatch, service_env, DATABASE_URL=database_url, **FAST_RETRIES)
    with TestClient(create_app(), headers=API_HEADERS, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def sqlite_client(service_env, monkeypatch) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    apply_env(monkeypatch, service_env, **FAST_RETRIES)
    with TestClient(create_app(), headers=API_HEADERS, raise_server_exceptions=False) as test_client:
        yield test_client


def _create(client: TestClient, url: str, events: list[str] | None = None) -> dict[str, Any]:
    response = client.post("/v1/webhooks", json={"url": url, "events": events or list(EVENTS)})
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def _queue(event_type: str, data: dict[str, Any], *, send: bool = True) -> list[str]:
    with session_scope() as session:
        ids = queue_event(session, event_type=event_type, data=data)
    if send:
        assert enqueue_deliveries(ids)
    return ids


def _deliveries(client: TestClient, webhook_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/v1/webhooks/{webhook_id}/deliveries", params={"limit": 200})
    assert response.status_code == 200, response.text
    return response.json()["items"]  # type: ignore[no-any-return]


def _wait(what: str, check: Callable[[], bool], timeout: float, log: Callable[[], str] = str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout} s\n{log()}")
        time.sleep(0.1)


# The API ----------------------------------------------------------------------------------


def test_webhook_api_create_read_list_delete(sqlite_client: TestClient) -> None:
    client = sqlite_client
    created = client.post(
        "/v1/webhooks",
        json={"url": "https://example.com/hook?x=1", "events": ["record.created"], "description": "CRM"},
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["secret"].startswith("whsec_") and len(body["secret"]) == len("whsec_") + 32
    standardwebhooks.Webhook(body["secret"])  # a valid Standard Webhooks secret
    assert body["url"] == "https://example.com/hook?x=1" and body["events"] == ["record.created"]
    assert body["description"] == "CRM" and body["active"] is True and body["created_at"]
    assert created.headers["location"] == f"/v1/webhooks/{body['id']}"

    read = client.get(f"/v1/webhooks/{body['id']}")
    assert read.status_code == 200
    assert "secret" not in read.json() and body["secret"] not in read.text
    assert {k: v for k, v in body.items() if k != "secret"} == read.json()
    other = _create(client, "http://127.0.0.1:9/x", ["story.updated", "record.created", "story.updated"])
    assert other["events"] == ["story.updated", "record.created"]  # duplicates dropped
    assert other["secret"] != body["secret"]
    listed = client.get("/v1/webhooks")
    assert listed.status_code == 200 and "whsec_" not in listed.text
    assert [w["id"] for w in listed.json()["items"]] == [body["id"], other["id"]]

    assert client.delete(f"/v1/webhooks/{body['id']}").status_code == 204
    assert client.get(f"/v1/webhooks/{body['id']}").status_code == 404
    assert [w["id"] for w in client.get("/v1/webhooks").json()["items"]] == [other["id"]]


def _bad(url: str, says: str, events: list[str] | None = None) -> Any:
    return pytest.param({"url": url, "events": events or ["record.created"]}, says, id=says[:20])


@pytest.mark.parametrize(
    ("body", "says"),
    [
        _bad("ftp://example.com/x", "only http and https"),
        _bad("example.com/hook", "only http and https URLs"),
        _bad("https://user:pw@example.com/x", "must not hold credentials"),
        _bad("https://token@example.com/x", "credentials (user:password@)"),
        _bad("https:///no-host", "no host"),
        _bad("https://example.com/a b", "spaces or control characters"),
        _bad("https://example.com:99999/", "cannot be parsed"),
        _bad("https://example.com/" + "a" * 2000, "at most 2000 characters"),
        _bad("https://example.com/x", "'record.created' or 'story.updated'", ["record.deleted"]),
        pytest.param({"url": "https://example.com/x", "events": []}, "at least 1 item", id="no events"),
        pytest.param({"url": "https://example.com/x"}, "events: Field required", id="events missing"),
    ],
)
def test_a_bad_webhook_is_a_422_that_says_why(sqlite_client: TestClient, body: dict, says: str) -> None:
    response = sqlite_client.post("/v1/webhooks", json=body)
    assert response.status_code == 422, response.text
    assert says in response.json()["message"], response.json()["message"]
    assert sqlite_client.get("/v1/webhooks").json()["items"] == []


def test_url_validation_keeps_good_urls() -> None:
    for url in ("http://127.0.0.1:8080/hook", "https://[::1]/x", "HTTPS://Example.com/a?b=c#d"):
        assert validate_webhook_url(url) == url


def test_unknown_webhooks_are_404_and_every_route_needs_the_key(sqlite_client: TestClient) -> None:
    for method, path in [
        ("GET", "/v1/webhooks/nope"),
        ("DELETE", "/v1/webhooks/nope"),
        ("GET", "/v1/webhooks/nope/deliveries"),
    ]:
        response = sqlite_client.request(method, path)
        assert response.status_code == 404, (method, path)
        assert response.json()["message"] == "webhook nope not found"
    hook = _create(sqlite_client, "https://example.com/x")
    for method, path in [
        ("GET", "/v1/webhooks"),
        ("POST", "/v1/webhooks"),
        ("GET", f"/v1/webhooks/{hook['id']}"),
        ("DELETE", f"/v1/webhooks/{hook['id']}"),
        ("GET", f"/v1/webhooks/{hook['id']}/deliveries"),
    ]:
        kwargs: dict[str, Any] = {"json": {"url": "https://e.com", "events": ["record.created"]}}
        assert sqlite_client.request(method, path, headers={"X-API-Key": ""}, **kwargs).status_code == 401
        assert (
            sqlite_client.request(method, path, headers={"X-API-Key": "wrong"}, **kwargs).status_code == 403
        )
    assert (
        sqlite_client.get(f"/v1/webhooks/{hook['id']}", headers={"X-API-Key": TEST_API_KEY}).status_code
        == 200
    )


def test_deliveries_are_listed_newest_first_in_pages_and_go_with_their_webhook(
    sqlite_client: TestClient,
) -> None:
    client = sqlite_client
    hook = _create(client, "https://example.com/x")
    ids = [_queue("record.created", {**RECORD, "id": f"rec{n}"}, send=False)[0] for n in range(3)]
    first = client.get(f"/v1/webhooks/{hook['id']}/deliveries", params={"limit": 2}).json()
    assert [d["id"] for d in first["items"]] == ids[::-1][:2]
    assert first["next_before"] == ids[1]
    rest = client.get(
        f"/v1/webhooks/{hook['id']}/deliveries", params={"limit": 2, "before": first["next_before"]}
    ).json()
    assert [d["id"] for d in rest["items"]] == [ids[0]] and rest["next_before"] is None
    delivery = first["items"][0]
    assert delivery["status"] == "pending" and delivery["attempts"] == 0
    assert delivery["event_type"] == "record.created" and delivery["webhook_id"] == hook["id"]
    assert delivery["last_status_code"] is None and delivery["last_error"] is None
    assert delivery["finished_at"] is None and delivery["next_attempt_at"] and delivery["created_at"]
    wrong = client.get(f"/v1/webhooks/{hook['id']}/deliveries", params={"before": "unknown"})
    assert wrong.status_code == 422 and "not one of this webhook's" in wrong.json()["message"]

    assert client.delete(f"/v1/webhooks/{hook['id']}").status_code == 204
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(WebhookDelivery)) == 0


# Fan-out ----------------------------------------------------------------------------------


def test_an_event_fans_out_only_to_active_webhooks_subscribed_to_it(sqlite_client: TestClient) -> None:
    records_only = _create(sqlite_client, "https://a.example/x", ["record.created"])
    stories_only = _create(sqlite_client, "https://b.example/x", ["story.updated"])
    both = _create(sqlite_client, "https://c.example/x", ["record.created", "story.updated"])
    paused = _create(sqlite_client, "https://d.example/x", ["record.created", "story.updated"])
    with session_scope() as session:
        webhook = session.get(Webhook, paused["id"])
        assert webhook is not None
        webhook.active = False
    record_ids = _queue("record.created", RECORD, send=False)
    story_ids = _queue("story.updated", STORY, send=False)
    with session_scope() as session:
        rows = {d.id: d for d in session.scalars(select(WebhookDelivery))}
    assert sorted(rows[i].webhook_id for i in record_ids) == sorted([records_only["id"], both["id"]])
    assert sorted(rows[i].webhook_id for i in story_ids) == sorted([stories_only["id"], both["id"]])
    payload = rows[record_ids[0]].payload
    assert payload["type"] == "record.created" and payload["data"] == RECORD
    assert payload["timestamp"].endswith("Z")
    assert {rows[i].status for i in rows} == {"pending"} and {rows[i].attempts for i in rows} == {0}
    with session_scope() as session:
        assert sorted(due_deliveries(session, now=utcnow(), limit=10)) == sorted(record_ids + story_ids)
        with pytest.raises(ValueError, match="unknown event"):
            queue_event(session, event_type="record.deleted", data={})
    for hook in (both, stories_only):
        assert sqlite_client.delete(f"/v1/webhooks/{hook['id']}").status_code == 204
    with session_scope() as session:  # no active subscriber left: no delivery
        assert queue_event(session, event_type="story.updated", data=STORY) == []
        # the deleted webhooks' deliveries went with them
        kept = [i for i in record_ids if rows[i].webhook_id == records_only["id"]]
        assert due_deliveries(session, now=utcnow(), limit=10) == kept


def test_retry_delays_grow_exponentially_to_the_cap(service_env) -> None:  # type: ignore[no-untyped-def]
    settings = get_settings().model_copy(
        update={"webhook_retry_base_seconds": 5.0, "webhook_retry_max_seconds": 3600.0}
    )
    for attempts, expected in [(1, 5), (2, 10), (3, 20), (7, 320), (11, 3600), (500, 3600)]:
        delays = [retry_delay(attempts, settings) for _ in range(50)]
        assert all(min(expected * 0.9, 3600) - 1e-9 <= d <= min(expected * 1.1, 3600) for d in delays)
    assert len({retry_delay(3, settings) for _ in range(20)}) > 1  # jittered


# Delivery, in-process on both databases ---------------------------------------------------


def test_a_receiver_answering_500_ends_in_failed_after_max_attempts(
    client: TestClient, receivers, monkeypatch, service_env, caplog
) -> None:  # type: ignore[no-untyped-def]
    apply_env(
        monkeypatch, service_env, ENHANCER_WEBHOOK_MAX_ATTEMPTS="3", ENHANCER_WEBHOOK_RETRY_SECONDS="0.3"
    )
    settings = get_settings()
    receiver = receivers(status=500)
    hook = _create(client, receiver.url, ["story.updated"])
    receiver.secret = hook["secret"]
    receiver.start()
    (delivery_id,) = _queue("story.updated", STORY, send=False)
    caplog.set_level(logging.INFO, logger="app.knowledge.webhooks")
    results = []
    with httpx.Client() as http:
        for _ in range(10):
            outcome = attempt_delivery(session_scope, delivery_id=delivery_id, client=http, settings=settings)
            results.append(outcome.result)
            if outcome.result == "retry":
                assert outcome.retry_in is not None and 0.27 <= outcome.retry_in <= 0.66
                again = attempt_delivery(
                    session_scope, delivery_id=delivery_id, client=http, settings=settings
                )
                assert again.result == "skipped"  # not due yet
                time.sleep(outcome.retry_in)
            if outcome.result == "failed":
                break
    assert results == ["retry", "retry", "failed"]
    got = receiver.got()
    assert [r["id"] for r in got] == [delivery_id] * 3  # the same webhook-id on every retry
    assert all(r["verified"] and r["status"] == 500 for r in got)
    assert got[0]["payload"] == {
        "type": "story.updated",
        "timestamp": got[0]["payload"]["timestamp"],
        "data": STORY,
    }
    assert got[0]["content_type"] == "application/json" and got[0]["path"] == "/hooks/enhancer"

    (listed,) = _deliveries(client, hook["id"])
    assert listed["status"] == "failed" and listed["attempts"] == 3
    assert listed["last_status_code"] == 500 and listed["last_error"] == "HTTP 500"
    assert listed["finished_at"] and listed["next_attempt_at"] is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3 and all(delivery_id in w and hook["id"] in w for w in warnings)
    assert "failed for good after 3 attempt(s): HTTP 500" in warnings[-1]
    assert not any(hook["secret"] in r.getMessage() for r in caplog.records)
    with session_scope() as session:
        assert due_deliveries(session, now=utcnow(), limit=10) == []
    with httpx.Client() as http:  # done: a late duplicate message sends nothing
        assert attempt_delivery(
            session_scope, delivery_id=delivery_id, client=http, settings=settings
        ).result == ("skipped")
    assert len(receiver.got()) == 3


def test_two_workers_never_send_one_delivery_at_once(client: TestClient, receivers) -> None:  # type: ignore[no-untyped-def]
    settings = get_settings()
    receiver = receivers()
    receiver.delay = 0.5
    hook = _create(client, receiver.url, ["record.created"])
    receiver.secret = hook["secret"]
    receiver.start()
    (delivery_id,) = _queue("record.created", RECORD, send=False)
    outcomes: list[str] = []

    def send() -> None:
        with httpx.Client() as http:
            result = attempt_delivery(session_scope, delivery_id=delivery_id, client=http, settings=settings)
            outcomes.append(result.result)

    threads = [threading.Thread(target=send) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["skipped", "skipped", "succeeded"]
    assert len(receiver.got()) == 1 and receiver.got()[0]["verified"]
    (listed,) = _deliveries(client, hook["id"])
    assert listed["status"] == "succeeded" and listed["attempts"] == 1 and listed["last_status_code"] == 200


def test_redirects_are_not_followed_and_errors_keep_no_secret(sqlite_client: TestClient, receivers) -> None:  # type: ignore[no-untyped-def]
    settings = get_settings()
    target = receivers().start()
    redirect = receivers(status=307, headers={"location": target.url})
    hook = _create(sqlite_client, redirect.url, ["record.created"])
    redirect.secret = target.secret = hook["secret"]
    redirect.start()
    closed = f"http://127.0.0.1:{free_port()}/x?token=s3cret"
    down = _create(sqlite_client, closed, ["record.created"])
    ids = _queue("record.created", RECORD, send=False)
    with httpx.Client() as http:
        outcomes = {
            i: attempt_delivery(session_scope, delivery_id=i, client=http, settings=settings) for i in ids
        }
    assert {o.result for o in outcomes.values()} == {"retry"}
    assert target.got() == [] and len(redirect.got()) == 1
    by_hook = {h: _deliveries(sqlite_client, h)[0] for h in (hook["id"], down["id"])}
    assert by_hook[hook["id"]]["last_status_code"] == 307 and by_hook[hook["id"]]["last_error"] == "HTTP 307"
    refused = by_hook[down["id"]]
    assert refused["last_status_code"] is None and refused["last_error"].startswith("ConnectError")
    assert "s3cret" not in refused["last_error"] and len(refused["last_error"]) <= 300


# Delivery through a real worker -------------------------------------------------------------


@pytest.mark.slow
def test_a_worker_delivers_everything_once_a_receiver_is_back_and_gives_up_on_one_that_fails(
    service_env, monkeypatch, start_worker, receivers
) -> None:  # type: ignore[no-untyped-def]
    """A receiver that is down at first gets every delivery once it is back (one of them lost by the
    broker, so only the reconciler sends it); one that answers 500 sees each delivery
    webhook_max_attempts times, and the delivery ends failed."""
    # No model: this test queues no job, and a worker whose model is missing starts at once and stays
    # up (loading the tiny one would take seconds of CPU beside the deliveries on a small machine).
    no_model = str(service_env["ENHANCER_DATA_DIR"]) + "/no-model"
    apply_env(
        monkeypatch, service_env, ENHANCER_WEBHOOK_MAX_ATTEMPTS="6", ENHANCER_MODEL=no_model, **FAST_RETRIES
    )
    worker = start_worker(service_env)
    down = receivers()  # its port stays closed until started below
    failing = receivers(status=500)
    with TestClient(create_app(), headers=API_HEADERS) as client:
        back_hook = _create(client, down.url)
        failing_hook = _create(client, failing.url, ["story.updated"])
        down.secret = back_hook["secret"]
        failing.secret = failing_hook["secret"]
        failing.start()
        sent = _queue("record.created", RECORD) + _queue("story.updated", STORY)
        sent += _queue("record.created", {**RECORD, "id": "rec2"})
        lost = _queue("record.created", {**RECORD, "id": "rec3"}, send=False)  # never reaches the broker

        def refused() -> bool:
            rows = {d["id"]: d for d in _deliveries(client, back_hook["id"])}
            return all(rows[i]["attempts"] >= 1 for i in sent if i in rows)

        _wait("deliveries tried while the receiver is down", refused, 20, worker.output)
        assert down.got() == []
        assert {
            d["last_error"].split(":")[0] for d in _deliveries(client, back_hook["id"]) if d["attempts"]
        } == {"ConnectError"}
        down.start()

        def settled() -> bool:
            rows = _deliveries(client, back_hook["id"]) + _deliveries(client, failing_hook["id"])
            return all(d["status"] != "pending" for d in rows)

        _wait("every delivery succeeded or failed", settled, 25, worker.output)
        back = _deliveries(client, back_hook["id"])
        failed = _deliveries(client, failing_hook["id"])

    got = down.got()
    back_ids = {d["id"] for d in back}
    assert len(back) == 4 and {d["status"] for d in back} == {"succeeded"}
    assert sorted(r["id"] for r in got) == sorted(back_ids)  # each webhook-id once among the successes
    assert all(r["verified"] and r["status"] == 200 for r in got)
    assert {r["payload"]["data"]["id"] for r in got} == {"rec1", "rec2", "rec3", "story1"}
    assert set(lost) & back_ids and all(d["last_status_code"] == 200 for d in back)
    assert all(d["attempts"] >= 2 for d in back if d["id"] in sent)  # refused first, delivered later

    (gave_up,) = failed
    assert gave_up["status"] == "failed" and gave_up["event_type"] == "story.updated"
    assert (gave_up["attempts"], gave_up["last_status_code"], gave_up["last_error"]) == (6, 500, "HTTP 500")
    calls = failing.got()
    assert [r["id"] for r in calls] == [gave_up["id"]] * 6 and all(r["verified"] for r in calls)
    assert calls[-1]["timestamp"] > calls[0]["timestamp"]  # one id, a fresh timestamp per attempt
    log = worker.log_path.read_text(errors="replace")
    named = f"webhook delivery {gave_up['id']} to webhook {failing_hook['id']}"
    for attempt in range(1, 6):
        assert f"WARNING/MainProcess] {named} failed (attempt {attempt} of 6): HTTP 500" in log
    assert f"WARNING/MainProcess] {named} failed for good after 6 attempt(s): HTTP 500" in log
    assert re.search(r"reconciler re-sent \d+ webhook delivery\(ies\)", log)
    assert failing_hook["secret"] not in log and back_hook["secret"] not in log
    assert "/hooks/enhancer" not in log  # no URL (it may hold a token): the webhook id names it
    assert set(sent) | set(lost) == back_ids | {gave_up["id"]}
