"""Seed items (../shared/data/seed) turned into /v1/enhance request bodies."""

from __future__ import annotations

import json
import re
from pathlib import Path

_HEADLINE = re.compile(r"^### (.+)$", re.M)
_URL = re.compile(r"\*\*Source:\*\* (\S+)")
_SUMMARY = re.compile(r"\*\*Summary:\*\* (.+?)(?:\n\nJSON only:|\Z)", re.S)
_SOURCE = re.compile(r"^Analyze: (.+)$", re.M)


def seed_to_request(row: dict, index: int) -> dict:
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


def load_seed_requests(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [seed_to_request(row, i) for i, row in enumerate(rows)]
