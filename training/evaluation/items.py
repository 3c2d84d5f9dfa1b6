"""Evaluation items: what the worker would receive (ItemInput) plus whatever gold a line carries.

Annotated seed rows and record rows are parsed by training.data (the same parser training uses);
the gold comes from the raw `annotation` of the line, not from the schema-bounded training labels,
so that a gold list longer than the schema allows still counts in recall. Unannotated seed rows
(`unannotated_test.jsonl`) have no annotation: their templated assistant reply is kept as the
`reference` of the upstream composite score.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from app.contract import PromptItem, strip_tracking
from training.data.examples import item_key, prompt_item
from training.data.loading import load_examples
from training.data.seed_rows import _seed_item
from training.errors import DataError, TrainingError
from worker.pipeline import ItemInput


@dataclass(frozen=True)
class Gold:
    """Human labels of one item; None means 'no label' (the item does not count for that metric)."""

    entities: tuple[str, ...] | None = None
    key_topics: tuple[str, ...] | None = None
    relevance_score: int | None = None
    summary: str | None = None


@dataclass(frozen=True)
class EvalItem:
    key: str  # training.data.examples.item_key: identity of everything the model sees
    prompt: PromptItem
    gold: Gold = field(default_factory=Gold)
    reference: str | None = None  # the upstream templated assistant reply (composite score only)
    line: int = 0

    @property
    def headline_key(self) -> str:
        return headline_key(self.prompt.headline)

    @property
    def url_key(self) -> str | None:
        return url_key(self.prompt.url)

    def item_input(self) -> ItemInput:
        """The worker's input. `text` is already the extracted plain text: has_html=False keeps it as is."""
        day = datetime.fromisoformat(self.prompt.date) if self.prompt.date else None
        return ItemInput(
            source=self.prompt.source,
            headline=self.prompt.headline,
            content=self.prompt.text,
            date=day,
            url=self.prompt.url,
            has_html=False,
        )


def headline_key(headline: str) -> str:
    """Headline identity across files: the test file wraps headlines in '📰 **...**'."""
    text = unicodedata.normalize("NFKC", headline).casefold()
    return " ".join(re.findall(r"\w+", text))


def url_key(url: str | None) -> str | None:
    if not url:
        return None
    try:
        cleaned = strip_tracking(url)
    except ValueError:
        cleaned = url
    return cleaned.rstrip("/").casefold() or None


def _as_tuple(values: Any) -> tuple[str, ...] | None:
    if not isinstance(values, list):
        return None
    cleaned = tuple(" ".join(str(v).split()) for v in values if isinstance(v, str) and v.strip())
    return cleaned or None  # an empty list is "no label" (companies miss people and products)


def _gold_from_annotation(annotation: dict[str, Any]) -> Gold:
    score = annotation.get("relevance_score")
    summary = annotation.get("summary")
    return Gold(
        entities=_as_tuple(annotation.get("companies")),
        key_topics=_as_tuple(annotation.get("topics")),
        relevance_score=score if isinstance(score, int) and not isinstance(score, bool) else None,
        summary=" ".join(summary.split()) if isinstance(summary, str) and summary.strip() else None,
    )


def _gold_from_labels(labels: dict[str, Any]) -> Gold:
    return Gold(
        entities=_as_tuple(labels.get("entities")),
        key_topics=_as_tuple(labels.get("key_topics")),
        relevance_score=labels.get("relevance_score"),
        summary=labels.get("summary"),
    )


def _reference(row: dict[str, Any]) -> str | None:
    messages = row.get("messages") or []
    return next(
        (m.get("content") for m in messages if isinstance(m, dict) and m.get("role") == "assistant"), None
    )


def _unannotated_items(path: Path, rows: list[tuple[int, dict[str, Any]]]) -> list[EvalItem]:
    items: dict[str, EvalItem] = {}
    problems = []
    for line, row in rows:
        try:
            prompt = prompt_item(_seed_item(row))
        except ValueError as error:
            problems.append(f"line {line}: {error}")
            continue
        key = item_key(prompt)
        items.setdefault(key, EvalItem(key=key, prompt=prompt, reference=_reference(row), line=line))
    if problems:
        raise DataError(path, problems)
    return list(items.values())


def load_eval_items(path: Path, *, keep_superseded: bool = False) -> list[EvalItem]:
    """Items of a JSONL file, one per story (the later line, as training keeps), with gold and references.

    Rows with an `annotation` (or record rows) go through training.data.loading.load_examples; a file of
    seed rows without annotations is read as a reference-only test set (composite score).
    keep_superseded: also the earlier lines of a repeated story, each its own item (label agreement).
    """
    if not path.is_file():
        raise TrainingError(f"{path}: no such data file")
    lines = path.read_text(encoding="utf-8").splitlines()
    rows = [(n, json.loads(text)) for n, text in enumerate(lines, start=1) if text.strip()]
    if rows and all(isinstance(r, dict) and "messages" in r and "annotation" not in r for _, r in rows):
        return _unannotated_items(path, rows)
    loaded = load_examples(path)
    raw = dict(rows)
    items = []
    examples = [*loaded.examples, *(loaded.superseded if keep_superseded else [])]
    for example in sorted(examples, key=lambda e: e.line):
        row = raw[example.line]
        if isinstance(row.get("annotation"), dict):
            gold = _gold_from_annotation(row["annotation"])
        else:
            gold = _gold_from_labels(dict(example.labels))
        items.append(
            EvalItem(
                key=example.key, prompt=example.item, gold=gold, reference=_reference(row), line=example.line
            )
        )
    return items


def story_groups(items: list[EvalItem]) -> list[list[EvalItem]]:
    """Items that are the same story (same normalised headline or URL) form one group.

    annotated_train.jsonl holds 12 stories twice, with different labels: splitting a pair across
    folds would train on the very item being scored.
    """
    parent = list(range(len(items)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    seen: dict[str, int] = {}
    for index, item in enumerate(items):
        for key in (f"h:{item.headline_key}", f"u:{item.url_key}" if item.url_key else None):
            if key is None:
                continue
            if key in seen:
                parent[find(index)] = find(seen[key])
            else:
                seen[key] = index
    groups: dict[int, list[EvalItem]] = {}
    for index, item in enumerate(items):
        groups.setdefault(find(index), []).append(item)
    return list(groups.values())
