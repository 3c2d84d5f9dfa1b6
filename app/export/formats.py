"""One entry point for every export format: `open_export(format, filters)` -> a byte stream.

Anything that can fail (an unknown format, filters no layout can satisfy) fails here, before the
first byte, so the API can still answer with a 4xx; the stream itself only reads and writes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from app.export.markdown import render_document
from app.export.notebooklm import NotebookLimits, iter_zip, plan_export
from app.export.rows import iter_csv, iter_jsonl
from app.record_query import RecordFilter, iter_records

FORMATS = ("notebooklm", "markdown", "jsonl", "csv")

_MEDIA_TYPES = {
    "notebooklm": ("application/zip", "zip"),
    "markdown": ("text/markdown; charset=utf-8", "md"),
    "jsonl": ("application/x-ndjson", "jsonl"),
    "csv": ("text/csv; charset=utf-8", "csv"),
}


class UnknownFormat(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(f"unknown export format {name!r}; valid formats: {', '.join(FORMATS)}")


@dataclass
class ExportStream:
    format: str
    media_type: str
    filename: str
    chunks: Iterator[bytes]


def _encoded(texts: Iterator[str], flush_chars: int = 64 * 1024) -> Iterator[bytes]:
    pending: list[str] = []
    size = 0
    for text in texts:
        pending.append(text)
        size += len(text)
        if size >= flush_chars:
            yield "".join(pending).encode("utf-8")
            pending.clear()
            size = 0
    if pending:
        yield "".join(pending).encode("utf-8")


def open_export(
    format: str,
    filters: RecordFilter = RecordFilter(),  # frozen: a shared default is safe
    *,
    limits: NotebookLimits | None = None,
    now: datetime | None = None,
    plan: str = "records",
    period: str = "week",
) -> ExportStream:
    """Validate and plan an export; the returned stream reads records lazily, chunk by chunk.

    NotebookLM's layout is `plan`: "records" (every item, by week and newsletter) or "digest" (one
    source per `period`, day or week: its stories, each once; app/export/notebooklm_digests.py)."""
    if format not in FORMATS:
        raise UnknownFormat(format)
    if plan not in ("records", "digest"):
        raise ValueError(f"unknown plan {plan!r}; valid plans: records, digest (format=notebooklm)")
    if plan == "digest" and format != "notebooklm":
        raise ValueError("plan=digest is a NotebookLM layout: use it with format=notebooklm")
    now = now or datetime.now(UTC)
    media_type, extension = _MEDIA_TYPES[format]
    filename = f"newsletter-{format}-{now:%Y%m%d-%H%M%S}.{extension}"
    if format == "notebooklm" and plan == "digest":
        # Imported here: the digests import app.export.markdown, whose package imports this module.
        from app.export.notebooklm_digests import iter_digest_zip, plan_digest_export

        digest_plan = plan_digest_export(filters, limits, period=period, now=now)
        filename = f"newsletter-notebooklm-digest-{period}-{now:%Y%m%d-%H%M%S}.zip"
        return ExportStream(format, media_type, filename, iter_digest_zip(digest_plan))
    if format == "notebooklm":
        layout = plan_export(filters, limits or NotebookLimits.from_settings(), now=now)
        return ExportStream(format, media_type, filename, iter_zip(layout))
    if format == "markdown":
        preamble = f"Exported {now:%Y-%m-%d %H:%M} UTC by newsletter-enhancer. Filters: {filters.describe()}."
        document = render_document(
            iter_records(filters, with_content=False), title="Newsletter digest", preamble=preamble
        )
        return ExportStream(format, media_type, filename, _encoded(document))
    rows = iter_records(filters)
    chunks = iter_jsonl(rows) if format == "jsonl" else iter_csv(rows)
    return ExportStream(format, media_type, filename, chunks)
