"""API behaviour without a worker: validation, 404s, idempotent re-sends, queued jobs persisted."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from tests.conftest import API_HEADERS

ITEM = {
    "source": "TLDR AI",
    "subject": "OpenAI and Broadcom announce a chip deal",
    "from": "dan@tldrnewsletter.com",
    "date": "2025-10-16T08:00:00Z",
    "message_id": "<abc@tldr>",
    "content": "OpenAI will design custom AI chips with Broadcom.",
    "url": "https://openai.com/index/x?utm_source=tldr",
}


@pytest.fixture
def client(service_env, database_url, monkeypatch) -> Iterator[TestClient]:
    from tests.conftest import apply_env

    apply_env(monkeypatch, service_env, DATABASE_URL=database_url)
    with TestClient(create_app(), headers=API_HEADERS, raise_server_exceptions=False) as test_client:
        yield test_client


def test_single_item_is_accepted_with_location(client: TestClient) -> None:
    response = client.post("/v1/enhance", json=ITEM)
    assert response.status_code == 202
    jobs = response.json()["jobs"]
    assert len(jobs) == 1 and jobs[0]["status"] == "queued"
    assert response.headers["location"] == f"/v1/jobs/{jobs[0]['id']}"
    job = client.get(response.headers["location"]).json()
    assert job["status"] == "queued" and job["attempts"] == 0 and job["record_id"] is None


def test_batch_is_accepted_and_resent_items_map_to_the_same_jobs(client: TestClient) -> None:
    items = [{**ITEM, "message_id": f"<m{i}@x>"} for i in range(3)]
    first = client.post("/v1/enhance", json={"items": items}).json()["jobs"]
    again = client.post("/v1/enhance", json={"items": items}).json()["jobs"]
    assert len(first) == 3
    assert [j["id"] for j in first] == [j["id"] for j in again]
    assert "location" not in client.post("/v1/enhance", json={"items": items[:1]}).headers


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**ITEM, "content": ""}, "content"),
        ({**ITEM, "date": "yesterday"}, "date"),
        ({k: v for k, v in ITEM.items() if k != "message_id"}, "message_id"),
        ({**ITEM, "url": "not a url"}, "url"),
        ({**ITEM, "unexpected": 1}, "unexpected"),
        ({"items": []}, "items"),
        ({"items": [ITEM] * 101}, "items"),
        ({"items": [{**ITEM, "source": ""}]}, "items.0.source"),
        ({**ITEM, "content": "x" * 100_001}, "content"),
        ([1, 2], "body"),
    ],
)
def test_bad_input_gets_422_naming_the_field(client: TestClient, body: object, field: str) -> None:
    response = client.post("/v1/enhance", json=body)
    assert response.status_code == 422, response.text
    payload = response.json()
    assert field in payload["message"]
    assert isinstance(payload["detail"], list) and payload["detail"]


def test_malformed_json_and_invalid_utf8_get_422(client: TestClient) -> None:
    for raw in (b"{not json", b'{"source": "\xff\xfe"}'):
        response = client.post("/v1/enhance", content=raw, headers={"content-type": "application/json"})
        assert response.status_code == 422
        assert "JSON" in response.json()["message"] or "json" in response.json()["message"]


def test_unknown_job_and_record_are_404(client: TestClient) -> None:
    assert client.get("/v1/jobs/nope").status_code == 404
    response = client.get("/v1/records/nope")
    assert response.status_code == 404 and "nope" in response.json()["message"]


def test_record_filters_validate_their_input(client: TestClient) -> None:
    assert client.get("/v1/records", params={"limit": 0}).status_code == 422
    assert client.get("/v1/records", params={"since": "not-a-date"}).status_code == 422
    bad_range = client.get("/v1/records", params={"since": "2025-02-01", "until": "2025-01-01"})
    assert bad_range.status_code == 422
    page = client.get("/v1/records").json()
    assert page == {"items": [], "total": 0, "limit": 50, "offset": 0}


def test_health_is_open_and_readiness_needs_a_worker(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["database"] == "ok" and ready.json()["checks"]["workers"] == 0
