"""NewsMetadata v1: the model-generated fields, their bounds, and the stored record.

The bounds are part of the contract: they make the longest valid output finite, which is what
lets the worker derive a token budget that always fits (see `max_output_chars`).
"""

from __future__ import annotations

import json
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

SCHEMA_VERSION = "1"

# xgrammar is compiled with the same separators, so training targets and constrained output
# are byte-identical in layout.
JSON_SEPARATORS: tuple[str, str] = (", ", ": ")

SUMMARY_MIN, SUMMARY_MAX = 10, 300
TOPIC_MIN, TOPIC_MAX, TOPICS_MIN_ITEMS, TOPICS_MAX_ITEMS = 2, 48, 1, 5
ENTITY_MIN, ENTITY_MAX, ENTITIES_MAX_ITEMS = 2, 64, 8
CATEGORIES_MIN_ITEMS, CATEGORIES_MAX_ITEMS = 1, 3
ACTION_MIN, ACTION_MAX, ACTIONS_MAX_ITEMS = 3, 120, 3


class Category(StrEnum):
    research = "research"
    model_release = "model_release"
    product_launch = "product_launch"
    funding_business = "funding_business"
    infrastructure_hardware = "infrastructure_hardware"
    open_source = "open_source"
    developer_tools = "developer_tools"
    policy_regulation = "policy_regulation"
    safety_security = "safety_security"
    opinion_analysis = "opinion_analysis"
    tutorial = "tutorial"
    other = "other"


CATEGORIES: tuple[str, ...] = tuple(c.value for c in Category)


class Sentiment(StrEnum):
    positive = "positive"
    neutral = "neutral"
    negative = "negative"
    mixed = "mixed"


class Urgency(StrEnum):
    low = "low"
    medium = "medium"
    high = "high"


Summary = Annotated[str, StringConstraints(min_length=SUMMARY_MIN, max_length=SUMMARY_MAX)]
Topic = Annotated[str, StringConstraints(min_length=TOPIC_MIN, max_length=TOPIC_MAX)]
Entity = Annotated[str, StringConstraints(min_length=ENTITY_MIN, max_length=ENTITY_MAX)]
ActionItem = Annotated[str, StringConstraints(min_length=ACTION_MIN, max_length=ACTION_MAX)]


class GeneratedMetadata(BaseModel):
    """The part the model writes. Field order is generation order: cheap grounded fields first."""

    model_config = ConfigDict(extra="forbid", use_enum_values=True)

    summary: Summary = Field(description="One sentence saying what happened.")
    key_topics: list[Topic] = Field(min_length=TOPICS_MIN_ITEMS, max_length=TOPICS_MAX_ITEMS)
    entities: list[Entity] = Field(
        max_length=ENTITIES_MAX_ITEMS,
        description="Organisations, people and products named in the item.",
    )
    categories: list[Category] = Field(min_length=CATEGORIES_MIN_ITEMS, max_length=CATEGORIES_MAX_ITEMS)
    sentiment: Sentiment
    urgency_level: Urgency
    relevance_score: int = Field(ge=1, le=10)
    action_items: list[ActionItem] = Field(max_length=ACTIONS_MAX_ITEMS)


class NewsMetadata(GeneratedMetadata):
    """A stored record: generated fields plus the fields code computes from the item."""

    schema_version: str = Field(default=SCHEMA_VERSION, pattern=r"^1$")
    source: str = Field(min_length=1, max_length=200)
    headline: str = Field(max_length=1000)
    date: datetime | None
    url: str | None = Field(default=None, max_length=4000)
    links: list[str] = Field(max_length=200)
    content_length: int = Field(ge=0)
    link_count: int = Field(ge=0)
    word_count: int = Field(ge=0)
    reading_time_minutes: int = Field(ge=0)
    has_html: bool


def _strict(schema: dict[str, Any]) -> dict[str, Any]:
    """Every property required and nothing extra: the grammar then has exactly one shape."""
    for definition in [schema, *schema.get("$defs", {}).values()]:
        if definition.get("type") == "object" and "properties" in definition:
            definition["required"] = list(definition["properties"])
            definition["additionalProperties"] = False
    return schema


def generated_json_schema() -> dict[str, Any]:
    """JSON Schema used for constrained decoding and for validating model output."""
    return _strict(GeneratedMetadata.model_json_schema())


def news_metadata_json_schema() -> dict[str, Any]:
    """JSON Schema of a stored record (`enhancer schema`)."""
    schema = NewsMetadata.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = f"NewsMetadata v{SCHEMA_VERSION}"
    return schema


def render_target(metadata: GeneratedMetadata | dict[str, Any]) -> str:
    """The exact assistant text for a metadata object (training target, decoding layout)."""
    data = metadata.model_dump(mode="json") if isinstance(metadata, BaseModel) else metadata
    ordered = {name: data[name] for name in GeneratedMetadata.model_fields if name in data}
    return json.dumps(ordered, ensure_ascii=False, separators=JSON_SEPARATORS)


def max_output_chars() -> int:
    """Characters of the longest schema-valid output: the basis of the token budget."""
    longest_category = max(len(c) for c in CATEGORIES)
    longest_enum = max(len(v) for v in [*Sentiment, *Urgency])
    values = (
        SUMMARY_MAX
        + TOPICS_MAX_ITEMS * (TOPIC_MAX + 4)
        + ENTITIES_MAX_ITEMS * (ENTITY_MAX + 4)
        + CATEGORIES_MAX_ITEMS * (longest_category + 4)
        + 2 * (longest_enum + 2)
        + 2
        + ACTIONS_MAX_ITEMS * (ACTION_MAX + 4)
    )
    keys = sum(len(name) + 6 for name in GeneratedMetadata.model_fields)
    return values + keys + 2
