"""Search over the records (issue 16 item 3): app/knowledge/search.py and GET /v1/search, on real SQLite
(FTS5) and PostgreSQL (tsvector), with real all-MiniLM-L6-v2 embeddings."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, select, update

from app.core.config import get_settings
from app.core.db import read_session_scope, reset_caches, session_scope
from app.core.migrate import upgrade_database
from app.knowledge.embeddings import get_minilm, to_bytes
from app.knowledge.search import (
    MAX_QUERY_CHARS,
    delete_document,
    index_document,
    parse_query,
    reset_vector_indexes,
    search,
    text_candidates,
)
from app.models import Item, Job, JobStatus, Record, Story, new_id
from tests.conftest import API_HEADERS, TEST_API_KEY


@dataclass(frozen=True)
class Doc:
    key: str
    headline: str
    summary: str
    topics: tuple[str, ...]
    entities: tuple[str, ...]
    body: str
    story: str | None = None
    day: int = 0


DOCS = (
    Doc(
        "gpu",
        "Nvidia unveils a new GPU for data centers",
        "The Blackwell chip targets AI training clusters in large server farms.",
        ("AI chips", "hardware"),
        ("NVIDIA", "Blackwell"),
        "At its keynote in San Jose the company showed racks of accelerators for hyperscalers.",
        story="chips",
        day=1,
    ),
    Doc(
        "gpu-ships",
        "Blackwell accelerators start shipping to cloud providers",
        "Microsoft and Oracle receive the first racks of the new chips.",
        ("AI chips", "cloud"),
        ("NVIDIA", "Microsoft", "Oracle"),
        "Supply remains tight through the next quarter, analysts said.",
        story="chips",
        day=3,
    ),
    Doc(
        "gpt",
        "OpenAI releases GPT-5 to ChatGPT users",
        "The new model improves reasoning and coding and is rolling out to paying users first.",
        ("model release",),
        ("OpenAI", "ChatGPT"),
        "Developers can call it through the API from today.",
        story="gpt5",
        day=5,
    ),
    Doc(
        "eu",
        "EU lawmakers agree on an enforcement timeline for the AI Act",
        "Rules for general-purpose models apply from August, with fines for violations.",
        ("AI regulation",),
        ("European Commission",),
        "Member states must name their supervising authorities within a year.",
        day=8,
    ),
    Doc(
        "funding",
        "Anthropic raises $13 billion in a new round",
        "The Claude maker is now valued at $183 billion after the raise.",
        ("funding",),
        ("Anthropic", "Iconiq"),
        "The round was led by a growth investor and several sovereign funds joined.",
        day=12,
    ),
    Doc(
        "protein",
        "AlphaFold predicts the structure of every known protein",
        "DeepMind's model gives biologists structures for 200 million proteins.",
        ("biology", "research"),
        ("Google DeepMind",),
        "The predictions rival crystallography for many families of enzymes.",
        day=15,
    ),
    Doc(
        "robots",
        "Hugging Face launches an open-source robotics library",
        "LeRobot brings pretrained policies and datasets for low-cost robot arms.",
        ("robotics", "open source"),
        ("Hugging Face", "LeRobot"),
        "The library works with a 3D-printed arm that costs about a hundred dollars.",
        day=20,
    ),
)
START = datetime(2025, 6, 2, 9, 0, tzinfo=UTC)


@dataclass
class Archive:
    ids: dict[str, str]  # doc key -> record id
    stories: dict[str, str]  # story key -> story id

    def key_of(self, record_id: str) -> str:
        return next(key for key, value in self.ids.items() if value == record_id)


def _vector(headline: str, summary: str) -> bytes:
    return to_bytes(get_minilm().vectors([f"{headline}. {summary}"])[0])


def _index(session: Any, record_id: str, doc: Doc) -> None:
    index_document(
        session,
        record_id=record_id,
        headline=doc.headline,
        summary=doc.summary,
        topics=list(doc.topics),
        entities=list(doc.entities),
        body=doc.body,
    )


def add_record(session: Any, doc: Doc, *, story_id: str | None = None) -> str:
    """An item, its succeeded job and its indexed record (embedding and full-text row), as the worker
    leaves them."""
    date = START + timedelta(days=doc.day)
    item = Item(
        source="TLDR AI", subject=doc.headline, sender="news@example.com", date=date,
        message_id=f"<{new_id()}@example.com>", content=doc.body, content_sha256=new_id(),
        url=f"https://example.com/{doc.key}",
    )  # fmt: skip
    session.add(item)
    session.flush()
    job = Job(item_id=item.id, status=JobStatus.succeeded.value, attempts=1)
    session.add(job)
    session.flush()
    record = Record(
        job_id=job.id, item_id=item.id, source="TLDR AI", date=date, story_id=story_id,
        data={
            "headline": doc.headline, "summary": doc.summary, "key_topics": list(doc.topics),
            "entities": list(doc.entities), "url": f"https://example.com/{doc.key}", "source": "TLDR AI",
        },
        embedding=_vector(doc.headline, doc.summary), indexed_at=datetime.now(UTC),
    )  # fmt: skip
    session.add(record)
    session.flush()
    _index(session, record.id, doc)
    return record.id


@pytest.fixture
def archive(tmp_path: Any, monkeypatch: pytest.MonkeyPatch, database_url: str | None) -> Iterator[Archive]:
    monkeypatch.setenv("ENHANCER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ENHANCER_API_KEYS", TEST_API_KEY)
    if database_url:
        monkeypatch.setenv("DATABASE_URL", database_url)
    else:
        monkeypatch.delenv("DATABASE_URL", raising=False)
    reset_caches()
    reset_vector_indexes()
    settings = get_settings()
    settings.ensure_dirs()
    upgrade_database(settings.sqlalchemy_url)
    ids: dict[str, str] = {}
    stories: dict[str, str] = {}
    with session_scope() as session:
        for key, title in (("chips", "Nvidia's Blackwell GPUs"), ("gpt5", "GPT-5 launch")):
            story = Story(title=title, first_date=START, last_date=START, record_count=0)
            session.add(story)
            session.flush()
            stories[key] = story.id
        for doc in DOCS:
            ids[doc.key] = add_record(session, doc, story_id=stories.get(doc.story or ""))
    yield Archive(ids=ids, stories=stories)
    reset_vector_indexes()
    reset_caches()


def _search(q: str, **options: Any) -> Any:
    with read_session_scope() as session:
        return search(session, q=q, **options)


def _keys(archive: Archive, result: Any) -> list[str]:
    return [archive.key_of(hit.record_id) for hit in result.hits]


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("AlphaFold", "protein"),  # headline
        ("iconiq", "funding"),  # entity only
        ("regulation", "eu"),  # topic only
        ("crystallography", "protein"),  # body only
        ("hyperscalers", "gpu"),  # body only
        ("Blackwell training clusters", "gpu"),  # three words, one record has all
        ("open source robotics", "robots"),
        ("lawmaker", "eu"),  # stemmed: lawmakers
        ("Anthrop", "funding"),  # prefix of the last word
    ],
)
def test_exact_words_find_the_record_through_the_text_channel(
    archive: Archive, q: str, expected: str
) -> None:
    lexical = _search(q, semantic=False)
    assert not lexical.semantic
    assert lexical.hits and _keys(archive, lexical)[0] == expected, (q, _keys(archive, lexical))
    assert all(hit.channel == "text" and hit.similarity is None for hit in lexical.hits)
    assert lexical.hits[0].text_rank == 1
    both = _search(q)
    assert both.semantic and _keys(archive, both)[0] == expected


def test_headline_outranks_body(archive: Archive) -> None:
    """bm25/ts_rank weights: a word in a headline beats the same word in another record's body."""
    with session_scope() as session:
        _index(session, archive.ids["gpt"], replace(DOCS[2], body="alphafold " * 3))
    keys = _keys(archive, _search("AlphaFold", semantic=False))
    assert keys[:2] == ["protein", "gpt"]


def test_a_common_word_is_ranked_among_its_newest_matches(archive: Archive) -> None:
    """MAX_RANKED bounds the cost of a word that many records have: only its newest matches are
    ranked. "AI" is in the gpu (day 1), gpu-ships (day 3) and eu (day 8) records."""
    with read_session_scope() as session:
        every = text_candidates(session, parse_query("AI"), count=10)
        newest = text_candidates(session, parse_query("AI"), count=2, ranked=2)
    assert {archive.key_of(i) for i in every} == {"gpu", "gpu-ships", "eu"}
    assert {archive.key_of(i) for i in newest} == {"gpu-ships", "eu"}


def test_a_paraphrase_with_no_shared_word_is_found_by_meaning(archive: Archive) -> None:
    q = "graphics processor for datacenters"
    assert _search(q, semantic=False).hits == []  # no record has these words
    result = _search(q)
    top = result.hits[0]
    assert archive.key_of(top.record_id) == "gpu", _keys(archive, result)
    assert top.channel == "semantic" and top.similarity is not None and top.similarity >= 0.3
    assert top.text_rank is None
    # Another paraphrase, for another record.
    assert _keys(archive, _search("startup gets billions from investors"))[0] == "funding"


def test_a_word_in_both_channels_is_marked_both(archive: Archive) -> None:
    hit = _search("AlphaFold protein structure").hits[0]
    assert archive.key_of(hit.record_id) == "protein" and hit.channel == "both"
    assert hit.text_rank == 1 and hit.similarity is not None


def test_nonsense_returns_no_random_records(archive: Archive) -> None:
    assert _search("zxqv plorth wumbly").hits == []
    assert _search("?!.,;:").hits == []


def test_hits_carry_record_fields_and_stories_in_rank_order(archive: Archive) -> None:
    result = _search("Blackwell GPU racks", limit=5)
    keys = _keys(archive, result)
    assert set(keys[:2]) == {"gpu", "gpu-ships"}
    scores = [hit.score for hit in result.hits]
    assert scores == sorted(scores, reverse=True)
    first = result.hits[0]
    assert first.story_id == archive.stories["chips"] and first.source == "TLDR AI"
    assert first.url == f"https://example.com/{archive.key_of(first.record_id)}"
    assert first.date is not None and first.date.tzinfo is not None
    story = result.stories[0]
    assert story.story_id == archive.stories["chips"] and story.title == "Nvidia's Blackwell GPUs"
    assert {hit.record_id for hit in story.records} == {archive.ids["gpu"], archive.ids["gpu-ships"]}
    assert story.score == first.score
    # Each story once, in the order of its best hit; records without a story are in hits only.
    story_ids = [s.story_id for s in result.stories]
    assert len(story_ids) == len(set(story_ids))
    best = [next(h.story_id for h in result.hits if h.story_id == s) for s in story_ids]
    assert best == story_ids
    assert len(_search("Blackwell", limit=1).hits) == 1


def test_a_correction_is_shown_and_a_reindexed_record_is_found_by_its_new_words(archive: Archive) -> None:
    record_id = archive.ids["eu"]
    new = Doc("eu", "Brussels delays the AI Act's rules on chatbots", "Quokka clause postponed to 2027.",
              ("governance",), ("Zephyrion",), "Parliament voted on the marsupial amendment.")  # fmt: skip
    with session_scope() as session:
        session.execute(
            update(Record)
            .where(Record.id == record_id)
            .values(
                corrected_data={"summary": new.summary, "key_topics": list(new.topics)},
                embedding=_vector(new.headline, new.summary),
                indexed_at=datetime.now(UTC) + timedelta(seconds=1),
            )
        )
        _index(session, record_id, new)
    for q in ("quokka", "zephyrion", "marsupial", "governance"):
        assert [h.record_id for h in _search(q, semantic=False).hits] == [record_id], q
    for q in ("lawmakers", "enforcement", "supervising"):
        assert record_id not in [h.record_id for h in _search(q, semantic=False).hits], q
    hit = _search("quokka").hits[0]
    assert hit.record_id == record_id and hit.summary == new.summary  # the correction's summary
    # The vector index saw the new embedding (incremental refresh, same record count).
    assert _search("postponed chatbot rules in Brussels").hits[0].record_id == record_id

    with session_scope() as session:
        delete_document(session, record_id=record_id)
    assert _search("quokka", semantic=False).hits == []


def test_new_and_deleted_records_reach_the_vector_index(archive: Archive) -> None:
    assert _search("volcano eruption in Iceland").hits == []
    summary = "Lava flows reached the town's outskirts overnight."
    doc = Doc("volcano", "Volcano erupts near Grindavik", summary, ("geology",), ("Iceland",),
              "The lagoon was evacuated.", day=21)  # fmt: skip
    with session_scope() as session:
        new_id_ = add_record(session, doc)
    assert _search("volcano eruption in Iceland").hits[0].record_id == new_id_
    # A deleted record (its full-text row gone with it) no longer comes back from either channel.
    with session_scope() as session:
        delete_document(session, record_id=new_id_)
        session.execute(delete(Record).where(Record.id == new_id_))
    assert new_id_ not in [h.record_id for h in _search("volcano eruption in Iceland").hits]
    assert _search("Grindavik", semantic=False).hits == []


def test_since_and_until_filter_both_channels(archive: Archive) -> None:
    since = START + timedelta(days=2)
    until = START + timedelta(days=10)
    result = _search("Blackwell GPU chips", since=since, until=until)
    keys = _keys(archive, result)
    assert "gpu-ships" in keys and "gpu" not in keys
    with read_session_scope() as session:
        dates = dict(session.execute(select(Record.id, Record.date)).all())
    naive = [dates[h.record_id].replace(tzinfo=None) for h in result.hits]
    assert all(since.replace(tzinfo=None) <= date < until.replace(tzinfo=None) for date in naive)
    with pytest.raises(ValueError, match="since must be before until"):
        _search("chips", since=until, until=since)


HOSTILE = [
    '"',
    '""',
    "*",
    "AND",
    "OR",
    "NOT",
    "NEAR(",
    'NEAR("a" "b", 2)',
    "-",
    "- nvidia",
    "title:",
    "headline:nvidia",
    "{headline summary}: gpu",
    "gpu^",
    "(",
    ")",
    "'",
    "''; DROP TABLE records; --",
    "a & b | !c <-> d:*",
    "\\",
    "🚀🔥",
    "GPU 🚀",
    "?!.,;:",
    "\x00nvidia\x00",
    "x" * MAX_QUERY_CHARS,
    "nvidia " * 70,
    "Ünïcödé — “quotes” ²",
    "日本語のニュース",
]


def test_hostile_queries_never_fail(archive: Archive) -> None:
    for q in HOSTILE:
        for semantic in (False, True):
            result = _search(q, semantic=semantic)
            assert isinstance(result.hits, list), q
    assert _keys(archive, _search("- nvidia", semantic=False))[:1] in (["gpu"], ["gpu-ships"])


def test_query_parsing() -> None:
    for q in ("", "   ", "\n\t"):
        with pytest.raises(ValueError, match="q must not be empty"):
            parse_query(q)
    with pytest.raises(ValueError, match="at most 500 characters"):
        parse_query("x" * (MAX_QUERY_CHARS + 1))
    parsed = parse_query('  NEAR("Nvidia" -GPU*) title: ')
    assert parsed.terms == ("near", "nvidia", "gpu", "title") and not parsed.prefix
    assert parsed.fts5() == '"near" "nvidia" "gpu" "title"'
    typing = parse_query("graphics proc")
    assert typing.fts5() == '"graphics" "proc"' and typing.fts5(prefix=True) == '"graphics" "proc"*'
    assert typing.attempts() == [(False, False), (False, True), (True, False)]
    assert typing.fts5(any_term=True) == '"graphics" OR "proc"'
    assert parse_query("openai gpt").tsquery(prefix=True) == "'openai' & 'gpt':*"
    assert parse_query("openai gpt ").attempts() == [(False, False), (True, False)]  # no prefix
    # Stop words are left out, unless there is nothing else.
    assert parse_query("the gpu for").terms == ("gpu",)
    assert parse_query("the for").terms == ("the", "for")
    assert parse_query("?!").terms == ()
    assert len(parse_query("word " * 100).terms) == 32


@pytest.fixture
def client(archive: Archive) -> Iterator[TestClient]:
    from app.main import create_app

    with TestClient(create_app(), headers=API_HEADERS, raise_server_exceptions=False) as test_client:
        yield test_client


def test_route_searches_and_names_stories(archive: Archive, client: TestClient) -> None:
    response = client.get("/v1/search", params={"q": "Blackwell GPU", "limit": 3})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"query", "semantic", "hits", "stories"} and body["semantic"] is True
    assert len(body["hits"]) <= 3
    hit = body["hits"][0]
    assert hit["record_id"] in (archive.ids["gpu"], archive.ids["gpu-ships"])
    assert hit["story_id"] == archive.stories["chips"] and hit["channel"] == "both"
    assert hit["record_url"] == f"/v1/records/{hit['record_id']}"
    assert set(hit) >= {"score", "headline", "summary", "source", "date", "url"}
    assert body["stories"][0]["id"] == archive.stories["chips"]
    assert body["stories"][0]["title"] == "Nvidia's Blackwell GPUs"
    lexical = client.get("/v1/search", params={"q": "crystallography", "semantic": "false"}).json()
    assert lexical["semantic"] is False and [h["record_id"] for h in lexical["hits"]] == [
        archive.ids["protein"]
    ]
    dated = client.get("/v1/search", params={"q": "Blackwell", "since": "2025-06-04T00:00:00Z"}).json()
    assert [h["record_id"] for h in dated["hits"]] == [archive.ids["gpu-ships"]]


def test_route_rejects_bad_queries_with_a_message(archive: Archive, client: TestClient) -> None:
    for params, message in (
        ({"q": ""}, "q must not be empty"),
        ({"q": "   "}, "q must not be empty"),
        ({"q": "x" * 501}, "q must be at most 500 characters"),
        ({}, "q: Field required"),
        ({"q": "gpu", "limit": 0}, "limit"),
        ({"q": "gpu", "limit": 101}, "limit"),
        ({"q": "gpu", "since": "2025-07-01T00:00:00Z", "until": "2025-06-01T00:00:00Z"}, "since must be"),
    ):
        response = client.get("/v1/search", params=params)
        assert response.status_code == 422, (params, response.text)
        assert message in response.json()["message"], (params, response.json())


def test_route_hostile_queries_are_never_a_500(archive: Archive, client: TestClient) -> None:
    for q in HOSTILE:
        response = client.get("/v1/search", params={"q": q})
        assert response.status_code == 200, (q, response.text)
    assert client.get("/v1/search", params={"q": "%00%27"}).status_code == 200


def test_route_needs_the_api_key(archive: Archive, client: TestClient) -> None:
    assert client.get("/v1/search", params={"q": "gpu"}, headers={"X-API-Key": ""}).status_code == 401
    assert client.get("/v1/search", params={"q": "gpu"}, headers={"X-API-Key": "wrong"}).status_code == 403
    spec = client.get("/openapi.json").json()
    assert "/v1/search" in spec["paths"]
