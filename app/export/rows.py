"""JSONL and CSV exports: one row per record with every field of the record, its metadata and item.

`metadata` is the effective metadata (a reviewer's correction wins); `model_metadata` is what the
model produced and `corrected_metadata` the correction, so nothing is lost either way.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from app.contract import NewsMetadata
from app.record_query import RecordRow

FLUSH_EVERY = 200  # rows per yielded chunk

RECORD_COLUMNS = (
    "id", "job_id", "item_id", "source", "date", "created_at", "model_version_id", "generation_seconds",
    "reviewed", "reviewed_at",
)  # fmt: skip
# NewsMetadata's source and date are the record's own (the columns above).
METADATA_COLUMNS = tuple(name for name in NewsMetadata.model_fields if name not in RECORD_COLUMNS)
ITEM_COLUMNS = (
    "item_subject", "item_sender", "item_message_id", "item_date", "item_url", "item_links", "item_has_html",
    "item_content",
)  # fmt: skip
JSON_COLUMNS = ("model_metadata", "corrected_metadata")
CSV_COLUMNS = RECORD_COLUMNS + METADATA_COLUMNS + ITEM_COLUMNS + JSON_COLUMNS


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def record_dict(row: RecordRow) -> dict[str, Any]:
    """The JSONL object of one record."""
    return {
        "id": row.id,
        "job_id": row.job_id,
        "item_id": row.item_id,
        "source": row.source,
        "date": _iso(row.date),
        "created_at": _iso(row.created_at),
        "model_version_id": row.model_version_id,
        "generation_seconds": row.generation_seconds,
        "reviewed": row.reviewed,
        "reviewed_at": _iso(row.reviewed_at),
        "metadata": row.metadata,
        "model_metadata": row.data,
        "corrected_metadata": row.corrected_data,
        "item": {
            "subject": row.subject,
            "sender": row.sender,
            "message_id": row.message_id,
            "date": _iso(row.item_date),
            "url": row.url,
            "links": row.links,
            "has_html": row.has_html,
            "content": row.content,
        },
    }


# A spreadsheet runs a cell that starts with one of these as a formula (=HYPERLINK(...) in a headline
# of an untrusted newsletter). A leading apostrophe makes it text (OWASP's CSV injection advice).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> str:
    """CSV cell text: lists and objects as JSON, booleans as true/false, missing as empty, text that a
    spreadsheet would run as a formula prefixed with an apostrophe (numbers stay numbers)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return str(value)


def csv_values(row: RecordRow) -> list[str]:
    record = record_dict(row)
    item = record["item"]
    values = [record[name] for name in RECORD_COLUMNS]
    values += [record["metadata"].get(name) for name in METADATA_COLUMNS]
    values += [item[name.removeprefix("item_")] for name in ITEM_COLUMNS]
    values += [record[name] for name in JSON_COLUMNS]
    return [csv_cell(v) for v in values]


def iter_jsonl(rows: Iterable[RecordRow]) -> Iterator[bytes]:
    buffer: list[str] = []
    for row in rows:
        buffer.append(json.dumps(record_dict(row), ensure_ascii=False) + "\n")
        if len(buffer) >= FLUSH_EVERY:
            yield "".join(buffer).encode("utf-8")
            buffer.clear()
    if buffer:
        yield "".join(buffer).encode("utf-8")


def iter_csv(rows: Iterable[RecordRow]) -> Iterator[bytes]:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    pending = 0
    for row in rows:
        writer.writerow(csv_values(row))
        pending += 1
        if pending >= FLUSH_EVERY:
            yield text.getvalue().encode("utf-8")
            text.seek(0)
            text.truncate()
            pending = 0
    yield text.getvalue().encode("utf-8")
