"""What each model writes on items none of them was trained on: the summary rule and the spread of
every field, side by side, in one run.

    python bench/preset_outputs.py --models data/models/smollm2-135m-newsletter,\\
        data/models/qwen2.5-coder-0.5b-newsletter --limit 40 --json reports/preset-outputs.json

The items are `unannotated_test.jsonl` minus every item of the training data (the composite test
set of `enhancer eval --compare`): they carry no gold labels, so this scores what needs none:
- summary_sentence_rate: training.evaluation.summary_judgement's rule (one real sentence about the item);
- per field, the share of the most common value and the number of distinct values (a field that is
  one constant on every record says nothing), and how often action items repeat a topic or entity;
- first-attempt validity and seconds per item (p50/p95; batches as the worker forms them).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from training.evaluation.composite import composite_items  # noqa: E402
from training.evaluation.runner import evaluate  # noqa: E402
from training.seed_data import SeedDataMissing, seed_file  # noqa: E402

SPREAD_FIELDS = ("sentiment", "urgency_level", "relevance_score", "categories", "key_topics")


def _value(metadata: dict[str, Any], name: str) -> str:
    value = metadata.get(name)
    return json.dumps(sorted(value) if isinstance(value, list) else value)


def value_spread(records: list[dict[str, Any]], names: Iterable[str]) -> dict[str, Any]:
    """Per field, its most common value, that value's share of the records, and the distinct values."""
    spread: dict[str, Any] = {}
    for name in names:
        counts = Counter(_value(record, name) for record in records)
        top, top_n = counts.most_common(1)[0] if counts else ("", 0)
        spread[name] = {
            "top": top,
            "top_share": round(top_n / max(len(records), 1), 3),
            "distinct": len(counts),
        }
    return spread


def field_spread(records: list[dict[str, Any]]) -> dict[str, Any]:
    spread = value_spread(records, SPREAD_FIELDS)
    actions = [a for record in records for a in record.get("action_items") or []]
    labels = [
        {label.lower() for label in (record.get("key_topics") or []) + (record.get("entities") or [])}
        for record in records
    ]
    repeats = sum(
        a.lower() in seen
        for record, seen in zip(records, labels, strict=True)
        for a in record.get("action_items") or []
    )
    spread["action_items"] = {
        "per_record": round(len(actions) / max(len(records), 1), 2),
        "repeat_a_label": round(repeats / max(len(actions), 1), 3),
        "distinct": len(set(actions)),
    }
    return spread


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", required=True, help="comma-separated registry version dirs or ids")
    parser.add_argument("--limit", type=int, default=40, help="first N held-out items (default 40)")
    parser.add_argument("--json", type=Path, help="also write every model's numbers to this file")
    args = parser.parse_args(argv)
    try:
        train, test = seed_file(), seed_file("unannotated_test.jsonl")
    except SeedDataMissing as error:
        parser.error(str(error))
    items, _removed = composite_items(test, [train])
    items = items[: args.limit]
    rows = {}
    for model in args.models.split(","):
        report = evaluate(model, items, repeats=1)
        records = [p.metadata for p in report.predictions if p.metadata is not None]
        metrics = report.metrics
        rows[model] = {
            "n_items": len(items),
            "summary_sentence_rate": metrics["summary_sentence_rate"],
            "summary_failures": metrics["summary_failures"],
            "raw_schema_valid_rate": metrics["raw_schema_valid_rate"],
            "schema_valid_rate": metrics["schema_valid_rate"],
            "p50_s": metrics["p50_s"],
            "p95_s": metrics["p95_s"],
            "fields": field_spread(records),
            "examples": [
                {"headline": item.prompt.headline, "summary": (p.metadata or {}).get("summary")}
                for item, p in list(zip(items, report.predictions, strict=True))[:3]
            ],
        }
        print(json.dumps({"model": model, **rows[model]}, ensure_ascii=False), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2, ensure_ascii=False), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
