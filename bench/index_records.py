"""What indexing costs the worker per record: the MiniLM embedding alone, and the whole index_record
(embedding, topic vocabulary, story grouping, full-text row) on a fresh SQLite archive.

    python bench/index_records.py --records 300

The records are the labelled story pairs' (tests/data/story_pairs.jsonl), repeated with their dates
moved so the archive grows as a real one does; run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=300)
    args = parser.parse_args()
    os.environ["ENHANCER_DATA_DIR"] = tempfile.mkdtemp(prefix="enhancer-index-bench-")
    os.environ.pop("DATABASE_URL", None)
    from app.core.db import reset_caches, session_scope
    from app.core.migrate import migrate_data_dir
    from app.knowledge.embeddings import get_minilm
    from app.knowledge.stories import embedding_text
    from app.models import Record
    from bench.story_pairs import load_pairs
    from tests.knowledge_helpers import add_record, index_now

    reset_caches()
    migrate_data_dir()
    sides = [pair[side] for pair in load_pairs() for side in ("a", "b")]
    model = get_minilm()
    model.vectors(["warm-up"])
    embed_ms, index_ms = [], []
    for n in range(args.records):
        side = sides[n % len(sides)]
        shift = timedelta(days=30 * (n // len(sides)))
        record_id = add_record(
            source=side["source"], headline=side["headline"], summary=side["summary"], url=side["url"],
            entities=[e for e in side["entities"] if len(e) >= 2], key_topics=side["key_topics"],
            content=side["content"],
            date=side["date"].replace("Z", "+00:00"), index=False,
        )  # fmt: skip
        if shift:
            with session_scope() as session:
                record = session.get(Record, record_id)
                assert record is not None
                record.date = record.date + shift
        started = time.perf_counter()
        model.vectors([embedding_text(side, side["content"])])
        embed_ms.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        index_now(record_id)
        index_ms.append((time.perf_counter() - started) * 1000)

    def line(name: str, values: list[float]) -> str:
        values = sorted(values)
        p95 = values[int(0.95 * (len(values) - 1))]
        return f"{name}: median {statistics.median(values):.1f} ms, p95 {p95:.1f} ms"

    print(f"{args.records} records, torch threads {__import__('torch').get_num_threads()}")
    print(line("MiniLM embedding of one record", embed_ms))
    print(line("index_record (embedding + topics + story + full text, committed)", index_ms))


if __name__ == "__main__":
    main()
