"""Atom feeds of stories: tokens made with the API key, feeds read with the token alone."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from datetime import datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient

from app.core.logging import RedactSecrets, uvicorn_log_config
from app.knowledge.feeds import ATOM_NS, TOKEN_PREFIX
from tests.conftest import API_HEADERS, REPO_ROOT, TEST_API_KEY
from tests.digest_helpers import GPT5_ARTICLE, GPT5_URL, WEEK, News, add_records, day, knowledge_env
from tests.reliability_helpers import free_port

__all__ = ["knowledge_env"]  # the fixture, used by name

A = f"{{{ATOM_NS}}}"
FEED = "/v1/feeds/stories.atom"


@pytest.fixture
def client(knowledge_env: Path) -> TestClient:
    add_records(WEEK)
    from app.main import create_app

    with TestClient(create_app(), raise_server_exceptions=False) as test_client:
        yield test_client  # type: ignore[misc]


def _create(client: TestClient, **body: object) -> dict:
    response = client.post("/v1/feeds", json={"name": "AI news", **body}, headers=API_HEADERS)
    assert response.status_code == 201, response.text
    return response.json()


def _token(created: dict) -> str:
    return parse_qs(urlsplit(created["url"]).query)["token"][0]


def _entries(body: bytes) -> list[ET.Element]:
    root = ET.fromstring(body)
    assert root.tag == f"{A}feed"
    return root.findall(f"{A}entry")


def test_feed_is_atom_with_one_entry_per_story(client: TestClient) -> None:
    created = _create(client)
    assert set(created) == {"id", "name", "filters", "created_at", "revoked_at", "url"}
    assert created["filters"] == {} and created["revoked_at"] is None
    url = urlsplit(created["url"])
    assert url.path == FEED and set(parse_qs(url.query)) == {"token"}
    token = _token(created)
    assert token.startswith(TOKEN_PREFIX) and len(token) >= len(TOKEN_PREFIX) + 43  # 32 random bytes

    response = client.get(FEED, params={"token": token})  # no API key
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/atom+xml; charset=utf-8"
    root = ET.fromstring(response.content)
    assert root.tag == f"{A}feed"  # the Atom namespace
    assert root.findtext(f"{A}id") == f"urn:newsletter-enhancer:feed:{created['id']}"
    assert root.findtext(f"{A}title") == "Newsletter stories: AI news"
    assert root.find(f"{A}link[@rel='self']").get("href") == created["url"]  # type: ignore[union-attr]
    assert root.findtext(f"{A}author/{A}name") == "newsletter-enhancer"
    entries = root.findall(f"{A}entry")
    assert len(entries) == 7  # every story, one entry each (three newsletters' GPT-5 is one)
    published = [e.findtext(f"{A}published") for e in entries]
    assert published == sorted(published, reverse=True)  # newest first
    assert root.findtext(f"{A}updated") == max(e.findtext(f"{A}updated") or "" for e in entries)

    gpt5 = next(e for e in entries if "GPT-5" in (e.findtext(f"{A}title") or ""))
    assert (gpt5.findtext(f"{A}id") or "").startswith("urn:story:")
    assert gpt5.findtext(f"{A}title") == "OpenAI releases GPT-5 with a new reasoning mode"
    assert gpt5.findtext(f"{A}published") == "2025-01-06T09:00:00Z"
    assert datetime.fromisoformat(gpt5.findtext(f"{A}updated") or "").tzinfo is not None
    assert "flagship model" in (gpt5.findtext(f"{A}summary") or "")
    assert [c.get("term") for c in gpt5.findall(f"{A}category")] == ["model release"]
    assert gpt5.find(f"{A}link[@rel='alternate']").get("href") == GPT5_URL  # type: ignore[union-attr]
    content = gpt5.find(f"{A}content")
    assert content is not None and content.get("type") == "html"
    html = content.text or ""
    for needle in (f'href="{GPT5_URL}"', f'href="{GPT5_ARTICLE}"', "The Batch, Import AI, TLDR AI"):
        assert needle in html
    assert [c.findtext(f"{A}name") for c in gpt5.findall(f"{A}contributor")] == [
        "The Batch",
        "Import AI",
        "TLDR AI",
    ]
    other = next(e for e in entries if "hackathons" in (e.findtext(f"{A}title") or ""))
    assert other.findall(f"{A}category") == []

    # The ETag: the same feed again is a 304 with no body.
    etag = response.headers["etag"]
    assert response.headers["last-modified"].endswith(" GMT")
    again = client.get(FEED, params={"token": token}, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    assert client.get(FEED, params={"token": token}, headers={"If-None-Match": '"other"'}).status_code == 200


def test_a_feed_reads_its_stored_filters_and_no_others(client: TestClient) -> None:
    safety = _token(_create(client, name="Safety", topic="AI Safety"))
    assert [
        e.findtext(f"{A}title") for e in _entries(client.get(FEED, params={"token": safety}).content)
    ] == ["Anthropic publishes a study of sabotage risk in frontier models"]
    strong = _create(client, name="Strong", min_relevance=9, since="2025-01-06T00:00:00Z")
    assert strong["filters"] == {"since": "2025-01-06T00:00:00+00:00", "min_relevance": 9}
    titles = [
        e.findtext(f"{A}title") for e in _entries(client.get(FEED, params={"token": _token(strong)}).content)
    ]
    assert len(titles) == 3 and all(
        "Llama" not in (t or "") for t in titles
    )  # Sunday's story is before since
    # Filters on the URL are refused, not applied: the token's are the only ones.
    for extra in (
        {"topic": "GPU supply"},
        {"min_relevance": "1"},
        {"limit": "1000"},
        {"since": "2020-01-01"},
    ):
        refused = client.get(FEED, params={"token": safety, **extra})
        assert refused.status_code == 422 and "only token" in refused.json()["message"]
    # Bad filters at creation: 422.
    for body in ({"name": ""}, {"name": "x", "min_relevance": 11}, {"name": "x", "topic": "a\x00b"}, {}):
        assert client.post("/v1/feeds", json=body, headers=API_HEADERS).status_code == 422, body


def test_revoked_and_unknown_tokens_get_the_same_404(client: TestClient) -> None:
    created = _create(client)
    token = _token(created)
    listed = client.get("/v1/feeds", headers=API_HEADERS)
    assert listed.status_code == 200
    assert [f["id"] for f in listed.json()] == [created["id"]]
    assert token not in listed.text and "url" not in listed.json()[0] and "token" not in listed.text

    assert client.delete(f"/v1/feeds/{created['id']}", headers=API_HEADERS).status_code == 204
    revoked = client.get(FEED, params={"token": token})
    wrong = client.get(FEED, params={"token": token[:-4] + "AAAA"})
    missing = client.get(FEED)
    garbage = client.get(FEED, params={"token": "x" * 5000})
    for response in (revoked, wrong, missing, garbage):
        assert response.status_code == 404
        assert response.json() == revoked.json() == {"detail": "feed not found", "message": "feed not found"}
    assert client.get("/v1/feeds", headers=API_HEADERS).json()[0]["revoked_at"] is not None
    assert client.delete(f"/v1/feeds/{created['id']}", headers=API_HEADERS).status_code == 204  # again: fine
    assert client.delete("/v1/feeds/nope", headers=API_HEADERS).status_code == 404
    # Managing feeds needs the API key.
    assert client.get("/v1/feeds").status_code == 401
    assert client.post("/v1/feeds", json={"name": "x"}).status_code == 401
    assert client.delete(f"/v1/feeds/{created['id']}").status_code == 401


def test_a_feed_token_opens_nothing_else(client: TestClient) -> None:
    token = _token(_create(client))
    story_id = "x"
    for path in ("/v1/records", "/v1/stories", f"/v1/stories/{story_id}", "/v1/feeds", "/v1/digests",
                 "/v1/export", "/v1/topics", "/v1/search?q=gpt"):  # fmt: skip
        sep = "&" if "?" in path else "?"
        assert client.get(f"{path}{sep}token={token}").status_code == 401, path  # no key: 401
        assert client.get(path, headers={"X-API-Key": token}).status_code == 403, path  # not a key
        assert client.get(path, headers={"Authorization": f"Bearer {token}"}).status_code == 403, path
    assert client.post("/v1/feeds", json={"name": "y"}, headers={"X-API-Key": token}).status_code == 403
    # The review pages neither.
    page = client.get(f"/review?token={token}", headers={"Accept": "text/html"}, follow_redirects=False)
    assert page.status_code in (303, 401)
    # And the API key does not open the feed URL without a token.
    assert client.get(FEED, headers=API_HEADERS).status_code == 404


def test_the_log_filter_redacts_feed_tokens() -> None:
    token = TOKEN_PREFIX + "AbC-dEf_123456789012345678901234567890abcd"
    access = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", f"{FEED}?token={token}", "1.1", 200), None,
    )  # fmt: skip
    assert RedactSecrets().filter(access)
    line = access.getMessage()
    assert token not in line and f"{FEED}?token=[redacted]" in line
    # Anywhere else a token turns up (an error message, a feed URL in a sentence): still redacted.
    other = logging.LogRecord(
        "app", logging.WARNING, __file__, 1, "feed %s failed: see %s", (token, f"x?a=1&token={token}"), None
    )
    assert RedactSecrets().filter(other) and token not in other.getMessage()
    handlers = uvicorn_log_config()["handlers"]
    assert all(handler.get("filters") == ["redact"] for handler in handlers.values())


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_access_log_of_a_feed_request_holds_no_token(knowledge_env: Path) -> None:
    add_records(
        [News("The Batch", "One story", "One story happened today.", "https://example.com/1", day(6))]
    )
    port = free_port()
    env = {**os.environ, "ENHANCER_MODEL": "unused-by-the-api", "ENHANCER_API_KEYS": TEST_API_KEY}
    command = [sys.executable, "-m", "app.cli", "serve", "--no-worker", "--port", str(port)]
    server = subprocess.Popen(
        command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                created = httpx.post(f"{base}/v1/feeds", json={"name": "log"}, headers=API_HEADERS)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and server.poll() is None
                time.sleep(0.2)
        assert created.status_code == 201, created.text
        token = parse_qs(urlsplit(created.json()["url"]).query)["token"][0]
        feed = httpx.get(f"{base}{FEED}", params={"token": token})
        assert feed.status_code == 200 and b"One story" in feed.content
        assert httpx.get(f"{base}{FEED}", params={"token": token + "x"}).status_code == 404
    finally:
        server.terminate()
        server.wait(timeout=30)
    log = server.stdout.read().decode(errors="replace")  # type: ignore[union-attr]
    assert f"GET {FEED}?token=[redacted] HTTP/1.1" in log, log[-3000:]
    assert token not in log


def test_hostile_text_stays_text_and_the_feed_stays_xml(client: TestClient) -> None:
    hostile = News(
        "Evil\x01 <b>Weekly</b>",
        'Control \x08\x1f chars and <script>alert("x")</script> & ]]> in a title',
        "A summary with \x0b and a </content> tag and <img src=x onerror=alert(1)>.",
        "javascript:alert(2)",
        day(10),
        ["<i>topic</i>"],
        ["<svg onload=alert(3)>"],
    )
    add_records([hostile])
    token = _token(_create(client))
    response = client.get(FEED, params={"token": token})
    assert response.status_code == 200
    entry = next(e for e in _entries(response.content) if "Control" in (e.findtext(f"{A}title") or ""))
    assert entry.findtext(f"{A}title") == 'Control  chars and <script>alert("x")</script> & ]]> in a title'
    html = entry.findtext(f"{A}content") or ""
    assert "<img" not in html and "&lt;img src=x" in html  # escaped once more inside the HTML content
    assert 'href="javascript' not in html and entry.find(f"{A}link[@rel='alternate']") is None
    assert [c.get("term") for c in entry.findall(f"{A}category")] == ["<i>topic</i>"]
