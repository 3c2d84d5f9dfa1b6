"""NotebookLM export planned by digest: one source per day or week, the period's stories merged.

Where the record plan (app/export/notebooklm.py) writes every item under its week and newsletter,
this plan writes each period's digest (app/knowledge/digests.py): one block per story, whichever
newsletters told it, with its summary, its newsletters and every source link, grouped by topic.
A story is in the period it broke in, so no story is in two sources.

Planned before a byte is written, like the record plan: every period's digest is built once and
measured (a period over the word budget is cut into parts at story boundaries), and the plan fails
with ExportTooLarge, before the first byte, when the sources would not fit the notebook
(`NotebookLimits.max_files`, the index included). Writing builds each source again from the
story ids its plan holds, one digest in memory at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from app.core.db import read_session_scope
from app.crud import as_utc
from app.export.markdown import count_words
from app.export.notebooklm import ExportTooLarge, NotebookLimits, stream_zip
from app.knowledge.digests import (
    PERIODS,
    Digest,
    Period,
    build_digest,
    group_by_topic,
    iter_markdown,
    periods_between,
    split_digest,
)
from app.knowledge.story_query import StoryFilter, _story_filters, story_views
from app.models import Story
from app.record_query import RecordFilter

PLANS = ("records", "digest")


@dataclass
class DigestSource:
    period: Period
    story_ids: list[str]
    planned_words: int
    part: int | None = None
    name: str = ""
    words_written: int = 0
    stories_written: int = 0
    items_written: int = 0


@dataclass
class DigestPlan:
    filters: StoryFilter
    period: str
    limits: NotebookLimits
    exported_at: datetime
    files: list[DigestSource] = field(default_factory=list)


def story_filter_of(filters: RecordFilter) -> StoryFilter:
    """The export's record filters as story filters: topic and entity; since/until pick the periods."""
    if filters.source is not None or filters.reviewed is not None:
        raise ValueError(
            "the digest plan exports stories, which span newsletters and reviews: "
            "it takes since, until, topic and entity, not source or reviewed"
        )
    return StoryFilter(topic=filters.topic, entity=filters.entity)


def _date_range(filters: RecordFilter, stories: StoryFilter) -> tuple[datetime, datetime] | None:
    """[since, until) of the export: the filters', else the first and last story's dates."""
    if filters.since is not None and filters.until is not None:
        return filters.since, filters.until
    with read_session_scope() as session:
        query = _story_filters(select(func.min(Story.first_date), func.max(Story.first_date)), stories)
        first, last = session.execute(query).one()
    if first is None:
        return None
    first, last = as_utc(first), as_utc(last)
    assert first is not None and last is not None
    since = filters.since or first
    until = filters.until or last + timedelta(seconds=1)
    return (since, until) if since < until else None


def _measure(digest: Digest, budget: int) -> list[DigestSource]:
    try:
        parts = split_digest(digest, budget)
    except ValueError as error:
        raise ExportTooLarge(str(error)) from None
    return [
        DigestSource(
            period=digest.period,
            story_ids=[story.id for story in part.stories],
            planned_words=sum(count_words(text) for text in iter_markdown(part)),
            part=part.part,
        )
        for part in parts
    ]


def plan_digest_export(
    filters: RecordFilter,
    limits: NotebookLimits | None = None,
    *,
    period: str = "week",
    now: datetime | None = None,
) -> DigestPlan:
    """Build and measure every period's digest; raises ExportTooLarge when they do not fit."""
    if period not in PERIODS:
        raise ValueError(f"period must be one of: {', '.join(PERIODS)} (not {period!r})")
    limits = limits or NotebookLimits.from_settings()
    stories = story_filter_of(filters)
    plan = DigestPlan(stories, period, limits, exported_at=now or datetime.now(UTC))
    span = _date_range(filters, stories)
    if span is None:
        return plan
    budget = int((limits.max_words - 1) * limits.headroom)
    content_files = limits.max_files - 1
    with read_session_scope() as session:
        for span_period in periods_between(period, *span):
            digest = build_digest(
                session, period=period, date=span_period.start, filters=stories, now=plan.exported_at
            )
            if digest.truncated:
                raise ExportTooLarge(
                    f"{span_period.label} has more stories than one digest holds: use a shorter period"
                )
            if digest.story_count:
                plan.files += _measure(digest, budget)
            if len(plan.files) > content_files:
                raise ExportTooLarge(
                    f"more than {content_files} digest sources (one per {period} with stories) do not "
                    f"fit a notebook of {limits.max_files} sources (the index included): narrow since/until, "
                    + ("use period=week, " if period == "day" else "")
                    + "or raise ENHANCER_NOTEBOOKLM_MAX_SOURCES (50, 100, 300 or 600)"
                )
    width = max(2, len(str(len(plan.files))))
    for number, source in enumerate(plan.files, start=1):
        suffix = f"-part{source.part}" if source.part else ""
        source.name = f"{number:0{width}d}-digest-{source.period.label}{suffix}.md"
    return plan


def _source_digest(source: DigestSource, plan: DigestPlan) -> Digest:
    """The source's stories as they are now (a story merged away since the plan is left out)."""
    with read_session_scope() as session:
        query = _story_filters(select(Story), StoryFilter()).where(Story.id.in_(source.story_ids))
        views = story_views(session, list(session.scalars(query)))
    return Digest(
        period=source.period,
        filters=plan.filters,
        groups=group_by_topic(views),
        generated_at=plan.exported_at,
        part=source.part,
    )


def iter_source(source: DigestSource, plan: DigestPlan) -> Iterator[str]:
    digest = _source_digest(source, plan)
    source.words_written = 0
    source.stories_written = digest.story_count
    source.items_written = digest.record_count
    for text in iter_markdown(digest):
        source.words_written += count_words(text)
        yield text


def render_index(plan: DigestPlan) -> str:
    limits = plan.limits
    filters = ", ".join(f"{k}={v}" for k, v in plan.filters.as_dict().items()) or "none"
    lines = [
        "# Newsletter export for NotebookLM: index",
        "",
        f"Exported {plan.exported_at:%Y-%m-%d %H:%M} UTC by newsletter-enhancer, one digest per "
        f"{plan.period}: each story once, its newsletters merged, with every source link. Filters: "
        f"{filters}. {sum(f.stories_written for f in plan.files)} stories from "
        f"{sum(f.items_written for f in plan.files)} newsletter items in {len(plan.files)} source files "
        "plus this index.",
        "",
        f"Upload every file of this zip as a source of one notebook. NotebookLM takes up to "
        f"{limits.max_files} sources per notebook and up to {limits.max_words:,} words per source; "
        "each file here stays below both.",
        "",
        "## Files",
        "",
    ]
    if not plan.files:
        lines.append("No stories match this export.")
    else:
        lines += ["| File | Period | Stories | Items | Words |", "| --- | --- | --- | --- | --- |"]
        for source in plan.files:
            lines.append(
                f"| {source.name} | {source.period.title} | {source.stories_written} | "
                f"{source.items_written} | {source.words_written:,} |"
            )
    return "\n".join(lines) + "\n"


def iter_digest_zip(plan: DigestPlan, *, flush_bytes: int = 64 * 1024) -> Iterator[bytes]:
    """The zip, block by block: each period's digest, then the index with what was written."""
    files = ((source.name, iter_source(source, plan)) for source in plan.files)
    return stream_zip(files, index=lambda: render_index(plan), when=plan.exported_at, flush_bytes=flush_bytes)
