"""POST /v1/emails and GET /v1/emails/{id}: a raw e-mail in, one job per story, nothing twice;
POST /enhance, the unversioned alias of POST /v1/enhance."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from tests.conftest import API_HEADERS
from tests.mail_factory import STORIES, tldr_email

RFC822 = {"Content-Type": "message/rfc822"}


@pytest.fixture
def client(service_env, database_url, monkeypatch) -> Iterator[TestClient]:
    from tests.conftest import apply_env

    apply_env(monkeypatch, service_env, DATABASE_URL=database_url, ENHANCER_MAX_EMAIL_BYTES="200000")
    with TestClient(create_app(), headers=API_HEADERS, raise_server_exceptions=False) as test_client:
        yield test_client


def test_an_email_becomes_one_job_per_story_and_sponsors_get_none(client: TestClient) -> None:
    response = client.post("/v1/emails", content=tldr_email(), headers=RFC822)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["email"]["message_id"] == "tldr-1@tldrnewsletter.com"
    assert body["email"]["from"] == "dan@tldrnewsletter.com"
    assert body["email"]["list_id"] == "tldr-ai.tldrnewsletter.com"
    assert body["email"]["splitter"] == "tldr" and body["email"]["story_count"] == 3
    stories = body["stories"]
    assert [s["headline"] for s in stories] == [s[1] for s in STORIES]
    assert [s["section"] for s in stories] == [s[0] for s in STORIES]
    assert [s["url"] for s in stories] == [s[2] for s in STORIES]  # CL0 unwrapped, utm_ stripped
    assert [s["sponsored"] for s in stories] == [False, True, False]
    assert stories[1]["job"] is None  # the sponsor is kept, not enhanced
    assert [j["id"] for j in body["jobs"]] == [stories[0]["job"]["id"], stories[2]["job"]["id"]]
    assert all(s["job_created"] for s in stories if s["job"])
    assert response.headers["location"] == f"/v1/emails/{body['email']['id']}"

    read = client.get(response.headers["location"])
    assert read.status_code == 200
    assert [s["job"] for s in read.json()["stories"]] == [s["job"] for s in stories]


def test_posting_an_email_again_returns_the_same_email_and_jobs(client: TestClient) -> None:
    first = client.post("/v1/emails", content=tldr_email(), headers=RFC822).json()
    again = client.post("/v1/emails", content=tldr_email(), headers=RFC822)
    assert again.status_code == 202 and again.headers["idempotent-replayed"] == "true"
    assert again.json()["email"]["id"] == first["email"]["id"]
    assert again.json()["jobs"] == first["jobs"]
    assert not any(s["job_created"] for s in again.json()["stories"])


def test_without_a_message_id_the_bytes_identify_the_email(client: TestClient) -> None:
    raw = tldr_email(message_id=None)
    first = client.post("/v1/emails", content=raw, headers=RFC822).json()
    assert first["email"]["message_id"] is None
    again = client.post("/v1/emails", content=raw, headers=RFC822).json()
    assert again["email"]["id"] == first["email"]["id"]
    edited = client.post("/v1/emails", content=raw.replace(b"Preheader", b"Pre-header"), headers=RFC822)
    assert edited.json()["email"]["id"] != first["email"]["id"]  # other bytes: another e-mail ...
    assert edited.json()["jobs"] == first["jobs"]  # ... whose stories are the same items and jobs


@pytest.mark.parametrize(
    ("content", "headers", "code", "says"),
    [
        (tldr_email(), {"Content-Type": "application/json"}, 415, "message/rfc822"),
        (b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, RFC822, 422, "no header lines"),
        (b"Subject: a picture\r\nContent-Type: image/png\r\n\r\nAAAA", RFC822, 422, "no text/html"),
        (b"", RFC822, 422, "empty"),
        (b"Subject: x\r\n\r\n" + b"a" * 300_000, RFC822, 413, "200000 bytes"),
    ],
    ids=["json", "png", "only-an-image", "empty", "too-large"],
)
def test_bad_emails_get_a_clear_4xx(client: TestClient, content, headers, code, says) -> None:
    response = client.post("/v1/emails", content=content, headers=headers)
    assert response.status_code == code, response.text
    assert says in response.json()["message"]
    assert client.get("/healthz").status_code == 200


def test_unknown_email_is_a_404(client: TestClient) -> None:
    assert client.get("/v1/emails/nope").status_code == 404


def test_emails_need_the_api_key(client: TestClient) -> None:
    response = client.post("/v1/emails", content=tldr_email(), headers={**RFC822, "X-API-Key": ""})
    assert response.status_code == 401


ITEM = {
    "source": "TLDR AI",
    "subject": "OpenAI and Broadcom announce a chip deal",
    "from": "dan@tldrnewsletter.com",
    "date": "2025-10-16T08:00:00Z",
    "message_id": "<alias@tldr>",
    "content": "OpenAI will design custom AI chips with Broadcom.",
}


def test_post_enhance_is_an_alias_of_v1_enhance(client: TestClient) -> None:
    alias = client.post("/enhance", json=ITEM)
    canonical = client.post("/v1/enhance", json=ITEM)
    assert alias.status_code == canonical.status_code == 202
    assert alias.json() == canonical.json()  # the same item: the same job
    assert client.post("/enhance", json={**ITEM, "content": ""}).status_code == 422
    assert client.post("/enhance", json=ITEM, headers={"X-API-Key": "wrong"}).status_code == 403
    spec = client.get("/openapi.json").json()["paths"]
    assert "alias" in spec["/enhance"]["post"]["summary"].lower()


def test_an_email_over_the_queue_limit_is_a_429_and_stores_nothing(service_env, monkeypatch) -> None:
    from tests.conftest import apply_env

    apply_env(monkeypatch, service_env, DATABASE_URL=None, ENHANCER_MAX_QUEUED_JOBS="1")
    with TestClient(create_app(), headers=API_HEADERS) as client:
        response = client.post("/v1/emails", content=tldr_email(), headers=RFC822)  # two jobs
        assert response.status_code == 429 and response.headers["retry-after"]
        assert "the limit is 1" in response.json()["message"]
        assert client.get("/v1/records").json()["total"] == 0
    from sqlalchemy import func, select

    from app.core.db import session_scope
    from app.models import Email, Item

    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Email)) == 0
        assert session.scalar(select(func.count()).select_from(Item)) == 0
