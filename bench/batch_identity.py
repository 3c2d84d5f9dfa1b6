"""Does the batch size change what is stored? The same items through the worker's pipeline at two
batch sizes (and the first again, to show run-to-run identity), with items/s for each.

    python bench/batch_identity.py --model data/models/smollm2-135m-newsletter --batches 4,8 --items 32

The items are the first N of `unannotated_test.jsonl` (seed data); a record counts as identical when
its whole metadata serialises the same. This is what set ENHANCER_MAX_BATCH's default (8).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from training.seed_data import UNANNOTATED_TEST, seed_file  # noqa: E402


def _records(runtime: Any, items: list[Any], batch: int) -> tuple[list[str], float]:
    from worker.pipeline import enhance_items

    started, records = time.perf_counter(), []
    for first in range(0, len(items), batch):
        for outcome in enhance_items(runtime, items[first : first + batch]):
            records.append(json.dumps(outcome.metadata and outcome.metadata.model_dump(mode="json")))
    return records, len(items) / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="any model source or registry version dir")
    parser.add_argument("--batches", default="4,8", help="two batch sizes, the first is run twice")
    parser.add_argument("--items", type=int, default=32)
    parser.add_argument("--cache-dir", type=Path, default=Path("data/models/cache"))
    args = parser.parse_args(argv)
    first, second = (int(b) for b in args.batches.split(","))

    from worker.bench_items import load_items
    from worker.runtime import load_runtime

    items = [b.item for b in load_items(seed_file(UNANNOTATED_TEST)) if b.item is not None][: args.items]
    runtime = load_runtime(args.model, backend="openvino-genai", precision="int8", cache_dir=args.cache_dir)
    runs = [(batch, *_records(runtime, items, batch)) for batch in (first, second, first)]
    for batch, _, rate in runs:
        print(f"batch {batch}: {rate:.3f} items/s")
    (_, a, _), (_, b, _), (_, again, _) = runs

    def same(x: list[str], y: list[str]) -> str:
        return f"{sum(p == q for p, q in zip(x, y, strict=True))} / {len(items)}"

    print(f"identical, batch {first} twice: {same(a, again)}")
    print(f"identical, batch {first} vs {second}: {same(a, b)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
