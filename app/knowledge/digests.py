"""Digests: a day's or a week's stories, grouped by topic, as Markdown, HTML or JSON.

A story belongs to the period it broke in (its `first_date`), so consecutive digests share no
story; it comes with everything known about it when the digest is built: the summary of its most
relevant record, every newsletter that told it and every source link. A story goes under its
first canonical topic (the one most of its records name), a story without topics under "Other"
(always last). Groups are ordered by their best story's relevance, then by size; stories within a
group by relevance, then by the date they broke.

`GET /v1/digests`, `enhancer digest` and the NotebookLM export's digest plan
(app/export/notebooklm_digests.py) all render through here.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal, get_args

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.export.markdown import count_words, inline, link, week_label, week_start
from app.knowledge.stories import story_link
from app.knowledge.story_query import StoryFilter, StoryView, _story_filters, story_views
from app.models import Story

PeriodKind = Literal["day", "week"]
PERIODS: tuple[str, ...] = get_args(PeriodKind)
DigestFormat = Literal["markdown", "html", "json"]
DIGEST_FORMATS: tuple[str, ...] = get_args(DigestFormat)
MEDIA_TYPES = {
    "markdown": "text/markdown; charset=utf-8",
    "html": "text/html; charset=utf-8",
    "json": "application/json",
}
OTHER = "Other"
MAX_STORIES = 10_000  # per digest; a digest cut there says so (`truncated`)


# Periods ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Period:
    """A UTC day, or an ISO week (Monday to Sunday)."""

    kind: str
    start: date

    @classmethod
    def of(cls, kind: str, day: date | datetime) -> Period:
        if kind not in PERIODS:
            raise ValueError(f"period must be one of: {', '.join(PERIODS)} (not {kind!r})")
        if isinstance(day, datetime):
            day = (day.astimezone(UTC) if day.tzinfo else day).date()
        period = cls(kind, week_start(day) if kind == "week" else day)
        if period.start > date.max - timedelta(days=7):
            raise ValueError(f"the {kind} of {day.isoformat()} ends too close to year 9999's end")
        return period

    @property
    def end(self) -> date:
        """The first day after the period."""
        return self.start + timedelta(days=7 if self.kind == "week" else 1)

    @property
    def since(self) -> datetime:
        return datetime(self.start.year, self.start.month, self.start.day, tzinfo=UTC)

    @property
    def until(self) -> datetime:
        end = self.end
        return datetime(end.year, end.month, end.day, tzinfo=UTC)

    @property
    def label(self) -> str:
        """2025-01-06 (a day), 2025-W02 (a week): also the NotebookLM source files' names."""
        return week_label(self.start) if self.kind == "week" else self.start.isoformat()

    @property
    def title(self) -> str:
        if self.kind == "week":
            last = self.end - timedelta(days=1)
            return f"week {self.label} ({self.start.isoformat()} to {last.isoformat()})"
        return f"{self.start:%A} {self.label}"

    def next(self) -> Period:
        return Period(self.kind, self.end)


def periods_between(kind: str, since: datetime, until: datetime) -> list[Period]:
    """Every period that overlaps [since, until), in order."""
    period = Period.of(kind, since)
    periods = []
    while period.since < until:
        periods.append(period)
        period = period.next()
    return periods


# Building ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TopicGroup:
    topic: str
    stories: list[StoryView]

    @property
    def best_relevance(self) -> int:
        return max((s.max_relevance or 0 for s in self.stories), default=0)


@dataclass(frozen=True)
class Digest:
    period: Period
    filters: StoryFilter  # topic, entity, min_relevance (the period sets the dates)
    groups: list[TopicGroup]
    generated_at: datetime
    truncated: bool = False
    part: int | None = None  # a NotebookLM source that holds part of a period's digest

    @property
    def stories(self) -> list[StoryView]:
        return [story for group in self.groups for story in group.stories]

    @property
    def story_count(self) -> int:
        return sum(len(group.stories) for group in self.groups)

    @property
    def record_count(self) -> int:
        return sum(len(story.records) for story in self.stories)

    @property
    def sources(self) -> list[str]:
        return sorted({source for story in self.stories for source in story.sources}, key=str.casefold)

    def subset(self, story_ids: Iterable[str], *, part: int | None = None) -> Digest:
        """These stories only, in this digest's order."""
        keep = set(story_ids)
        groups = [
            TopicGroup(group.topic, [story for story in group.stories if story.id in keep])
            for group in self.groups
        ]
        return replace(self, groups=[group for group in groups if group.stories], part=part)

    def as_json(self) -> dict[str, Any]:
        return {
            "period": {
                "kind": self.period.kind,
                "label": self.period.label,
                "start": self.period.start.isoformat(),
                "end": (self.period.end - timedelta(days=1)).isoformat(),
            },
            "generated_at": self.generated_at.isoformat(),
            "filters": self.filters.as_dict(),
            "story_count": self.story_count,
            "record_count": self.record_count,
            "sources": self.sources,
            "truncated": self.truncated,
            "part": self.part,
            "groups": [
                {"topic": group.topic, "stories": [story.as_json() for story in group.stories]}
                for group in self.groups
            ],
        }


def _story_order(story: StoryView) -> tuple[int, datetime, str]:
    return -(story.max_relevance or 0), story.first_date, story.id


def group_by_topic(stories: Iterable[StoryView]) -> list[TopicGroup]:
    """Stories under their first canonical topic, in digest order (see the module's docstring)."""
    by_topic: dict[str, list[StoryView]] = {}
    other: list[StoryView] = []
    for story in stories:
        if story.topics:
            by_topic.setdefault(story.topics[0], []).append(story)
        else:
            other.append(story)
    groups = [TopicGroup(topic, sorted(members, key=_story_order)) for topic, members in by_topic.items()]
    groups.sort(key=lambda g: (-g.best_relevance, -len(g.stories), g.topic.casefold(), g.topic))
    if other:
        groups.append(TopicGroup(OTHER, sorted(other, key=_story_order)))
    return groups


def period_stories(
    session: Session, *, period: Period, filters: StoryFilter = StoryFilter(), limit: int = MAX_STORIES
) -> list[StoryView]:
    """The stories that broke in the period (and pass the filters), oldest first, at most `limit`."""
    # The period bounds first_date on both sides, so the first_date index reads just the period
    # (a since filter would bound last_date and scan every story before the period's end).
    scoped = replace(filters, since=None, until=period.until)
    query = (
        _story_filters(select(Story), scoped)
        .where(Story.first_date >= period.since)
        .order_by(Story.first_date, Story.id)
        .limit(limit)
    )
    return story_views(session, list(session.scalars(query)))


def build_digest(
    session: Session,
    *,
    period: str,
    date: date,
    filters: StoryFilter | None = None,
    now: datetime | None = None,
    limit: int = MAX_STORIES,
) -> Digest:
    """The digest of the day or ISO week containing `date`. `filters` may narrow it by topic,
    entity and relevance; its since/until are ignored (the period sets the dates)."""
    span = Period.of(period, date)
    extras = replace(filters or StoryFilter(), since=None, until=None)
    stories = period_stories(session, period=span, filters=extras, limit=limit + 1)
    return Digest(
        period=span,
        filters=extras,
        groups=group_by_topic(stories[:limit]),
        generated_at=now or datetime.now(UTC),
        truncated=len(stories) > limit,
    )


# Link lines: every source link with the newsletters that gave it -------------------------


def story_links(story: StoryView) -> list[tuple[str, list[str]]]:
    """(link, newsletters that linked it) for every link of the story, in the order they came. Two
    spellings of one article's URL (tracking parameters, "www.") are one link, as in `links`."""
    sources: dict[str, list[str]] = {url: [] for url in story.links}
    by_key: dict[str, str] | None = None  # built only for a record whose URL is another spelling
    for record in story.records:
        url = record.url
        if not url:
            continue
        if url not in sources:
            if by_key is None:
                by_key = {story_link(link) or link: link for link in story.links}
            url = by_key.get(story_link(url) or url)
            if url is None:
                continue
        if record.source not in sources[url]:
            sources[url].append(record.source)
    return list(sources.items())


def _dates(story: StoryView) -> str:
    first, last = story.first_date.date(), story.last_date.date()
    return first.isoformat() if first == last else f"{first.isoformat()} to {last.isoformat()}"


def _relevance(story: StoryView) -> str:
    return f"{story.max_relevance}/10" if story.max_relevance is not None else "unrated"


# Markdown ---------------------------------------------------------------------------------


def markdown_header(digest: Digest) -> str:
    part = f", part {digest.part}" if digest.part else ""
    sources = digest.sources
    filters = ", ".join(f"{k}={v}" for k, v in digest.filters.as_dict().items())
    lines = [
        f"# Newsletter digest: {digest.period.title}{part}",
        "",
        f"{digest.story_count} stories from {digest.record_count} newsletter items in "
        f"{len(sources)} newsletters ({inline(', '.join(sources)) or 'none'}). "
        f"Generated {digest.generated_at:%Y-%m-%d %H:%M} UTC by newsletter-enhancer"
        + (f"; filters: {inline(filters)}" if filters else "")
        + ".",
    ]
    if digest.truncated:
        lines += ["", f"Only the first {digest.story_count} stories of the period are in this digest."]
    if not digest.groups:
        lines += ["", "No stories in this period."]
    return "\n".join(lines) + "\n\n"


def markdown_group_heading(topic: str) -> str:
    return f"## {inline(topic) or OTHER}\n\n"


def markdown_story(story: StoryView) -> str:
    """One story: title, relevance, dates, newsletters, summary, every source link."""
    lines = [
        f"### {inline(story.title) or '(untitled)'}",
        "",
        f"- **Relevance:** {_relevance(story)} · **Dates:** {_dates(story)}",
        f"- **Sources:** {inline(', '.join(story.sources)) or 'unknown'}",
    ]
    if story.entities:
        lines.append(f"- **Entities:** {inline(', '.join(story.entities))}")
    if len(story.topics) > 1:
        lines.append(f"- **Topics:** {inline(', '.join(story.topics))}")
    lines += ["", inline(story.summary) or "(no summary)", ""]
    for url, sources in story_links(story):
        shown = link(url) or f"`{inline(url).replace('`', '')}`"
        lines.append(f"- {shown} ({inline(', '.join(sources))})")
    return "\n".join(lines).rstrip() + "\n\n"


def iter_markdown(digest: Digest) -> Iterator[str]:
    yield markdown_header(digest)
    for group in digest.groups:
        yield markdown_group_heading(group.topic)
        for story in group.stories:
            yield markdown_story(story)


def render_markdown(digest: Digest) -> str:
    return "".join(iter_markdown(digest))


def markdown_words(digest: Digest) -> int:
    return sum(count_words(text) for text in iter_markdown(digest))


# HTML -------------------------------------------------------------------------------------

_STYLE = """
body { font: 16px/1.5 system-ui, sans-serif; margin: 0; color: #1d1d1f; background: #fafafa; }
main { max-width: 46rem; margin: 0 auto; padding: 1.5rem; }
h1 { font-size: 1.6rem; margin-bottom: .25rem; }
h2 { font-size: 1.25rem; border-bottom: 1px solid #ddd; padding-bottom: .25rem; margin-top: 2rem; }
h3 { font-size: 1.05rem; margin-bottom: .25rem; }
article { margin-bottom: 1.5rem; }
.meta { color: #555; font-size: .9rem; margin: 0; }
nav ul, ul.links { padding-left: 1.2rem; }
ul.links { font-size: .9rem; word-break: break-all; }
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def html_link(url: str, sources: list[str]) -> str:
    label = _e(url)
    target = url.strip()
    if target.lower().startswith(("http://", "https://")):
        anchor = f'<a href="{_e(target)}" rel="noopener noreferrer nofollow">{label}</a>'
    else:  # never a javascript:, data: or relative link
        anchor = f"<code>{label}</code>"
    return f'<li>{anchor} <span class="meta">({_e(", ".join(sources))})</span></li>'


def html_story(story: StoryView) -> str:
    parts = [
        "<article>",
        f"<h3>{_e(story.title or '(untitled)')}</h3>",
        f'<p class="meta">Relevance {_e(_relevance(story))} · {_e(_dates(story))} · '
        f"{_e(', '.join(story.sources))}</p>",
    ]
    if story.entities:
        parts.append(f'<p class="meta">Entities: {_e(", ".join(story.entities))}</p>')
    parts.append(f"<p>{_e(story.summary or '(no summary)')}</p>")
    links = story_links(story)
    if links:
        parts.append('<ul class="links">' + "".join(html_link(u, s) for u, s in links) + "</ul>")
    parts.append("</article>")
    return "\n".join(parts)


def render_html(digest: Digest) -> str:
    """A self-contained page: inline styles, no script, no external resources, all text escaped."""
    title = f"Newsletter digest: {digest.period.title}"
    sources = digest.sources
    filters = ", ".join(f"{k}={v}" for k, v in digest.filters.as_dict().items())
    summary = (
        f"{digest.story_count} stories from {digest.record_count} newsletter items in "
        f"{len(sources)} newsletters. Generated {digest.generated_at:%Y-%m-%d %H:%M} UTC"
        + (f"; filters: {filters}" if filters else "")
        + "."
    )
    body = [f"<h1>{_e(title)}</h1>", f'<p class="meta">{_e(summary)}</p>']
    if digest.truncated:
        body.append(f"<p>Only the first {digest.story_count} stories of the period are shown.</p>")
    if not digest.groups:
        body.append("<p>No stories in this period.</p>")
    else:
        toc = "".join(
            f'<li><a href="#topic-{n}">{_e(g.topic)}</a> ({len(g.stories)})</li>'
            for n, g in enumerate(digest.groups, start=1)
        )
        body.append(f"<nav><ul>{toc}</ul></nav>")
    for number, group in enumerate(digest.groups, start=1):
        body.append(f'<section><h2 id="topic-{number}">{_e(group.topic)}</h2>')
        body += [html_story(story) for story in group.stories]
        body.append("</section>")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="referrer" content="no-referrer">\n'
        f"<title>{_e(title)}</title>\n<style>{_STYLE}</style>\n</head>\n"
        "<body>\n<main>\n" + "\n".join(body) + "\n</main>\n</body>\n</html>\n"
    )


# JSON and the one entry point -------------------------------------------------------------


def render_json(digest: Digest) -> str:
    return json.dumps(digest.as_json(), ensure_ascii=False, indent=2) + "\n"


_RENDERERS = {"markdown": render_markdown, "html": render_html, "json": render_json}


def render(digest: Digest, format: str) -> str:
    if format not in _RENDERERS:
        raise ValueError(f"format must be one of: {', '.join(DIGEST_FORMATS)} (not {format!r})")
    return _RENDERERS[format](digest)


def split_digest(digest: Digest, budget: int) -> list[Digest]:
    """The digest cut at story boundaries (in digest order) into parts whose Markdown stays within
    `budget` words each (header and topic headings counted); one part, unnumbered, when it fits.
    Raises ValueError for a story too long for any part."""
    header = count_words(markdown_header(replace(digest, part=len(digest.stories) + 1)))
    parts: list[list[str]] = [[]]
    words = header
    part_topic: str | None = None
    for group in digest.groups:
        heading = count_words(markdown_group_heading(group.topic))
        for story in group.stories:
            story_words = count_words(markdown_story(story))
            cost = story_words + (heading if group.topic != part_topic else 0)
            if parts[-1] and words + cost > budget:
                parts.append([])
                words, cost = header, story_words + heading
            if words + cost > budget:
                raise ValueError(
                    f"the story {story.id} ({story_words:,} words) does not fit a source of {budget:,} words"
                )
            parts[-1].append(story.id)
            words += cost
            part_topic = group.topic
    if len(parts) == 1:
        return [digest]
    return [digest.subset(ids, part=number) for number, ids in enumerate(parts, start=1)]
