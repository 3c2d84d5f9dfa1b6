"""Digest and Atom feed latency over a year of 50,000 records in ~20,000 stories.

    python bench/digest_feed.py                      # fresh SQLite data dir, 50,000 records
    python bench/digest_feed.py --records 5000 --stories 2000 --runs 50
    python bench/digest_feed.py --data-dir /tmp/bench-digest --keep

Builds the archive in a fresh data directory (SQLite), inserting the rows directly, as the indexer
leaves them: items, succeeded jobs, records (news-shaped metadata from word lists, a random unit
embedding each: no model runs), ~20,000 stories (one to six records each, within three days, spread
over 2025), a vocabulary of 54 topics with one to three topic links per record, and three feed
tokens (no filters, one topic, relevance 9 or more). Then times, each over `--runs` runs (after one
warm-up), in a read session of its own as the API opens one:

- digest/week/markdown: `build_digest(period="week")` + `render_markdown`, a different week each run
  (the core path of GET /v1/digests);
- digest/day/markdown, digest/week/topic: a day; a week narrowed to one topic;
- feed/atom: the feed token looked up, its 50 newest stories read, the Atom document rendered (the
  core path of GET /v1/feeds/stories.atom); feed/atom/topic and feed/atom/relevance: the filtered
  feeds;
- http/...: the same two requests through the ASGI app (TestClient): routing, the API key, the
  response.

Prints p50/p95/max in ms per case, and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402

COMPANIES = (
    "OpenAI", "Anthropic", "Google DeepMind", "Meta", "Mistral AI", "Hugging Face", "NVIDIA", "Intel", "AMD",
    "Microsoft", "Apple", "Amazon", "Cohere", "Perplexity", "xAI", "Stability AI", "Runway", "Databricks",
    "Snowflake", "Scale AI", "Cerebras", "Groq", "Qualcomm", "Samsung", "TSMC", "Baidu", "Alibaba",
    "DeepSeek", "Salesforce", "IBM", "Oracle", "Figure AI", "Tesla", "Waymo", "ElevenLabs", "Replit",
)  # fmt: skip
PRODUCTS = (
    "a coding agent", "a reasoning model", "a voice model", "an image model", "a video model",
    "an inference chip", "a training cluster", "a robotics model", "an open-weights model",
    "a search assistant", "a browser agent", "a safety framework", "a data centre", "an API",
)  # fmt: skip
TOPICS = (
    "model release", "open source", "AI safety", "GPU supply", "agents", "benchmarks", "regulation", "RAG",
    "funding", "acquisitions", "robotics", "autonomous driving", "chips", "data centers", "energy",
    "copyright", "privacy", "education", "healthcare", "drug discovery", "climate", "coding assistants",
    "speech", "computer vision", "video generation", "image generation", "reasoning", "evaluation",
    "alignment", "interpretability", "cybersecurity", "defense", "elections", "labor market", "startups",
    "enterprise adoption", "cloud computing", "edge devices", "smartphones", "search", "advertising",
    "finance", "legal", "science", "mathematics", "translation", "recommendation systems", "quantization",
    "fine-tuning", "synthetic data", "multimodal", "long context", "inference cost", "open weights",
)  # fmt: skip
VERBS = ("launches", "unveils", "releases", "announces", "delays", "expands", "acquires", "ships", "tests")
WORDS = (
    "model", "chip", "agent", "launch", "paper", "data", "policy", "users", "price", "benchmark", "cloud",
    "training", "inference", "safety", "open", "weights", "context", "tokens", "latency", "customers",
)  # fmt: skip
SOURCES = (
    "The Batch",
    "Import AI",
    "TLDR AI",
    "Ben's Bites",
    "The Rundown",
    "Last Week in AI",
    "AlphaSignal",
)
YEAR_START = datetime(2025, 1, 1, tzinfo=UTC)
DIMENSIONS = 384
API_KEY = "bench-key"


def _record_counts(rng: random.Random, records: int, stories: int) -> list[int]:
    counts = [1] * stories
    for _ in range(records - stories):
        while True:
            index = rng.randrange(stories)
            if counts[index] < 6:
                counts[index] += 1
                break
    return counts


def build(records: int, stories: int, seed: int) -> dict[str, Any]:
    """Insert the archive; returns the feed tokens and build timings."""
    from sqlalchemy import insert

    from app.core.config import get_settings
    from app.core.db import get_engine
    from app.core.migrate import upgrade_database
    from app.crud import content_sha256
    from app.knowledge.embeddings import to_bytes
    from app.knowledge.feeds import hash_token, new_token
    from app.knowledge.stories import story_link
    from app.knowledge.topics import topic_key
    from app.models import (
        FeedToken,
        Item,
        Job,
        JobStatus,
        Record,
        RecordTopic,
        Story,
        Topic,
        TopicAlias,
        new_id,
    )

    started = time.perf_counter()
    settings = get_settings()
    settings.ensure_dirs()
    upgrade_database(settings.sqlalchemy_url)
    engine = get_engine()
    rng = random.Random(seed)
    np_rng = np.random.default_rng(seed)
    now = datetime.now(UTC)
    topic_ids = {name: new_id() for name in TOPICS}
    with engine.begin() as connection:
        connection.execute(
            insert(Topic),
            [{"id": i, "name": n, "key": topic_key(n), "created_at": now} for n, i in topic_ids.items()],
        )
        connection.execute(
            insert(TopicAlias), [{"key": topic_key(n), "topic_id": i} for n, i in topic_ids.items()]
        )
    counts = _record_counts(rng, records, stories)
    rows: dict[str, list[dict[str, Any]]] = {
        "items": [],
        "jobs": [],
        "records": [],
        "links": [],
        "stories": [],
    }

    def flush() -> None:
        with engine.begin() as connection:
            connection.execute(insert(Story), rows["stories"])
            connection.execute(insert(Item), rows["items"])
            connection.execute(insert(Job), rows["jobs"])
            connection.execute(insert(Record), rows["records"])
            connection.execute(insert(RecordTopic), rows["links"])
        for batch in rows.values():
            batch.clear()

    for number, count in enumerate(counts):
        story_id = new_id()
        first = YEAR_START + timedelta(seconds=rng.randrange(365 * 86400))
        company, product = rng.choice(COMPANIES), rng.choice(PRODUCTS)
        story_topics = rng.sample(TOPICS, 3)
        url = f"https://news.example.com/{first:%Y/%m/%d}/story-{number}"
        dates = sorted(
            [first] + [first + timedelta(seconds=rng.randrange(3 * 86400)) for _ in range(count - 1)]
        )
        relevances = []
        title = ""
        for index, when in enumerate(dates):
            source = rng.choice(SOURCES)
            headline = f"{company} {rng.choice(VERBS)} {product} ({source} #{number}.{index})"
            title = title or headline
            summary = f"{company} {product}: " + " ".join(rng.choice(WORDS) for _ in range(25)) + "."
            relevance = rng.randint(1, 10)
            relevances.append(relevance)
            topics = story_topics[: rng.randint(1, 3)]
            link = url if index == 0 or rng.random() < 0.5 else f"https://other.example.org/{number}/{index}"
            item_id, job_id, record_id = new_id(), new_id(), new_id()
            content = f"{headline}\n\n{summary}\n\n{link}"
            rows["items"].append(
                {
                    "id": item_id, "source": source, "subject": headline, "sender": "news@example.com",
                    "date": when, "message_id": f"<{item_id}@example.com>", "content": content,
                    "content_sha256": content_sha256(content), "url": link, "links": [link],
                    "has_html": False, "created_at": now,
                }
            )  # fmt: skip
            rows["jobs"].append(
                {
                    "id": job_id, "item_id": item_id, "status": JobStatus.succeeded.value, "attempts": 1,
                    "created_at": now, "updated_at": now, "finished_at": now,
                }
            )  # fmt: skip
            vector = np_rng.standard_normal(DIMENSIONS).astype(np.float32)
            data = {
                "summary": summary, "key_topics": topics, "entities": [company],
                "categories": ["product_launch"], "sentiment": "neutral", "urgency_level": "medium",
                "relevance_score": relevance,
                "action_items": [], "source": source, "headline": headline, "date": when.isoformat(),
                "url": link, "links": [link], "content_length": len(content), "link_count": 1,
                "word_count": len(content.split()), "reading_time_minutes": 1, "has_html": False,
            }  # fmt: skip
            rows["records"].append(
                {
                    "id": record_id, "job_id": job_id, "item_id": item_id, "source": source, "date": when,
                    "data": data, "model_version_id": "bench", "created_at": now, "reviewed": False,
                    "story_id": story_id, "story_pinned": False,
                    "embedding": to_bytes(vector / np.linalg.norm(vector)), "indexed_at": now,
                }
            )  # fmt: skip
            rows["links"] += [
                {"record_id": record_id, "topic_id": topic_ids[t], "position": p}
                for p, t in enumerate(topics)
            ]
        rows["stories"].append(
            {
                "id": story_id, "title": title, "canonical_link": story_link(url), "first_date": dates[0],
                "last_date": dates[-1], "record_count": count, "max_relevance": max(relevances),
                "merged_into_id": None, "created_at": now, "updated_at": dates[-1] + timedelta(hours=1),
            }
        )  # fmt: skip
        if len(rows["records"]) >= 2000:
            flush()
    if rows["records"]:
        flush()
    tokens = {}
    with engine.begin() as connection:
        for name, filters in (
            ("all", {}),
            ("topic", {"topic": "AI safety"}),
            ("relevance", {"min_relevance": 9}),
        ):
            token = new_token()
            tokens[name] = token
            connection.execute(
                insert(FeedToken),
                [{"id": new_id(), "name": name, "token_sha256": hash_token(token), "filters": filters,
                  "created_at": now}],
            )  # fmt: skip
    return {"tokens": tokens, "build_s": time.perf_counter() - started}


def _time(runs: int, step: Callable[[int], Any]) -> dict[str, float]:
    step(-1)  # warm-up
    samples = []
    for run in range(runs):
        started = time.perf_counter()
        step(run)
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return {
        "p50_ms": round(statistics.median(samples), 2),
        "p95_ms": round(samples[min(len(samples) - 1, round(0.95 * (len(samples) - 1)))], 2),
        "max_ms": round(samples[-1], 2),
    }


def measure(tokens: dict[str, str], runs: int) -> dict[str, Any]:
    from fastapi.testclient import TestClient

    from app.core.db import read_session_scope
    from app.knowledge.digests import build_digest, render_markdown
    from app.knowledge.feeds import feed_for_token, feed_stories, render_atom
    from app.knowledge.story_query import StoryFilter
    from app.main import create_app

    def week(run: int) -> date:
        return date(2025, 3, 3) + timedelta(weeks=(run + 1) % 40)  # Mondays from March to December

    sizes: dict[str, int] = {}

    def digest(period: str, filters: StoryFilter | None = None) -> Callable[[int], Any]:
        def step(run: int) -> None:
            with read_session_scope() as session:
                built = build_digest(session, period=period, date=week(run), filters=filters)
                sizes[f"{period}/{filters.topic if filters else 'all'}"] = built.story_count
                render_markdown(built)

        return step

    def feed(name: str) -> Callable[[int], Any]:
        def step(_: int) -> None:
            with read_session_scope() as session:
                found = feed_for_token(session, tokens[name])
                assert found is not None
                stories = feed_stories(session, found)
                sizes[f"feed/{name}"] = len(stories)
                render_atom(found, stories, self_url="http://localhost/v1/feeds/stories.atom?token=x")

        return step

    results = {
        "digest/week/markdown": _time(runs, digest("week")),
        "digest/day/markdown": _time(runs, digest("day")),
        "digest/week/topic": _time(runs, digest("week", StoryFilter(topic="AI safety"))),
        "feed/atom": _time(runs, feed("all")),
        "feed/atom/topic": _time(runs, feed("topic")),
        "feed/atom/relevance": _time(runs, feed("relevance")),
    }
    os.environ.setdefault("ENHANCER_API_KEYS", "bench-key")
    with TestClient(
        create_app(migrate=False), headers={"X-API-Key": os.environ["ENHANCER_API_KEYS"]}
    ) as client:

        def http_digest(run: int) -> None:
            params = {"period": "week", "date": week(run).isoformat(), "format": "markdown"}
            assert client.get("/v1/digests", params=params).status_code == 200

        def http_feed(_: int) -> None:
            assert client.get("/v1/feeds/stories.atom", params={"token": tokens["all"]}).status_code == 200

        results["http/digest/week/markdown"] = _time(runs, http_digest)
        results["http/feed/atom"] = _time(runs, http_feed)
    return {"cases": results, "sizes": sizes}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--stories", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--data-dir", help="a fresh directory to build in (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    args = parser.parse_args()
    if not args.stories <= args.records <= 6 * args.stories:
        parser.error("--records must be between --stories and 6 x --stories")
    data_dir = Path(args.data_dir or tempfile.mkdtemp(prefix="bench-digest-"))
    if data_dir.exists() and any(data_dir.iterdir()):
        parser.error(f"{data_dir} is not empty: the bench builds a fresh archive")
    os.environ["ENHANCER_DATA_DIR"] = str(data_dir)
    os.environ["ENHANCER_API_KEYS"] = API_KEY
    os.environ.pop("DATABASE_URL", None)
    try:
        built = build(args.records, args.stories, args.seed)
        seconds = built["build_s"]
        print(f"built {args.records:,} records in {args.stories:,} stories in {seconds:.1f} s ({data_dir})")
        measured = measure(built["tokens"], args.runs)
        print(f"{'case':<28} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
        for name, row in measured["cases"].items():
            print(f"{name:<28} {row['p50_ms']:>8.1f} {row['p95_ms']:>8.1f} {row['max_ms']:>8.1f}")
        print("stories per result (last run):", ", ".join(f"{k} {v}" for k, v in measured["sizes"].items()))
        load = os.getloadavg()
        print(
            json.dumps(
                {
                    "records": args.records, "stories": args.stories, "runs": args.runs,
                    "build_s": round(built["build_s"], 1), "load_avg": [round(x, 2) for x in load],
                    **measured,
                }
            )
        )  # fmt: skip
    finally:
        if not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
