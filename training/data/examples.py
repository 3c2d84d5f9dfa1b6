"""One labelled example: the item as the worker prompts it, its story key, its gold labels, and
the complete target (labels + schema-valid placeholders) it trains on.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app.contract import GeneratedMetadata, PromptItem, derive_fields, strip_tracking
from app.contract.field_guards import lead_sentences, summary_rejection
from app.contract.grounding import normalize_text
from app.contract.metadata import SUMMARY_MAX, SUMMARY_MIN

GENERATED_FIELDS: tuple[str, ...] = tuple(GeneratedMetadata.model_fields)

# Placeholders for unlabelled fields: schema-valid, zero loss weight. The summary placeholder is
# built from the headline (see `_placeholder_summary`), the closest thing to a summary we have.
PLACEHOLDERS: dict[str, Any] = {
    "key_topics": ["news"],
    "entities": [],
    "categories": ["other"],
    "sentiment": "neutral",
    "urgency_level": "low",
    "relevance_score": 5,
    "action_items": [],
}


@dataclass(frozen=True)
class LabeledExample:
    """One item and its gold labels (a subset of GeneratedMetadata fields)."""

    item: PromptItem
    labels: Mapping[str, Any]
    line: int
    key: str

    def target(self, *, silver_summaries: bool = False) -> tuple[dict[str, Any], frozenset[str]]:
        """A complete metadata dict (labels + placeholders) and the names of the placeholder fields.

        `silver_summaries`: an item without a gold summary learns its own first sentence that the
        field guards accept (newsletter blurbs lead with what happened), instead of a placeholder."""
        target: dict[str, Any] = {}
        placeholders = set()
        for name in GENERATED_FIELDS:
            if name in self.labels:
                target[name] = self.labels[name]
            elif name == "summary" and silver_summaries and (silver := self.silver_summary()) is not None:
                target[name] = silver
            else:
                target[name] = _placeholder_summary(self.item) if name == "summary" else PLACEHOLDERS[name]
                placeholders.add(name)
        return target, frozenset(placeholders)

    def silver_summary(self) -> str | None:
        labels = [*self.labels.get("key_topics", []), *self.labels.get("entities", [])]
        for sentence in lead_sentences(self.item.text):
            if summary_rejection(sentence, headline=self.item.headline, labels=labels) is None:
                return sentence
        return None


def _placeholder_summary(item: PromptItem) -> str:
    headline = " ".join(item.headline.split())
    if len(headline) > SUMMARY_MAX:
        headline = headline[: SUMMARY_MAX - 3].rsplit(" ", 1)[0] + "..."
    return headline if len(headline) >= SUMMARY_MIN else "News item from " + item.source[: SUMMARY_MAX - 20]


def prompt_item(item: Mapping[str, Any]) -> PromptItem:
    """The PromptItem the worker builds for this item (same text extraction, see worker.pipeline)."""
    url = item.get("url")
    derived = derive_fields(
        content=item["content"], links=[url] if url else [], has_html=item.get("has_html")
    )
    item_date = item.get("date")
    day = datetime.fromisoformat(item_date.replace("Z", "+00:00")).date().isoformat() if item_date else None
    return PromptItem(source=item["source"], headline=item["headline"], text=derived.text, url=url, date=day)


def item_key(item: PromptItem) -> str:
    """Identity of a story: its link without tracking parameters, else its normalised headline and text.

    Digests repeat a story under a decorated headline (the seed file holds 12 such pairs, labelled
    twice): one story is one example, and never on both sides of the train/validation split.
    """
    if item.url:
        identity = "url:" + strip_tracking(item.url).rstrip("/")
    else:
        identity = "text:" + json.dumps(
            [normalize_text(item.headline), normalize_text(item.text)], ensure_ascii=False
        )
    return hashlib.sha256(identity.encode("utf-8")).hexdigest()
