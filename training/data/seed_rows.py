"""The seed-row format: `{"messages": [...], "annotation": {...}}`
(../shared/data/seed/README.md); the item is parsed out of the seed user prompt, the labels come
from `annotation`.
"""

from __future__ import annotations

import re
from typing import Any

from app.contract.grounding import dedupe
from app.contract.metadata import (
    ENTITIES_MAX_ITEMS,
    ENTITY_MAX,
    ENTITY_MIN,
    SUMMARY_MAX,
    SUMMARY_MIN,
    TOPIC_MAX,
    TOPIC_MIN,
    TOPICS_MAX_ITEMS,
)
from training.data.record_rows import normalize_item

# The seed user prompt: "Analyze: <source>\n\n### <headline>\n...🔗 **Source:** <url>\n\n"
# "**Summary:** <text>\n\nJSON only:..."
_SEED_SOURCE = re.compile(r"^Analyze: (.+)$", re.M)
_SEED_HEADLINE = re.compile(r"^### (.+)$", re.M)
_SEED_URL = re.compile(r"\*\*Source:\*\* (\S+)")
_SEED_SUMMARY = re.compile(r"\*\*Summary:\*\* (.+?)(?:\n\nJSON only:|\Z)", re.S)
# Some seed headlines are decorated: "📰 **<headline>**". The ingester sends plain headlines.
_SEED_DECORATED_HEADLINE = re.compile(r"[^\w*]*\*\*(.+?)\*\*\s*")


def _clean_strings(values: list[str], *, min_len: int, max_len: int, max_items: int) -> tuple[list[str], int]:
    cleaned = dedupe([" ".join(v.split()) for v in values])
    kept = [v for v in cleaned if min_len <= len(v) <= max_len]
    return kept[:max_items], len(values) - len(kept[:max_items])


def _seed_labels(annotation: Any, notes: list[str], line: int) -> tuple[dict[str, Any], list[str]]:
    """Seed annotation -> labels. topics -> key_topics, companies -> entities (see docs/training.md)."""
    if not isinstance(annotation, dict):
        return {}, ["no `annotation` object: seed rows need the human labels"]
    labels: dict[str, Any] = {}
    problems = []
    score = annotation.get("relevance_score")
    if score is not None:
        if isinstance(score, int) and not isinstance(score, bool) and 1 <= score <= 10:
            labels["relevance_score"] = score
        else:
            problems.append(f"annotation.relevance_score must be an integer 1-10, got {score!r}")
    for source_name, target_name, min_len, max_len, max_items in (
        ("topics", "key_topics", TOPIC_MIN, TOPIC_MAX, TOPICS_MAX_ITEMS),
        ("companies", "entities", ENTITY_MIN, ENTITY_MAX, ENTITIES_MAX_ITEMS),
    ):
        values = annotation.get(source_name)
        if values is None:
            continue
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            problems.append(f"annotation.{source_name} must be a list of strings")
            continue
        kept, dropped = _clean_strings(values, min_len=min_len, max_len=max_len, max_items=max_items)
        if dropped:
            notes.append(
                f"line {line}: annotation.{source_name}: kept {len(kept)} of {len(values)} (schema bounds)"
            )
        # An empty companies list is not "no entities" (people and products count too): unlabelled.
        if kept:
            labels[target_name] = kept
    summary = annotation.get("summary")
    if isinstance(summary, str) and summary.strip():
        summary = " ".join(summary.split())
        if SUMMARY_MIN <= len(summary) <= SUMMARY_MAX:
            labels["summary"] = summary
        else:
            notes.append(
                f"line {line}: annotation.summary has {len(summary)} chars, "
                f"outside {SUMMARY_MIN}-{SUMMARY_MAX}: unlabelled"
            )
    elif summary is not None and not isinstance(summary, str):
        problems.append("annotation.summary must be a string")
    return labels, problems


def _seed_item(row: dict[str, Any]) -> dict[str, Any]:
    messages = row.get("messages")
    if not isinstance(messages, list):
        raise ValueError("`messages` must be a list")
    user = next((m.get("content") for m in messages if isinstance(m, dict) and m.get("role") == "user"), None)
    if not isinstance(user, str):
        raise ValueError("no user message with text content")
    headline = _SEED_HEADLINE.search(user)
    summary = _SEED_SUMMARY.search(user)
    if headline is None or summary is None:
        raise ValueError("user prompt lacks '### <headline>' or '**Summary:** <text>'")
    source = _SEED_SOURCE.search(user)
    url = _SEED_URL.search(user)
    plain = _SEED_DECORATED_HEADLINE.fullmatch(headline.group(1).strip())
    created = (row.get("metadata") or {}).get("created_at")
    return normalize_item(
        {
            "source": source.group(1).strip() if source else "newsletter",
            "headline": (plain.group(1) if plain else headline.group(1)).strip(),
            "content": summary.group(1).strip(),
            "url": url.group(1) if url else None,
            "date": created if isinstance(created, str) else None,
        }
    )
