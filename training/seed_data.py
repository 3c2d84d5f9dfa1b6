"""Where the seed data lives, and seed rows as /v1/enhance request bodies.

The seed files (`annotated_train.jsonl`, `unannotated_test.jsonl`, see their README) are not part of
the repository: they sit beside the checkout in `../shared/data/seed`, or wherever
`ENHANCER_SEED_DIR` names. Scripts that use them (bench/, `enhancer bench`) find them here; the test
suite does not need them (it uses the hand-written items of tests/data).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

SEED_DIR_ENV = "ENHANCER_SEED_DIR"
# <checkout>/training/seed_data.py -> <checkout>/../shared/data/seed (an editable install keeps this path).
DEFAULT_SEED_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "seed"
ANNOTATED_TRAIN = "annotated_train.jsonl"
UNANNOTATED_TEST = "unannotated_test.jsonl"


class SeedDataMissing(FileNotFoundError):
    """A seed file is not where seed_dir() points."""


def seed_dir() -> Path:
    """$ENHANCER_SEED_DIR if set (and not empty), else ../shared/data/seed beside the checkout."""
    configured = os.environ.get(SEED_DIR_ENV, "").strip()
    return Path(configured).expanduser() if configured else DEFAULT_SEED_DIR


def seed_file(name: str = ANNOTATED_TRAIN) -> Path:
    """The path of one seed file; SeedDataMissing (a FileNotFoundError) saying where to put it."""
    path = seed_dir() / name
    if not path.is_file():
        configured = os.environ.get(SEED_DIR_ENV, "").strip()
        where = f"{SEED_DIR_ENV}={configured}" if configured else f"{SEED_DIR_ENV} is not set"
        raise SeedDataMissing(
            f"no seed data at {path} ({where}): put the shared/ folder beside the checkout "
            f"(../shared/data/seed) or set {SEED_DIR_ENV} to the folder that holds {name}"
        )
    return path


# The seed user prompt: "Analyze: <source>\n\n### <headline>\n...🔗 **Source:** <url>\n\n"
# "**Summary:** <text>\n\nJSON only:..."
_HEADLINE = re.compile(r"^### (.+)$", re.M)
_URL = re.compile(r"\*\*Source:\*\* (\S+)")
_SUMMARY = re.compile(r"\*\*Summary:\*\* (.+?)(?:\n\nJSON only:|\Z)", re.S)
_SOURCE = re.compile(r"^Analyze: (.+)$", re.M)


def seed_to_request(row: dict[str, Any], index: int) -> dict[str, Any]:
    """A seed row (`messages`, `metadata`) as the /v1/enhance body an e-mail ingester would send."""
    prompt = row["messages"][0]["content"]
    headline = _HEADLINE.search(prompt)
    url = _URL.search(prompt)
    summary = _SUMMARY.search(prompt)
    source = _SOURCE.search(prompt)
    return {
        "source": source.group(1).strip() if source else "newsletter",
        "subject": headline.group(1).strip() if headline else "",
        "from": "digest@example.com",
        "date": row.get("metadata", {}).get("created_at", "2025-10-16T00:00:00")[:19] + "Z",
        "message_id": f"<seed-{index}@example.com>",
        "content": summary.group(1).strip() if summary else prompt,
        "url": url.group(1) if url else None,
    }


def load_seed_requests(path: Path) -> list[dict[str, Any]]:
    """Every row of a seed-format JSONL file as a /v1/enhance body (message ids by line)."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [seed_to_request(row, i) for i, row in enumerate(rows)]
