"""Search latency over a 50,000-record archive: app/knowledge/search.py's `search()`, end to end.

    python bench/search.py                        # 50,000 records in a fresh SQLite data dir
    python bench/search.py --records 5000 --queries 100
    python bench/search.py --postgres postgresql://postgres@127.0.0.1:5432/postgres

Builds the archive in a fresh data directory (SQLite), or in a fresh database created beside the one
`--postgres` names (dropped afterwards): items, succeeded jobs, stories (one to five records each)
and records with synthetic but news-shaped metadata (headline, one-sentence summary, topics,
entities, a 120-300 word body) made from word lists. Every record goes through `index_document`,
as the worker's indexer does it.

Embeddings: the first `--real` records (default 3,000) are embedded with the real all-MiniLM-L6-v2
("headline. summary", as the worker does). Each other record gets a stand-in: a random mix of two
real embeddings of records that share its first topic, plus Gaussian noise, normalised. The stand-ins
cost nothing to make and spread over the same region of the space as real news embeddings; only
the real ones match their own text, which does not matter for timing.

Then `--queries` queries (default 200; a quarter each: one word, two words, a phrase from a
headline, a paraphrase that shares few or no words with any record) each go through `search()` in
their own read session, as GET /v1/search runs it, including the query's embedding, after one
warm-up query (which loads the model and the vector index). Prints the build times and
p50/p95/p99/max latency in ms, and one JSON line.
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
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402

COMPANIES = (
    "OpenAI", "Anthropic", "Google DeepMind", "Meta", "Mistral AI", "Hugging Face", "NVIDIA", "Intel", "AMD",
    "Microsoft", "Apple", "Amazon", "Cohere", "Perplexity", "xAI", "Stability AI", "Runway", "Databricks",
    "Snowflake", "Scale AI", "Cerebras", "Groq", "SambaNova", "Qualcomm", "Samsung", "TSMC", "Baidu",
    "Alibaba", "Tencent", "DeepSeek", "Moonshot AI", "Zhipu", "Character.AI", "Inflection", "Adept",
    "Salesforce", "IBM", "Oracle", "Palantir", "Figure AI", "Tesla", "Waymo", "Cruise", "Boston Dynamics",
    "ElevenLabs", "Midjourney", "Replit", "Cursor", "GitHub", "Vercel", "LangChain", "Pinecone", "Weaviate",
    "Together AI", "Fireworks AI", "Lambda", "CoreWeave", "Arm", "Broadcom", "Micron",
)  # fmt: skip
PRODUCTS = (
    "GPT-5", "Claude 4", "Gemini 2.5", "Llama 4", "Mixtral", "Blackwell", "Gaudi 3", "MI350", "Copilot",
    "Siri", "Alexa", "Command R", "Sonar", "Grok 3", "Stable Diffusion 4", "Gen-4", "DBRX", "Arctic",
    "Qwen 3", "Ernie 5", "Kimi", "GLM-5", "Phi-4", "Gemma 3", "Nemotron", "Sora", "Veo 3", "Codex",
    "Operator", "Computer Use", "AlphaFold 4", "Optimus", "a coding agent", "a reasoning model",
    "a voice model", "an image model", "a video model", "an inference chip", "a training cluster",
    "a robotics model", "an open-weights model", "a search assistant", "a browser agent",
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
VERBS = (
    "launches", "unveils", "releases", "announces", "open-sources", "delays", "cuts prices of", "expands",
    "acquires", "invests in", "tests", "previews", "ships", "upgrades", "retires", "licenses", "benchmarks",
    "partners on", "pauses", "rebuilds",
)  # fmt: skip
AUDIENCES = (
    "developers", "enterprises", "hospitals", "schools", "banks", "researchers", "startups", "governments",
    "creators", "small businesses", "data centers", "phones", "laptops", "cars", "robots", "lawyers",
)  # fmt: skip
PLACES = (
    "Europe", "the US", "China", "India", "Japan", "the UK", "France", "Germany", "Canada", "Brazil",
    "South Korea", "Singapore", "the Gulf", "Africa", "Australia",
)  # fmt: skip
NEWS_WORDS = (
    "revenue", "quarter", "customers", "pricing", "latency", "throughput", "accuracy", "parameters",
    "tokens", "context", "window", "training", "inference", "dataset", "license", "lawsuit", "court",
    "regulators", "investors", "valuation", "round", "billion", "million", "partnership", "contract",
    "deployment", "cluster", "power", "megawatts", "cooling", "supply", "shortage", "demand", "capacity",
    "benchmark", "leaderboard", "evaluation", "safety", "testing", "red teaming", "guardrails", "policy",
    "users", "subscribers", "engineers", "researchers", "paper", "preprint", "results", "open", "closed",
    "weights", "API", "platform", "integration", "plugin", "browser", "desktop", "mobile", "cloud", "chip",
    "wafer", "memory", "bandwidth", "network", "storage", "energy", "grid", "carbon", "emissions",
    "hiring", "layoffs", "talent", "team", "lab", "startup", "acquisition", "merger", "deal", "stake",
    "shares", "market", "competition", "rivals", "announcement", "roadmap", "launch", "delay", "preview",
    "beta", "waitlist", "rollout", "region", "country", "government", "ministry", "agency", "standard",
    "framework", "library", "toolkit", "compiler", "kernel", "driver", "firmware", "update", "version",
    "feature", "assistant", "agent", "workflow", "automation", "pipeline", "retrieval", "search", "index",
    "vector", "embedding", "fine-tune", "adapter", "distillation", "quantized", "sparse", "mixture",
    "experts", "reasoning", "planning", "memory", "tools", "sandbox", "security", "vulnerability", "patch",
)  # fmt: skip
FILLER = (
    "the", "a", "of", "to", "and", "in", "for", "on", "with", "that", "is", "was", "it", "as", "by", "at",
    "from", "said", "will", "its", "new", "has", "have", "more", "than", "this", "which", "after", "also",
    "about", "into", "over", "but", "their", "could", "would", "first", "next", "year", "week", "company",
)  # fmt: skip
# Paraphrases: meaning without (most of) the words records use.
PARAPHRASES = (
    "graphics processors for server farms", "chatbot maker gets a huge cash injection",
    "rules for artificial intelligence in the European Union", "self-driving taxis expand to new cities",
    "humanoid machines that walk and lift boxes", "tool that writes software for programmers",
    "lawsuit over training on copyrighted books", "electricity needs of computing facilities",
    "smaller cheaper language model runs on a phone", "buying a rival firm in the AI sector",
    "protein folding predictions for biology labs", "synthetic voices that sound human",
    "making clips from a text prompt", "keeping powerful systems from causing harm",
    "company lets go of staff", "semiconductor shortage hits production", "assistants that browse the web",
    "hospital uses algorithms to read scans", "open model weights anyone can download",
    "costs of running models fall sharply", "tests that compare model quality",
    "students using chatbots for homework", "fraud detection at banks with machine learning",
    "privacy concerns over collected user data", "new laptop chips with neural engines",
)  # fmt: skip


def sentence(rng: random.Random, words: int) -> str:
    out = []
    for _ in range(words):
        pool = NEWS_WORDS if rng.random() < 0.45 else FILLER
        out.append(rng.choice(pool))
    if rng.random() < 0.5:
        out.insert(rng.randrange(len(out)), rng.choice(COMPANIES))
    return " ".join(out).capitalize() + "."


def make_doc(rng: random.Random, index: int) -> dict[str, Any]:
    company, product = rng.choice(COMPANIES), rng.choice(PRODUCTS)
    verb, audience, place = rng.choice(VERBS), rng.choice(AUDIENCES), rng.choice(PLACES)
    topics = rng.sample(TOPICS, rng.randint(1, 4))
    entities = [company, *rng.sample(COMPANIES, rng.randint(0, 3))]
    template = rng.randrange(4)
    if template == 0:
        headline = f"{company} {verb} {product} for {audience}"
    elif template == 1:
        headline = f"{company} {verb} {product} in {place}"
    elif template == 2:
        headline = f"{product}: {company} {verb} it amid {topics[0]} push"
    else:
        headline = f"Why {company}'s {product} matters for {topics[0]}"
    summary = (
        f"{company} {verb} {product}, aimed at {audience} in {place}, as {topics[0]} "
        f"{rng.choice(('heats up', 'draws scrutiny', 'accelerates', 'slows', 'shifts'))}; "
        + sentence(rng, rng.randint(8, 16))
    )
    body = " ".join(sentence(rng, rng.randint(10, 22)) for _ in range(rng.randint(8, 16)))
    return {
        "headline": headline,
        "summary": summary,
        "topics": topics,
        "entities": entities,
        "body": f"{headline}. {summary} {body}",
        "index": index,
    }


def stand_in_embeddings(rng: np.random.Generator, docs: list[dict[str, Any]], real: np.ndarray) -> np.ndarray:
    """Real embeddings for the first len(real) docs; for the others, a noisy mix of two real ones that
    share the doc's first topic, normalised."""
    by_topic: dict[str, list[int]] = {}
    for i in range(len(real)):
        by_topic.setdefault(docs[i]["topics"][0], []).append(i)
    out = np.empty((len(docs), real.shape[1]), dtype=np.float32)
    out[: len(real)] = real
    for i in range(len(real), len(docs)):
        pool = by_topic.get(docs[i]["topics"][0]) or list(range(len(real)))
        a, b = rng.choice(pool, 2)
        w = rng.uniform(0.3, 0.7)
        vector = w * real[a] + (1 - w) * real[b] + rng.normal(0, 0.02, real.shape[1])
        out[i] = vector / np.linalg.norm(vector)
    return out


def make_queries(rng: random.Random, docs: list[dict[str, Any]], count: int) -> list[tuple[str, str]]:
    queries: list[tuple[str, str]] = []
    for n in range(count):
        kind = ("one word", "two words", "phrase", "paraphrase")[n % 4]
        doc = rng.choice(docs)
        if kind == "one word":
            q = rng.choice([*doc["entities"], *doc["topics"][0].split(), rng.choice(NEWS_WORDS)])
            q = q.split()[0]
        elif kind == "two words":
            q = f"{rng.choice(doc['entities'])} {rng.choice(doc['topics'])}".split()
            q = " ".join(q[:2])
        elif kind == "phrase":
            words = doc["headline"].split()
            start = rng.randrange(max(1, len(words) - 3))
            q = " ".join(words[start : start + rng.randint(3, 5)])
        else:
            q = PARAPHRASES[n // 4 % len(PARAPHRASES)]
            if n // 4 >= len(PARAPHRASES):
                q = f"{q} {rng.choice(('news', 'this week', 'report', 'update', 'latest'))}"
        queries.append((kind, q))
    return queries


def build(
    records: int, real_count: int, seed: int, embed_threads: int
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    from sqlalchemy import insert

    from app.core.db import session_scope
    from app.knowledge.embeddings import get_minilm, to_bytes
    from app.knowledge.search import index_document
    from app.models import Item, Job, JobStatus, Record, Story, new_id

    times: dict[str, float] = {}
    started = time.perf_counter()
    rng = random.Random(seed)
    docs = [make_doc(rng, i) for i in range(records)]
    times["generate_s"] = time.perf_counter() - started

    started = time.perf_counter()
    real_count = min(real_count, records)
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(embed_threads)
    real = get_minilm().vectors([f"{d['headline']}. {d['summary']}" for d in docs[:real_count]])
    torch.set_num_threads(threads)
    times["embed_real_s"] = time.perf_counter() - started
    embeddings = stand_in_embeddings(np.random.default_rng(seed), docs, real)

    started = time.perf_counter()
    now = datetime.now(UTC)
    first_date = now - timedelta(days=365)
    order = list(range(records))
    rng.shuffle(order)  # stories: runs of 1-5 records, in no relation to the generation order
    story_of: dict[int, int] = {}
    position, story_count = 0, 0
    while position < records:
        size = rng.randint(1, 5)
        for i in order[position : position + size]:
            story_of[i] = story_count
        position += size
        story_count += 1
    story_ids = [new_id() for _ in range(story_count)]
    stories = {}
    for i, doc in enumerate(docs):
        doc["date"] = first_date + timedelta(seconds=rng.randrange(365 * 86400))
        number = story_of[i]
        if number not in stories:
            stories[number] = {
                "id": story_ids[number], "title": doc["headline"], "first_date": doc["date"],
                "last_date": doc["date"], "record_count": 0, "created_at": now, "updated_at": now,
            }  # fmt: skip
        stories[number]["record_count"] += 1
    with session_scope() as session:
        session.execute(insert(Story), list(stories.values()))

    batch = 1000
    for start in range(0, records, batch):
        chunk = docs[start : start + batch]
        items, jobs, rows = [], [], []
        for doc in chunk:
            i = doc["index"]
            item_id, job_id = new_id(), new_id()
            doc["record_id"] = new_id()
            url = f"https://news.example.com/{i}"
            items.append(
                {
                    "id": item_id, "source": "TLDR AI", "subject": doc["headline"], "sender": "a@example.com",
                    "date": doc["date"], "message_id": f"<bench-{i}@example.com>", "content": doc["body"],
                    "content_sha256": uuid.uuid4().hex, "url": url, "links": [url], "has_html": False,
                    "created_at": now,
                }
            )  # fmt: skip
            jobs.append(
                {
                    "id": job_id, "item_id": item_id, "status": JobStatus.succeeded.value, "attempts": 1,
                    "created_at": now, "updated_at": now, "finished_at": now,
                }
            )  # fmt: skip
            rows.append(
                {
                    "id": doc["record_id"], "job_id": job_id, "item_id": item_id, "source": "TLDR AI",
                    "date": doc["date"], "created_at": now, "reviewed": False, "story_pinned": False,
                    "story_id": story_ids[story_of[i]], "embedding": to_bytes(embeddings[i]),
                    "indexed_at": min(doc["date"] + timedelta(minutes=5), now - timedelta(hours=1)),
                    "data": {
                        "headline": doc["headline"], "summary": doc["summary"], "key_topics": doc["topics"],
                        "entities": doc["entities"], "url": url, "source": "TLDR AI",
                        "date": doc["date"].isoformat(),
                    },
                }
            )  # fmt: skip
        with session_scope() as session:
            session.execute(insert(Item), items)
            session.execute(insert(Job), jobs)
            session.execute(insert(Record), rows)
            for doc in chunk:
                index_document(
                    session,
                    record_id=doc["record_id"],
                    headline=doc["headline"],
                    summary=doc["summary"],
                    topics=doc["topics"],
                    entities=doc["entities"],
                    body=doc["body"],
                )
        if start // batch % 10 == 9:
            print(f"  {start + batch} records stored and indexed", flush=True)
    times["store_and_index_s"] = time.perf_counter() - started
    return times, docs


def run_queries(queries: list[tuple[str, str]], limit: int) -> dict[str, Any]:
    from app.core.db import read_session_scope
    from app.knowledge.search import search

    def one(q: str) -> Any:
        with read_session_scope() as session:
            return search(session, q=q, limit=limit)

    started = time.perf_counter()
    one("warm-up: nvidia chips for data centers")
    warm_up = time.perf_counter() - started

    latencies: dict[str, list[float]] = {}
    hits, semantic_hits, text_hits, empty = 0, 0, 0, 0
    for kind, q in queries:
        started = time.perf_counter()
        result = one(q)
        latencies.setdefault(kind, []).append((time.perf_counter() - started) * 1000)
        hits += len(result.hits)
        empty += not result.hits
        semantic_hits += sum(h.channel in ("semantic", "both") for h in result.hits)
        text_hits += sum(h.channel in ("text", "both") for h in result.hits)
    every = sorted(ms for values in latencies.values() for ms in values)
    return {
        "warm_up_s": round(warm_up, 2),
        "overall": percentiles(every),
        "by_kind": {kind: percentiles(sorted(values)) for kind, values in latencies.items()},
        "mean_hits": round(hits / len(queries), 1),
        "queries_without_hits": empty,
        "hits_from_text": text_hits,
        "hits_from_semantic": semantic_hits,
    }


def percentiles(values: list[float]) -> dict[str, float]:
    def at(p: float) -> float:
        return round(values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))], 1)

    return {"p50": at(50), "p95": at(95), "p99": at(99), "max": round(values[-1], 1),
            "mean": round(statistics.fmean(values), 1), "n": len(values)}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--real", type=int, default=3_000, help="records embedded with the real MiniLM")
    parser.add_argument(
        "--embed-threads", type=int, default=1, help="torch threads for the build's real embeddings"
    )
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--limit", type=int, default=20, help="hits per query")
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument(
        "--postgres", metavar="URL", help="a PostgreSQL server: a fresh database beside this one"
    )
    parser.add_argument("--keep", action="store_true", help="keep the data dir / database")
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="bench-search-"))
    os.environ["ENHANCER_DATA_DIR"] = str(data_dir)
    os.environ.pop("DATABASE_URL", None)
    database = None
    if args.postgres:
        import psycopg

        database = f"bench_search_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(args.postgres, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{database}"')
        os.environ["DATABASE_URL"] = f"{args.postgres.rsplit('/', 1)[0]}/{database}"

    from app.core.config import get_settings
    from app.core.db import reset_caches
    from app.core.migrate import upgrade_database

    reset_caches()
    settings = get_settings()
    settings.ensure_dirs()
    upgrade_database(settings.sqlalchemy_url)
    backend = "postgresql" if args.postgres else "sqlite"
    try:
        import torch

        print(f"search bench: {args.records} records on {backend}, {os.cpu_count()} CPUs, "
              f"torch threads {torch.get_num_threads()}", flush=True)  # fmt: skip
        started = time.perf_counter()
        times, docs = build(args.records, args.real, args.seed, args.embed_threads)
        times["build_total_s"] = time.perf_counter() - started
        print("build: " + ", ".join(f"{k} {v:.1f}" for k, v in times.items()), flush=True)
        queries = make_queries(random.Random(args.seed + 1), docs, args.queries)
        report = run_queries(queries, args.limit)
        overall = report["overall"]
        print(f"warm-up (model + vector index load): {report['warm_up_s']} s")
        print(f"{overall['n']} queries: p50 {overall['p50']} ms, p95 {overall['p95']} ms, "
              f"p99 {overall['p99']} ms, max {overall['max']} ms")  # fmt: skip
        for kind, stats in report["by_kind"].items():
            print(f"  {kind:>10}: p50 {stats['p50']} ms, p95 {stats['p95']} ms, max {stats['max']} ms")
        print(
            f"mean hits {report['mean_hits']}, queries without hits {report['queries_without_hits']}, "
            f"hits from text {report['hits_from_text']}, from semantic {report['hits_from_semantic']}"
        )
        print(json.dumps({"backend": backend, "records": args.records, "real_embeddings": args.real,
                          "build": {k: round(v, 1) for k, v in times.items()}, **report}))  # fmt: skip
    finally:
        reset_caches()
        if not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)
            if database:
                import psycopg

                with psycopg.connect(args.postgres, autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        else:
            print(f"kept: {data_dir}" + (f", database {database}" if database else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
