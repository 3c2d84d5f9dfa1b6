"""The review pages of the knowledge layer: a record's story, split and merge, the topic vocabulary
(rename, merge) and search, on indexed records (real MiniLM, SQLite)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.core.db import reset_caches
from tests.conftest import API_HEADERS, TEST_API_KEY
from tests.knowledge_helpers import add_record, record_story

HERE = {"Origin": "http://testserver"}


@pytest.fixture
def review(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("ENHANCER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ENHANCER_API_KEYS", TEST_API_KEY)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    reset_caches()
    from app.main import create_app

    with TestClient(create_app(), headers=API_HEADERS) as client:
        yield client
    reset_caches()


def _two_tellings() -> tuple[str, str, str]:
    first = add_record(
        source="TLDR AI", headline="Mistral releases Magistral, its first reasoning model",
        summary="Mistral AI released Magistral, an open reasoning model in two sizes.",
        entities=["Mistral AI", "Magistral"], key_topics=["Reasoning models"], date="2025-06-10T08:00:00Z",
    )  # fmt: skip
    second = add_record(
        source="The Batch", headline="Mistral's Magistral thinks step by step",
        summary="Mistral launched Magistral, reasoning models with an open-weights small version.",
        entities=["Mistral"], key_topics=["Reasoning model", "Open source"], date="2025-06-11T08:00:00Z",
    )  # fmt: skip
    other = add_record(
        source="Import AI", headline="Apple shows a paper on the limits of reasoning models",
        summary="Apple researchers argue large reasoning models collapse on harder puzzles.",
        entities=["Apple"], key_topics=["Reasoning models", "Research"], date="2025-06-10T09:00:00Z",
    )  # fmt: skip
    return first, second, other


def test_a_record_page_shows_its_story_and_the_story_page_splits_and_merges(review: TestClient) -> None:
    first, second, other = _two_tellings()
    story = record_story(first)
    assert record_story(second) == story and record_story(other) != story
    record_page = review.get(f"/review/records/{second}")
    assert f'href="/review/stories/{story}"' in record_page.text and "TLDR AI, The Batch" in record_page.text
    page = review.get(f"/review/stories/{story}")
    assert page.status_code == 200 and page.text.count("Not this story: split out") == 2

    assert review.post(f"/review/records/{second}/split").status_code == 403  # no Origin: refused
    split = review.post(f"/review/records/{second}/split", headers=HERE, follow_redirects=False)
    assert split.status_code == 303
    alone = record_story(second)
    assert alone != story and split.headers["location"] == f"/review/stories/{alone}?notice=split"
    alone_page = review.get(split.headers["location"]).text
    assert 'id="notice"' in alone_page and "Not this story" not in alone_page  # one record: nothing to split

    wrong = review.post(f"/review/stories/{story}/merge", data={"merged": "nope"}, headers=HERE)
    assert wrong.status_code == 422 and "no other story" in wrong.text
    merged = review.post(
        f"/review/stories/{story}/merge", data={"merged": alone}, headers=HERE, follow_redirects=False
    )
    assert merged.status_code == 303 and record_story(second) == story
    assert review.get(f"/review/stories/{alone}", follow_redirects=False).headers["location"] == (
        f"/review/stories/{story}"
    )


def test_the_topics_page_renames_and_merges(review: TestClient) -> None:
    _two_tellings()
    topics = {t["name"]: t["id"] for t in review.get("/v1/topics").json()["items"]}
    assert "Reasoning model" not in topics  # one entry for both spellings
    page = review.get("/review/topics")
    assert page.status_code == 200 and "Reasoning models" in page.text
    renamed = review.post(
        f"/review/topics/{topics['Research']}", data={"action": "rename", "name": "AI research"},
        headers=HERE, follow_redirects=False,
    )  # fmt: skip
    assert renamed.headers["location"] == "/review/topics?notice=renamed"
    clash = review.post(
        f"/review/topics/{topics['Research']}", data={"action": "rename", "name": "open-source"}, headers=HERE
    )
    assert "already has that name" in clash.text
    merged = review.post(
        f"/review/topics/{topics['Open source']}",
        data={"action": "merge", "into": topics["Reasoning models"]}, headers=HERE, follow_redirects=False,
    )  # fmt: skip
    assert merged.headers["location"] == "/review/topics?notice=merged"
    counts = {t["name"]: t["records"] for t in review.get("/v1/topics").json()["items"]}
    assert counts == {"Reasoning models": 3, "AI research": 1}


def test_the_search_box_finds_stories(review: TestClient) -> None:
    first, _, _ = _two_tellings()
    page = review.get("/review/search", params={"q": "Magistral"})
    assert page.status_code == 200 and f"/review/stories/{record_story(first)}" in page.text
    assert review.get("/review/search", params={"q": '" * NEAR( -'}).status_code in (200, 422)
    assert 'role="search"' in review.get("/review").text  # the box is on every page
