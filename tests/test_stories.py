"""Stories and the topic vocabulary (issue 16 items 1-2): records indexed through the real knowledge
layer (real MiniLM embeddings, SQLite and PostgreSQL), read and curated through the API."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.core.db import reset_caches, session_scope
from app.knowledge.stories import share_an_entity, story_link
from app.knowledge.topics import topic_key
from app.models import Record
from tests.conftest import API_HEADERS, TEST_API_KEY
from tests.knowledge_helpers import add_record, index_now, record_story

CHIP_DEAL = "https://openai.com/index/openai-and-broadcom-announce-strategic-collaboration/"


def test_a_link_names_its_story_without_tracking_and_a_front_page_names_none() -> None:
    assert story_link(CHIP_DEAL + "?utm_source=tldr&utm_medium=email") == story_link(
        "http://www.openai.com/index/openai-and-broadcom-announce-strategic-collaboration"
    )
    assert story_link("https://openai.com/") is None
    assert story_link("https://techcrunch.com/blog/") is None
    assert story_link("not a url") is None


def test_entities_match_across_spellings_but_not_across_companies() -> None:
    assert share_an_entity(["nvidia"], ["nvidia corp"])
    assert share_an_entity(["openai", "broadcom"], ["broadcom inc"])
    assert not share_an_entity(["openai"], ["anthropic", "google"])
    assert not share_an_entity([], ["openai"])


def test_topic_keys_fold_case_unicode_punctuation_and_plurals() -> None:
    assert topic_key("AI Chips") == topic_key("ai chip") == topic_key(" AI  chip! ") == "ai chip"
    assert topic_key("LLMs") == topic_key("LLM") == "llm"
    assert topic_key("OpenAI’s Models") == "openai model"
    assert topic_key("Robotics") == "robotics" and topic_key("News") == "news"
    assert topic_key("Ｆｕｌｌｗｉｄｔｈ") == "fullwidth"


@pytest.fixture
def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database_url: str | None) -> Iterator[TestClient]:
    monkeypatch.setenv("ENHANCER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ENHANCER_API_KEYS", TEST_API_KEY)
    if database_url:
        monkeypatch.setenv("DATABASE_URL", database_url)
    else:
        monkeypatch.delenv("DATABASE_URL", raising=False)
    reset_caches()
    from app.main import create_app

    with TestClient(create_app(), headers=API_HEADERS, raise_server_exceptions=False) as client:
        yield client
    reset_caches()


def _newsletters() -> dict[str, str]:
    """One chip deal told by three newsletters, another OpenAI story the same week, a Nvidia story."""
    return {
        "tldr": add_record(
            source="TLDR AI", headline="OpenAI and Broadcom announce a chip collaboration",
            summary="OpenAI will design custom AI accelerators with Broadcom, deploying 10 GW from 2026.",
            url=CHIP_DEAL + "?utm_source=tldrai", entities=["OpenAI", "Broadcom"],
            key_topics=["AI Chips", "OpenAI"], date="2025-10-13T08:00:00Z", relevance=8,
        ),
        "rundown": add_record(
            source="The Rundown AI", headline="OpenAI teams up with Broadcom on 10GW of custom silicon",
            summary="OpenAI and Broadcom signed a deal to build OpenAI-designed AI chips and racks.",
            url=None, entities=["OpenAI", "Broadcom Inc"], key_topics=["AI chip", "Semiconductors"],
            date="2025-10-14T06:00:00Z", relevance=9,
        ),
        "bens": add_record(
            source="Ben's Bites", headline="OpenAI's chip deal",
            summary="OpenAI partners with Broadcom to co-develop custom AI chips.",
            url="https://openai.com/index/openai-and-broadcom-announce-strategic-collaboration?ref=bensbites",
            entities=["OpenAI"], key_topics=["AI chips"], date="2025-10-14T09:00:00Z", relevance=7,
        ),
        "sora": add_record(
            source="TLDR AI", headline="OpenAI launches the Sora app on Android",
            summary="OpenAI released its Sora video generation app for Android users in the US and Canada.",
            url="https://openai.com/index/sora-android/", entities=["OpenAI", "Sora"],
            key_topics=["Video generation"], date="2025-10-14T08:00:00Z", relevance=5,
        ),
        "nvidia": add_record(
            source="Import AI", headline="Nvidia ships the DGX Spark desktop supercomputer",
            summary="Nvidia began selling DGX Spark, a small AI computer with a Grace Blackwell chip.",
            url="https://nvidianews.nvidia.com/news/dgx-spark", entities=["Nvidia"], key_topics=["AI Chips"],
            date="2025-10-15T08:00:00Z", relevance=6,
        ),
    }  # fmt: skip


def test_one_event_told_by_three_newsletters_is_one_story_with_the_merged_view(api: TestClient) -> None:
    ids = _newsletters()
    chip = record_story(ids["tldr"])
    assert chip is not None
    assert record_story(ids["rundown"]) == chip  # no link: similar text, shared entities
    assert record_story(ids["bens"]) == chip  # the same article link, other tracking
    assert record_story(ids["sora"]) != chip  # the same company, another event
    assert record_story(ids["nvidia"]) not in (chip, record_story(ids["sora"]))

    page = api.get("/v1/stories").json()
    assert [s["id"] for s in page["items"]][-1] == chip  # newest first: the chip deal broke first
    assert len(page["items"]) == 3 and page["next_cursor"] is None
    story = api.get(f"/v1/stories/{chip}").json()
    assert sorted(r["id"] for r in story["records"]) == sorted([ids["tldr"], ids["rundown"], ids["bens"]])
    assert story["sources"] == ["TLDR AI", "The Rundown AI", "Ben's Bites"]
    assert story["max_relevance"] == 9
    assert story["entities"][0] == "OpenAI" and "Broadcom" in story["entities"]
    assert story["links"] == [CHIP_DEAL]  # one article: tracking and spelling differences aside
    assert all("utm_" not in link and "ref=" not in link for link in story["links"])
    assert (
        story["summary"] == "OpenAI and Broadcom signed a deal to build OpenAI-designed AI chips and racks."
    )
    # The three spellings of one topic are one vocabulary entry, shared with the Nvidia record.
    assert story["topics"][0] == "AI Chips"
    topics = {t["name"]: t["records"] for t in api.get("/v1/topics").json()["items"]}
    assert topics["AI Chips"] == 4 and "AI chip" not in topics and "AI chips" not in topics


def test_stories_filter_and_page_by_cursor(api: TestClient) -> None:
    ids = _newsletters()

    def listed(**params: object) -> list[str]:
        return [s["id"] for s in api.get("/v1/stories", params=params).json()["items"]]

    chip, nvidia, sora = record_story(ids["tldr"]), record_story(ids["nvidia"]), record_story(ids["sora"])
    assert set(listed(topic="ai chip")) == {chip, nvidia}  # any spelling of the entry
    assert listed(entity="broadcom") == [chip]
    assert set(listed(min_relevance=7)) == {chip}
    assert set(listed(since="2025-10-15T00:00:00Z")) == {nvidia}
    assert set(listed(until="2025-10-14T00:00:00Z")) == {chip}
    seen, cursor = [], None
    while True:
        page = api.get("/v1/stories", params={"limit": 1, **({"cursor": cursor} if cursor else {})}).json()
        seen += [s["id"] for s in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [nvidia, sora, chip]
    for params, message in (
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"min_relevance": 11}, "min_relevance"),
        ({"since": "2025-10-16T00:00:00Z", "until": "2025-10-15T00:00:00Z"}, "since must be before until"),
    ):
        response = api.get("/v1/stories", params=params)
        assert response.status_code == 422 and message in response.text, response.text
    assert api.get("/v1/stories/nope").status_code == 404
    assert TestClient(api.app).get("/v1/stories").status_code == 401  # the API key is required


def test_a_person_splits_a_record_out_and_merges_stories_and_both_decisions_stay(api: TestClient) -> None:
    ids = _newsletters()
    chip = record_story(ids["tldr"])
    split = api.post("/v1/stories/split", json={"record_id": ids["bens"]})
    assert split.status_code == 201, split.text
    alone = split.json()["id"]
    assert [r["id"] for r in split.json()["records"]] == [ids["bens"]]
    index_now(ids["bens"])  # indexed again (a correction does this): it stays where the person put it
    assert record_story(ids["bens"]) == alone
    assert len(api.get(f"/v1/stories/{chip}").json()["records"]) == 2

    sora = record_story(ids["sora"])
    merged = api.post("/v1/stories/merge", json={"into": chip, "merged": sora})
    assert merged.status_code == 200, merged.text
    assert ids["sora"] in [r["id"] for r in merged.json()["records"]]
    index_now(ids["sora"])
    assert record_story(ids["sora"]) == chip
    redirect = api.get(f"/v1/stories/{sora}", follow_redirects=False)
    assert redirect.status_code == 308 and redirect.headers["location"] == f"/v1/stories/{chip}"
    assert sora not in [s["id"] for s in api.get("/v1/stories").json()["items"]]
    assert api.post("/v1/stories/merge", json={"into": chip, "merged": chip}).status_code == 422
    assert api.post("/v1/stories/split", json={"record_id": "nope"}).status_code == 404


def test_topics_rename_and_merge_apply_to_every_record(api: TestClient) -> None:
    ids = _newsletters()
    topics = {t["name"]: t for t in api.get("/v1/topics").json()["items"]}
    chips, semis = topics["AI Chips"], topics["Semiconductors"]
    renamed = api.patch(f"/v1/topics/{chips['id']}", json={"name": "AI accelerators"})
    assert renamed.status_code == 200 and renamed.json()["name"] == "AI accelerators", renamed.text
    assert api.patch(f"/v1/topics/{chips['id']}", json={"name": "semiconductors"}).status_code == 409
    merged = api.post("/v1/topics/merge", json={"into": chips["id"], "merged": semis["id"]})
    assert merged.status_code == 200, merged.text
    assert merged.json()["topic"]["records"] == 4  # the Rundown record had both: counted once
    names = {t["name"] for t in api.get("/v1/topics").json()["items"]}
    assert "Semiconductors" not in names and "AI accelerators" in names
    story = api.get(f"/v1/stories/{record_story(ids['rundown'])}").json()
    assert story["topics"][0] == "AI accelerators"
    # The model's old spellings still land on the renamed, merged entry.
    later = add_record(
        source="The Neuron", headline="Broadcom stock jumps after the OpenAI deal",
        summary="Broadcom shares rose 10% after it agreed to build custom chips for OpenAI.",
        entities=["Broadcom"], key_topics=["AI chips", "semiconductors"], date="2025-10-20T08:00:00Z",
    )  # fmt: skip
    with session_scope() as session:
        record = session.get(Record, later)
        assert record is not None
    assert {t["name"]: t["records"] for t in api.get("/v1/topics").json()["items"]}["AI accelerators"] == 5
    assert api.get("/v1/topics", params={"prefix": "ai acc"}).json()["items"][0]["name"] == "AI accelerators"
    assert api.patch("/v1/topics/nope", json={"name": "x y"}).status_code == 404


def test_a_record_stored_but_not_indexed_is_picked_up_by_the_backlog(api: TestClient) -> None:
    from worker.indexing import BACKLOG_AFTER, index_backlog

    record_id = add_record(
        source="TLDR AI", headline="Anthropic opens an office in Tokyo",
        summary="Anthropic opened its first Asia-Pacific office in Tokyo.", entities=["Anthropic"],
        index=False,
    )  # fmt: skip
    assert record_story(record_id) is None
    with session_scope() as session:  # stored a while ago: a crash came between storing and indexing
        record = session.get(Record, record_id)
        assert record is not None
        record.created_at = record.created_at - BACKLOG_AFTER * 2
    assert index_backlog() == 1
    assert record_story(record_id) is not None
    assert index_backlog() == 0  # indexed once


@pytest.mark.parametrize("database_url", [None])  # SQLite's one write lock; PostgreSQL locks rows
def test_the_worker_embeds_a_record_before_it_takes_the_write_lock(
    api: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The API's submissions wait on SQLite's one write lock: the worker must not hold it while
    MiniLM runs (a second connection takes the lock at once during every embedding call)."""
    import sqlite3

    import numpy as np

    import worker.indexing
    from app.core.db import get_engine
    from app.knowledge.embeddings import from_bytes, get_minilm
    from app.knowledge.stories import embedding_text

    minilm, database = get_minilm(), get_engine().url.database
    lock_free: list[bool] = []

    class LockProbe:
        def vectors(self, texts: list[str]) -> np.ndarray:
            probe = sqlite3.connect(str(database), timeout=0, isolation_level=None)
            try:
                probe.execute("BEGIN IMMEDIATE")
                probe.execute("ROLLBACK")
                lock_free.append(True)
            except sqlite3.OperationalError:  # "database is locked"
                lock_free.append(False)
            finally:
                probe.close()
            return minilm.vectors(texts)

    monkeypatch.setattr(worker.indexing, "embedder", LockProbe)
    summary = "Anthropic opened its first Asia-Pacific office in Tokyo."
    record_id = add_record(
        source="TLDR AI", headline="Anthropic opens an office in Tokyo", summary=summary,
        entities=["Anthropic"], key_topics=["Expansion", "AI companies"], content="Tokyo office.",
        index=False,
    )  # fmt: skip
    assert worker.indexing.index_records([record_id]) == 1
    assert lock_free == [True]  # one batch for the record and its topics, with the lock free
    with session_scope() as session:
        record = session.get(Record, record_id)
        assert record is not None and record.story_id is not None
        text = embedding_text(
            {"headline": "Anthropic opens an office in Tokyo", "summary": summary}, "Tokyo office."
        )
        assert record.embedding is not None
        assert np.allclose(from_bytes(record.embedding), minilm.vectors([text])[0], atol=1e-5)


def test_grouping_keeps_its_precision_and_recall_on_the_labelled_pairs() -> None:
    """tests/data/story_pairs.jsonl: 120 hand-labelled pairs, most negatives one company's two events
    in one week. `python bench/story_pairs.py` prints the same numbers, per kind and over a sweep."""
    from app.knowledge.stories import GROUPING
    from bench.story_pairs import evidence_pairs, load_pairs, pair_scores

    pairs = load_pairs()
    scores = pair_scores(pairs, evidence_pairs(pairs), GROUPING)
    assert scores["precision"] >= 0.95 and scores["recall"] >= 0.85, scores
