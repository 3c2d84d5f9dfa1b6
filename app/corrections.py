"""Reviewer corrections: validated with the contract, stored as labels beside the model output.

The review page and `PUT /v1/records/{id}/correction` both go through `validate_correction`, so a
correction is accepted by exactly the rules the model's own output must pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy.orm import Session

from app.contract import GeneratedMetadata
from app.contract.grounding import dedupe
from app.models import Record, utcnow

LIST_FIELDS = ("key_topics", "entities", "categories", "action_items")


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str


class CorrectionInvalid(ValueError):
    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{e.field}: {e.message}" for e in errors))

    def by_field(self) -> dict[str, list[str]]:
        grouped: dict[str, list[str]] = {}
        for error in self.errors:
            grouped.setdefault(error.field, []).append(error.message)
        return grouped


def _clean(data: Mapping[str, Any]) -> dict[str, Any]:
    """Trim text and drop blank or repeated list entries; everything else is left to the contract."""
    cleaned: dict[str, Any] = {}
    for name, value in data.items():
        if isinstance(value, str):
            value = value.strip()
        elif name in LIST_FIELDS and isinstance(value, list):
            value = dedupe([v.strip() if isinstance(v, str) else v for v in value if v not in ("", None)])
        cleaned[name] = value
    return cleaned


def validate_correction(data: Mapping[str, Any]) -> GeneratedMetadata:
    """The corrected generated fields, or CorrectionInvalid naming each bad field."""
    if not isinstance(data, Mapping):
        raise CorrectionInvalid([FieldError("body", "must be a JSON object of the generated fields")])
    try:
        return GeneratedMetadata.model_validate(_clean(data))
    except ValidationError as error:
        errors = []
        for problem in error.errors():
            location = problem.get("loc") or ("body",)
            errors.append(FieldError(str(location[0]), _message(problem, location)))
        raise CorrectionInvalid(errors) from None


def _message(problem: Mapping[str, Any], location: tuple[Any, ...]) -> str:
    message = str(problem.get("msg", "invalid"))
    if problem.get("type") == "extra_forbidden":
        return "is not a field of the metadata contract"
    if len(location) > 1 and isinstance(location[1], int):
        return f"entry {location[1] + 1}: {message}"
    return message


def form_to_correction(form: Mapping[str, Any], getlist: Any = None) -> dict[str, Any]:
    """The review form's fields as a correction payload (list fields: one entry per line)."""

    def lines(name: str) -> list[str]:
        return [line.strip() for line in str(form.get(name) or "").splitlines() if line.strip()]

    categories = getlist("categories") if getlist is not None else form.get("categories", [])
    return {
        "summary": str(form.get("summary") or ""),
        "key_topics": lines("key_topics"),
        "entities": lines("entities"),
        "categories": list(categories or []),
        "sentiment": str(form.get("sentiment") or ""),
        "urgency_level": str(form.get("urgency_level") or ""),
        "relevance_score": str(form.get("relevance_score") or "").strip(),
        "action_items": lines("action_items"),
    }


def save_correction(session: Session, *, record: Record, metadata: GeneratedMetadata) -> Record:
    """Store the correction as the record's label; the model output in `data` stays as it was."""
    record.corrected_data = metadata.model_dump(mode="json")
    record.reviewed = True
    record.reviewed_at = utcnow()
    record.indexed_at = None  # topics, story and search follow the correction (the worker re-indexes)
    session.flush()
    return record


def clear_correction(session: Session, *, record: Record) -> Record:
    record.corrected_data = None
    record.reviewed = False
    record.reviewed_at = None
    record.indexed_at = None
    session.flush()
    return record
