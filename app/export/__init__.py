"""Exports of enhanced records: NotebookLM zip, Markdown, JSONL, CSV (see docs/export.md)."""

from app.export.formats import FORMATS, ExportStream, UnknownFormat, open_export
from app.export.notebooklm import ExportTooLarge, NotebookLimits

__all__ = ["FORMATS", "ExportStream", "ExportTooLarge", "NotebookLimits", "UnknownFormat", "open_export"]
