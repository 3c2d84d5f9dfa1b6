"""Generated records inserted straight into the database (bulk, seconds for thousands).

Every generated metadata object validates against NewsMetadata, and the text carries Markdown
and CSV troublemakers (headings, brackets, pipes, quotes, newlines, numbered-list starts).
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert

from app.contract import CATEGORIES, NewsMetadata, derive_fields
from app.core.config import get_settings
from app.core.db import get_engine
from app.core.migrate import upgrade_database
from app.crud import content_sha256
from app.models import Item, Job, JobStatus, Record, new_id

SOURCES = (
    "The Batch",
    "Import AI",
    "TLDR AI",
    "Ben's Bites",
    "The Rundown",
    "Last Week in AI",
    "AlphaSignal",
)
COMPANIES = (
    "OpenAI",
    "Anthropic",
    "Google DeepMind",
    "Meta",
    "Mistral AI",
    "Hugging Face",
    "NVIDIA",
    "Intel",
)
TOPICS = (
    "model release",
    "open source",
    "AI safety",
    "GPU supply",
    "agents",
    "benchmarks",
    "regulation",
    "RAG",
)
TRICKY = (
    "# not a heading",
    "1. not a list",
    "[not](a link)",
    'a | pipe, a "quote", a comma',
    "line one\nline two",
    "<b>html</b> & `code` *stars* _under_",
    "- dash start",
    "Ünïcödé — “quotes” 🚀",
)
START = datetime(2025, 1, 6, tzinfo=UTC)  # a Monday


def make_metadata(rng: random.Random, *, source: str, headline: str, date: datetime, url: str, content: str,
                  summary_words: int = 20) -> dict[str, Any]:  # fmt: skip
    derived = derive_fields(content=content, links=[url])
    words = " ".join(
        rng.choice(("model", "chip", "agent", "launch", "paper", "data", "policy")) for _ in range(80)
    )
    summary = f"{rng.choice(COMPANIES)} {rng.choice(TRICKY)} {words}"
    summary = " ".join(summary.split(" ")[:summary_words])[:300]
    metadata = NewsMetadata(
        summary=summary if len(summary) >= 10 else summary + " happened.",
        key_topics=rng.sample(TOPICS, rng.randint(1, 5)),
        entities=rng.sample(COMPANIES, rng.randint(0, 4)),
        categories=rng.sample(CATEGORIES, rng.randint(1, 3)),
        sentiment=rng.choice(("positive", "neutral", "negative", "mixed")),
        urgency_level=rng.choice(("low", "medium", "high")),
        relevance_score=rng.randint(1, 10),
        action_items=[f"Read {rng.choice(TRICKY)[:60]}" for _ in range(rng.randint(0, 3))],
        source=source,
        headline=headline,
        date=date,
        url=url,
        links=derived.links,
        content_length=derived.content_length,
        link_count=derived.link_count,
        word_count=derived.word_count,
        reading_time_minutes=derived.reading_time_minutes,
        has_html=derived.has_html,
    )
    return metadata.model_dump(mode="json")


def insert_records(
    count: int,
    *,
    weeks: int = 26,
    sources: tuple[str, ...] = SOURCES,
    seed: int = 7,
    summary_words: int = 20,
    batch: int = 1000,
) -> list[str]:
    """Insert `count` items, succeeded jobs and records spread over `weeks`; returns record ids."""
    settings = get_settings()
    settings.ensure_dirs()
    upgrade_database(settings.sqlalchemy_url)
    rng = random.Random(seed)
    record_ids: list[str] = []
    items: list[dict[str, Any]] = []
    jobs: list[dict[str, Any]] = []
    records: list[dict[str, Any]] = []
    engine = get_engine()
    now = datetime.now(UTC)

    def flush() -> None:
        with engine.begin() as connection:
            connection.execute(insert(Item), items)
            connection.execute(insert(Job), jobs)
            connection.execute(insert(Record), records)
        items.clear()
        jobs.clear()
        records.clear()

    for index in range(count):
        source = sources[index % len(sources)]
        date = START + timedelta(seconds=rng.randrange(weeks * 7 * 86400))
        headline = f"Item {index}: {rng.choice(COMPANIES)} {rng.choice(TRICKY)}"
        url = f"https://example.com/news/{index}?utm_source=newsletter&id={index}"
        content = f"{headline}\n\n{rng.choice(TRICKY)} More text about {rng.choice(TOPICS)}. {url}"
        item_id, job_id, record_id = new_id(), new_id(), new_id()
        items.append(
            {
                "id": item_id, "source": source, "subject": headline, "sender": "digest@example.com",
                "date": date, "message_id": f"<gen-{index}@example.com>", "content": content,
                "content_sha256": content_sha256(content), "url": url, "links": [url], "has_html": False,
                "created_at": now,
            }
        )  # fmt: skip
        jobs.append(
            {
                "id": job_id, "item_id": item_id, "status": JobStatus.succeeded.value, "attempts": 1,
                "created_at": now, "updated_at": now, "finished_at": now,
            }
        )  # fmt: skip
        data = make_metadata(
            rng,
            source=source,
            headline=headline,
            date=date,
            url=url,
            content=content,
            summary_words=summary_words,
        )
        records.append(
            {
                "id": record_id, "job_id": job_id, "item_id": item_id, "source": source, "date": date,
                "data": data, "model_version_id": "generated", "generation_seconds": round(rng.random(), 3),
                "created_at": now, "reviewed": False, "corrected_data": None, "reviewed_at": None,
            }
        )  # fmt: skip
        record_ids.append(record_id)
        if len(records) >= batch:
            flush()
    if records:
        flush()
    return record_ids


def insert_seed_records(requests: list[dict[str, Any]], annotations: list[dict[str, Any]],
                        sources: tuple[str, ...] = ("TLDR AI", "The Batch")) -> list[str]:  # fmt: skip
    """Readable records from seed items (for the review page): labels from the seed annotations,
    the rest plausible; sources alternate so that filtering by source means something."""
    settings = get_settings()
    settings.ensure_dirs()
    upgrade_database(settings.sqlalchemy_url)
    now = datetime.now(UTC)
    ids: list[str] = []
    with get_engine().begin() as connection:
        for index, (request, annotation) in enumerate(zip(requests, annotations, strict=True)):
            source = sources[index % len(sources)]
            date = START + timedelta(days=index, hours=9)
            content, url = request["content"], request.get("url")
            derived = derive_fields(content=content, links=[url] if url else [])
            summary = (annotation.get("summary") or content)[:300]
            metadata = NewsMetadata(
                summary=summary if len(summary) >= 10 else f"{request['subject']} (news item)",
                key_topics=[t for t in annotation.get("topics", []) if 2 <= len(t) <= 48][:5] or ["AI news"],
                entities=[c for c in annotation.get("companies", []) if 2 <= len(c) <= 64][:8],
                categories=["product_launch"],
                sentiment="neutral",
                urgency_level="medium",
                relevance_score=annotation.get("relevance_score") or 5,
                action_items=[],
                source=source,
                headline=request["subject"],
                date=date,
                url=url,
                links=derived.links,
                content_length=derived.content_length,
                link_count=derived.link_count,
                word_count=derived.word_count,
                reading_time_minutes=derived.reading_time_minutes,
                has_html=derived.has_html,
            ).model_dump(mode="json")
            item_id, job_id, record_id = new_id(), new_id(), new_id()
            connection.execute(insert(Item), [{
                "id": item_id, "source": source, "subject": request["subject"], "sender": request["from"],
                "date": date, "message_id": request["message_id"], "content": content,
                "content_sha256": content_sha256(content), "url": url, "links": [url] if url else [],
                "has_html": False, "created_at": now,
            }])  # fmt: skip
            connection.execute(insert(Job), [{
                "id": job_id, "item_id": item_id, "status": JobStatus.succeeded.value, "attempts": 1,
                "created_at": now, "updated_at": now, "finished_at": now,
            }])  # fmt: skip
            connection.execute(insert(Record), [{
                "id": record_id, "job_id": job_id, "item_id": item_id, "source": source, "date": date,
                "data": metadata, "model_version_id": "seed", "generation_seconds": 1.0, "created_at": now,
                "reviewed": False, "corrected_data": None, "reviewed_at": None,
            }])  # fmt: skip
            ids.append(record_id)
    return ids
