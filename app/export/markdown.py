"""Markdown rendering of records: one `####` block per item under week (`##`) and source (`###`).

Text from items and the model is flattened to one line and escaped, so nothing it contains can
open a heading, a list, a code block or a link and break the document's structure.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from datetime import date, datetime, timedelta
from urllib.parse import quote

from app.record_query import RecordRow

# Characters that could open Markdown syntax inside a line, escaped with a backslash.
_ESCAPES = str.maketrans({c: "\\" + c for c in "\\`*_[]<>|#~"})
_LIST_START = re.compile(r"^(\d+)([.)])")


def count_words(text: str) -> int:
    """Words as NotebookLM-style limits count them: runs of non-space characters."""
    return len(text.split())


def inline(value: object) -> str:
    """Any text as one escaped Markdown line."""
    text = " ".join(str(value).split()).translate(_ESCAPES)
    if text[:1].isdigit():
        text = _LIST_START.sub(r"\1\\\2", text)  # "1. foo" would start an ordered list
    if text[:1] in ("-", "+", "="):
        text = "\\" + text
    return text


def link(url: str | None) -> str | None:
    """An autolink for http(s) URLs; anything else is not linked."""
    if not url or not url.lower().startswith(("http://", "https://")):
        return None
    return "<" + quote(url.strip(), safe=":/?#[]@!$&'()*+,;=%~-._") + ">"


def week_start(day: datetime | date) -> date:
    day = day.date() if isinstance(day, datetime) else day
    return day - timedelta(days=day.weekday())


def week_label(start: date) -> str:
    year, week, _ = start.isocalendar()
    return f"{year}-W{week:02d}"


def week_heading(start: date) -> str:
    end = start + timedelta(days=6)
    return f"## Week {week_label(start)} ({start.isoformat()} to {end.isoformat()})\n\n"


def source_heading(source: str) -> str:
    return f"### Source: {inline(source) or 'unknown'}\n\n"


def _joined(values: Iterable[object]) -> str:
    return ", ".join(inline(v) for v in values) or "none"


def _category(value: str) -> str:
    return value.replace("_", " ")


def render_item(row: RecordRow) -> str:
    """One item: headline, source link, date, summary, topics, entities, categories, sentiment,
    urgency, relevance, action items, and whether a person reviewed it."""
    meta = row.metadata
    headline = inline(meta.get("headline") or row.subject) or "(untitled)"
    url = link(meta.get("url") or row.url)
    lines = [f"#### {headline}", ""]
    lines.append(f"- **Source:** {inline(row.source)}" + (f" · {url}" if url else ""))
    lines.append(f"- **Date:** {row.date.date().isoformat()}")
    lines.append(f"- **Summary:** {inline(meta.get('summary', ''))}")
    lines.append(f"- **Topics:** {_joined(meta.get('key_topics', []))}")
    lines.append(f"- **Entities:** {_joined(meta.get('entities', []))}")
    lines.append(f"- **Categories:** {_joined(_category(c) for c in meta.get('categories', []))}")
    lines.append(f"- **Sentiment:** {inline(meta.get('sentiment', ''))}")
    lines.append(f"- **Urgency:** {inline(meta.get('urgency_level', ''))}")
    if meta.get("relevance_score") is not None:
        lines.append(f"- **Relevance:** {meta['relevance_score']}/10")
    actions = meta.get("action_items") or []
    if actions:
        lines.append("- **Action items:**")
        lines.extend(f"  - {inline(action)}" for action in actions)
    else:
        lines.append("- **Action items:** none")
    if row.reviewed:
        when = row.reviewed_at.date().isoformat() if row.reviewed_at else "unknown date"
        lines.append(f"- **Reviewed:** checked by a person on {when}")
    return "\n".join(lines) + "\n\n"


def render_document(rows: Iterable[RecordRow], *, title: str, preamble: str = "") -> Iterator[str]:
    """A whole Markdown document from rows in (date, id) order, grouped by week then source.

    Within a week items are grouped by source in the order sources first appear; rows arrive in
    date order across sources, so each week's rows are held until the week ends (one week at a time).
    """
    yield f"# {inline(title)}\n\n"
    if preamble:
        yield preamble.rstrip() + "\n\n"
    current_week: date | None = None
    by_source: dict[str, list[str]] = {}
    written = 0
    for row in rows:
        week = week_start(row.date)
        if week != current_week:
            if current_week is not None:
                yield from _week_block(current_week, by_source)
            current_week, by_source = week, {}
        by_source.setdefault(row.source, []).append(render_item(row))
        written += 1
    if current_week is not None:
        yield from _week_block(current_week, by_source)
    if not written:
        yield "No records match this export.\n"


def _week_block(week: date, by_source: dict[str, list[str]]) -> Iterator[str]:
    yield week_heading(week)
    for source in sorted(by_source, key=str.casefold):
        yield source_heading(source)
        yield from by_source[source]
