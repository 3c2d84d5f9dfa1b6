"""The hand-written newsletter items the tests use (tests/data, see its README.md).

They have the row format of the seed data (../shared/data/seed, which the tests never need):
`newsletter_items.jsonl` like annotated_train.jsonl (`messages`, `metadata`, `annotation`; 28 lines,
24 stories, 4 of them labelled twice), `newsletter_items_unlabelled.jsonl` like
unannotated_test.jsonl (`messages`, `metadata`; 16 lines, 6 of them stories of the labelled file).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).resolve().parent / "data"
LABELLED = DATA_DIR / "newsletter_items.jsonl"
UNLABELLED = DATA_DIR / "newsletter_items_unlabelled.jsonl"


def labelled_lines(count: int | None = None) -> list[str]:
    """The first `count` (default all) non-blank lines of the labelled file."""
    lines = [line for line in LABELLED.read_text(encoding="utf-8").splitlines() if line.strip()]
    return lines[:count] if count else lines


def labelled_rows(count: int | None = None) -> list[dict[str, Any]]:
    return [json.loads(line) for line in labelled_lines(count)]
