"""Hand-built records for the digest and feed tests, indexed as the worker indexes them.

Each record is an Item, a succeeded Job and a Record inserted directly, then
`app.knowledge.indexer.index_record` with the real MiniLM embedder: canonical topics, the story
grouping and the full-text row are the production ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from app.core.config import get_settings
from app.core.db import reset_caches, session_scope
from app.core.migrate import upgrade_database
from app.crud import content_sha256
from app.knowledge.embeddings import get_minilm
from app.knowledge.indexer import index_record
from app.models import Item, Job, JobStatus, Record, new_id
from tests.conftest import TEST_API_KEY


@dataclass(frozen=True)
class News:
    source: str
    headline: str
    summary: str
    url: str | None
    when: datetime
    topics: list[str] = field(default_factory=list)
    entities: list[str] = field(default_factory=list)
    relevance: int = 5


def day(d: int, hour: int = 9, month: int = 1) -> datetime:
    return datetime(2025, month, d, hour, tzinfo=UTC)


def metadata(news: News) -> dict[str, Any]:
    return {
        "summary": news.summary,
        "key_topics": news.topics,
        "entities": news.entities,
        "categories": ["product_launch"],
        "sentiment": "neutral",
        "urgency_level": "medium",
        "relevance_score": news.relevance,
        "action_items": [],
        "source": news.source,
        "headline": news.headline,
        "date": news.when.isoformat(),
        "url": news.url,
        "links": [news.url] if news.url else [],
        "content_length": 100,
        "link_count": 1 if news.url else 0,
        "word_count": 20,
        "reading_time_minutes": 1,
        "has_html": False,
    }


class CachedMiniLM:
    """The real MiniLM, each distinct text embedded once per test session (alone, as the worker
    embeds it): the tests index the same records many times, on a CPU other tests share."""

    _vectors: dict[str, Any] = {}  # noqa: RUF012 (one cache for the session)

    def vectors(self, texts: list[str]) -> Any:
        import numpy as np

        for text in texts:
            if text not in self._vectors:
                self._vectors[text] = get_minilm().vectors([text])[0]
        return np.stack([self._vectors[t] for t in texts]) if texts else get_minilm().vectors([])


def add_records(news: list[News]) -> list[str]:
    """Store and index each, in order (grouping compares a record with those indexed before it)."""
    embedder = CachedMiniLM()
    ids = []
    for one in news:
        with session_scope() as session:
            content = f"{one.headline}\n\n{one.summary}\n\n{one.url or ''}"
            item = Item(
                source=one.source, subject=one.headline, sender="news@example.com", date=one.when,
                message_id=f"<{new_id()}@example.com>", content=content,
                content_sha256=content_sha256(content), url=one.url, links=[one.url] if one.url else [],
                has_html=False,
            )  # fmt: skip
            session.add(item)
            session.flush()
            job = Job(item_id=item.id, status=JobStatus.succeeded.value, attempts=1)
            session.add(job)
            session.flush()
            record = Record(
                job_id=job.id, item_id=item.id, source=one.source, date=one.when, data=metadata(one),
                model_version_id="test",
            )  # fmt: skip
            session.add(record)
            session.flush()
            index_record(session, record=record, embedder=embedder)
            ids.append(record.id)
    return ids


@pytest.fixture
def knowledge_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database_url: str | None
) -> Iterator[Path]:
    """A migrated, empty database (SQLite in the data dir, or a fresh PostgreSQL one)."""
    data_dir = tmp_path / "data"
    monkeypatch.setenv("ENHANCER_DATA_DIR", str(data_dir))
    monkeypatch.setenv("ENHANCER_API_KEYS", TEST_API_KEY)
    for name in ("ENHANCER_NOTEBOOKLM_MAX_SOURCES", "ENHANCER_NOTEBOOKLM_MAX_WORDS"):
        monkeypatch.delenv(name, raising=False)
    if database_url:
        monkeypatch.setenv("DATABASE_URL", database_url)
    else:
        monkeypatch.delenv("DATABASE_URL", raising=False)
    reset_caches()
    settings = get_settings()
    settings.ensure_dirs()
    upgrade_database(settings.sqlalchemy_url)
    yield data_dir
    reset_caches()


# One week (Monday 2025-01-06 to Sunday 2025-01-12) and a story on each side of it. The GPT-5 story
# is told by three newsletters: two link OpenAI's post (one with tracking parameters: one link),
# one a news article about it (a second link, grouped by similarity and the shared entity).
GPT5_URL = "https://openai.com/index/introducing-gpt-5"
GPT5_ARTICLE = "https://www.theverge.com/news/openai-gpt-5-launch"
WEEK = [
    News("The Batch", "OpenAI releases GPT-5 with a new reasoning mode",
         "OpenAI released GPT-5, its new flagship model with a built-in reasoning mode and longer context.",
         GPT5_URL, day(6), ["model release"], ["OpenAI"], 9),
    News("Import AI", "OpenAI releases GPT-5, a flagship model with a reasoning mode",
         "OpenAI launched GPT-5, its new flagship model, which reasons before answering, with more context.",
         GPT5_ARTICLE, day(7), ["Model releases"], ["OpenAI"], 7),
    News("TLDR AI", "GPT-5 arrives",
         "OpenAI's GPT-5 is available in ChatGPT and the API.",
         GPT5_URL + "?utm_source=tldr&utm_medium=email", day(7, 12), ["model release"], ["OpenAI"], 6),
    News("TLDR AI", "NVIDIA starts shipping Blackwell Ultra GPUs to cloud providers",
         "NVIDIA began shipping its Blackwell Ultra data-centre GPUs to the largest cloud providers.",
         "https://nvidianews.nvidia.com/news/blackwell-ultra", day(8), ["GPU supply"], ["NVIDIA"], 6),
    News("Ben's Bites", "Anthropic publishes a study of sabotage risk in frontier models",
         "Anthropic published research evaluating whether frontier models could sabotage oversight.",
         "https://www.anthropic.com/research/sabotage-evaluations", day(9), ["AI safety"], ["Anthropic"], 9),
    News("The Rundown", "Mistral releases an open-weights coding model",
         "Mistral AI released Devstral, an open-weights model for software engineering agents.",
         "https://mistral.ai/news/devstral", day(11), ["model release"], ["Mistral AI"], 4),
    News("AlphaSignal", "A weekend of hackathons in Paris",
         "Several AI hackathons took place in Paris over the weekend with hundreds of participants.",
         "https://example.org/paris-hackathons", day(12), [], [], 10),
    News("The Batch", "Last week's story: Meta's new Llama licence",
         "Meta changed the licence of its Llama models for large companies.",
         "https://ai.meta.com/blog/llama-licence", day(5), ["open source"], ["Meta"], 8),
    News("The Batch", "Next week's story: Google ships Gemini 3",
         "Google released Gemini 3 across its products.",
         "https://blog.google/gemini-3", day(13), ["model release"], ["Google"], 8),
]  # fmt: skip
