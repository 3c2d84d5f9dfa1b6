"""The record-row format: `{"item": {...}, "metadata": {...}}`, written by `training_row` (the
review page's `enhancer export --format training`); `metadata` holds any subset of
GeneratedMetadata fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from typing import Annotated, Any

from pydantic import TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from app.contract import GeneratedMetadata, NewsMetadata
from training.data.examples import GENERATED_FIELDS

# Record fields the code computes (NewsMetadata minus GeneratedMetadata): ignored in `metadata`, so a
# whole stored record can be passed as metadata.
COMPUTED_FIELDS = frozenset(NewsMetadata.model_fields) - frozenset(GENERATED_FIELDS)
ITEM_FIELDS = ("source", "headline", "content", "url", "date", "has_html")


def _field_adapter(info: FieldInfo) -> TypeAdapter[Any]:
    # A type built at run time from the field's annotation and FieldInfo: mypy accepts only static
    # type expressions as a TypeForm, so the built type is held as Any.
    annotated: Any = Annotated[info.annotation, info]
    return TypeAdapter(annotated)


_FIELD_ADAPTERS: dict[str, TypeAdapter[Any]] = {
    name: _field_adapter(info) for name, info in GeneratedMetadata.model_fields.items()
}


def _iso_date(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, str):
        datetime.fromisoformat(value.replace("Z", "+00:00"))  # raises ValueError when it is not ISO 8601
        return value
    raise ValueError(f"date must be an ISO 8601 string, not {type(value).__name__}")


def normalize_item(item: Mapping[str, Any]) -> dict[str, Any]:
    """The item part of a training row: source, headline (or `subject`), content, url, date, has_html."""
    problems = []
    source = item.get("source")
    headline = item.get("headline", item.get("subject"))
    content = item.get("content")
    url = item.get("url")
    has_html = item.get("has_html")
    if not isinstance(source, str) or not source.strip():
        problems.append("item.source must be a non-empty string")
    if not isinstance(headline, str):
        problems.append("item.headline (or item.subject) must be a string")
    if not isinstance(content, str) or not content.strip():
        problems.append("item.content must be a non-empty string")
    if url is not None and not isinstance(url, str):
        problems.append("item.url must be a string or null")
    if has_html is not None and not isinstance(has_html, bool):
        problems.append("item.has_html must be true, false or null")
    try:
        item_date = _iso_date(item.get("date"))
    except ValueError as error:
        problems.append(f"item.date: {error}")
        item_date = None
    if problems:
        raise ValueError("; ".join(problems))
    return {
        "source": source.strip(),  # type: ignore[union-attr]
        "headline": headline,
        "content": content,
        "url": str(url) if url else None,
        "date": item_date,
        "has_html": has_html,
    }


def validate_metadata(metadata: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(labels, problems) for a partial GeneratedMetadata object; null means 'no label'."""
    labels: dict[str, Any] = {}
    problems = []
    for name, value in metadata.items():
        if name in COMPUTED_FIELDS:
            continue
        if name not in _FIELD_ADAPTERS:
            problems.append(
                f"metadata.{name}: unknown field (expected some of {', '.join(GENERATED_FIELDS)})"
            )
            continue
        if value is None:
            continue
        if name == "relevance_score" and (isinstance(value, bool) or not isinstance(value, int)):
            problems.append(f"metadata.relevance_score: must be an integer 1-10, got {value!r}")
            continue
        adapter = _FIELD_ADAPTERS[name]
        try:
            labels[name] = adapter.dump_python(adapter.validate_python(value), mode="json")
        except ValidationError as error:
            first = error.errors()[0]
            where = "".join(f"[{p}]" for p in first["loc"])
            problems.append(f"metadata.{name}{where}: {first['msg']}")
    return labels, problems


def training_row(item: Mapping[str, Any], metadata: Mapping[str, Any]) -> dict[str, Any]:
    """One line of the record training format (the review page's export writes exactly this).

    `item`: source, headline or subject, content, url, date (str or datetime), has_html; other keys
    are ignored. `metadata`: any subset of GeneratedMetadata fields (a full stored record works:
    computed fields are dropped; null or missing fields are unlabelled). Raises ValueError naming
    every problem.
    """
    normalized = normalize_item(item)
    labels, problems = validate_metadata(metadata)
    if not labels and not problems:
        problems.append("metadata has no labelled field")
    if problems:
        raise ValueError("; ".join(problems))
    ordered = {name: labels[name] for name in GENERATED_FIELDS if name in labels}
    return {"item": normalized, "metadata": ordered}
