"""NotebookLM export: a zip of Markdown sources that respects NotebookLM's limits.

NotebookLM takes up to 50 sources per notebook (free tier; 100, 300 or 600 on other plans), each
up to 500,000 words: ENHANCER_NOTEBOOKLM_MAX_SOURCES and ENHANCER_NOTEBOOKLM_MAX_WORDS
(`NotebookLimits.from_settings`). The export is planned before a byte is written, in two streaming
passes over the records (the digest plan, one source per day or week of stories, is
app/export/notebooklm_digests.py):

1. measure: render every item once and count its words, per (week, source) *segment* (a group
   cut into pieces of at most `segment_words`, remembered by their first and last record key);
2. plan: lay segments into files, trying in turn one file per week (a week too big for one file
   is split by source), adjacent weeks merged while they fit, and finally dense packing. The
   first layout within `max_files - 1` content files (the index is a file too) wins;
3. write: each file re-reads exactly its segments' key ranges and streams into the zip.

Files are planned to `headroom` of the word limit, so a correction saved during an export cannot
push a file over it. Memory holds the segment list (a few numbers per 25,000 words), one chunk of
records and one zip block, never the export.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta

from app.core.config import NOTEBOOKLM_MAX_SOURCES, NOTEBOOKLM_MAX_WORDS, get_settings
from app.export.markdown import (
    count_words,
    inline,
    render_item,
    source_heading,
    week_heading,
    week_label,
    week_start,
)
from app.record_query import Key, RecordFilter, iter_records

INDEX_NAME = "00-index.md"


@dataclass(frozen=True)
class NotebookLimits:
    max_files: int = NOTEBOOKLM_MAX_SOURCES  # the index included
    max_words: int = NOTEBOOKLM_MAX_WORDS  # per file; files stay strictly below it
    headroom: float = 0.9  # plan files to this share of max_words
    segment_words: int = 25_000  # the unit of splitting and packing

    @classmethod
    def from_settings(cls) -> NotebookLimits:
        """ENHANCER_NOTEBOOKLM_MAX_SOURCES and ENHANCER_NOTEBOOKLM_MAX_WORDS."""
        settings = get_settings()
        return cls(max_files=settings.notebooklm_max_sources, max_words=settings.notebooklm_max_words)

    def __post_init__(self) -> None:
        if self.max_files < 2:
            raise ValueError("max_files must leave room for the index and one source file")
        if not 0 < self.headroom <= 1:
            raise ValueError("headroom must be in (0, 1]")


class ExportTooLarge(ValueError):
    """No layout fits NotebookLM's limits: the caller should narrow the filters."""


@dataclass
class Segment:
    week: date
    source: str
    first_key: Key
    last_key: Key
    items: int = 0
    words: int = 0


@dataclass
class PlannedFile:
    segments: list[Segment]
    name: str = ""
    part: int | None = None  # set when one span of weeks needs several files
    words_written: int = 0
    items_written: int = 0

    @property
    def planned_words(self) -> int:
        return sum(s.words for s in self.segments)

    @property
    def weeks(self) -> list[date]:
        return sorted({s.week for s in self.segments})

    @property
    def sources(self) -> list[str]:
        return sorted({s.source for s in self.segments}, key=str.casefold)

    def span(self) -> str:
        weeks = self.weeks
        first, last = week_label(weeks[0]), week_label(weeks[-1])
        return first if first == last else f"{first} to {last}"


@dataclass
class NotebookPlan:
    filters: RecordFilter
    limits: NotebookLimits
    exported_at: datetime
    files: list[PlannedFile] = field(default_factory=list)
    strategy: str = "empty"


def _header_allowance(filters: RecordFilter) -> int:
    """Words of a file's title and preamble, bounded from above."""
    return 60 + count_words(inline(filters.describe()))


def _budget(filters: RecordFilter, limits: NotebookLimits) -> int:
    return int((limits.max_words - 1) * limits.headroom) - _header_allowance(filters)


def measure(filters: RecordFilter, limits: NotebookLimits) -> list[Segment]:
    """Pass 1: the word count of every (week, source) group, cut into bounded segments."""
    budget = _budget(filters, limits)
    cut_at = max(1, min(limits.segment_words, budget // 4))
    open_segments: dict[tuple[date, str], Segment] = {}
    closed: list[Segment] = []
    for row in iter_records(filters, with_content=False):
        words = count_words(render_item(row))
        group = (week_start(row.date), row.source)
        segment = open_segments.get(group)
        if segment is not None and segment.words + words > cut_at:
            closed.append(segment)
            segment = None
        if segment is None:
            headings = count_words(week_heading(group[0])) + count_words(source_heading(row.source))
            segment = Segment(group[0], row.source, first_key=row.key, last_key=row.key, words=headings)
            open_segments[group] = segment
        segment.last_key = row.key
        segment.items += 1
        segment.words += words
    closed.extend(open_segments.values())
    closed.sort(key=lambda s: (s.week, s.source.casefold(), s.source, s.first_key))
    return closed


def _pack(segments: list[Segment], budget: int) -> list[list[Segment]]:
    """Greedy contiguous packing: a new file when the next segment would not fit."""
    files: list[list[Segment]] = []
    current: list[Segment] = []
    words = 0
    for segment in segments:
        if current and words + segment.words > budget:
            files.append(current)
            current, words = [], 0
        current.append(segment)
        words += segment.words
    if current:
        files.append(current)
    return files


def _by_week(segments: list[Segment]) -> list[list[Segment]]:
    weeks: list[list[Segment]] = []
    for segment in segments:
        if weeks and weeks[-1][0].week == segment.week:
            weeks[-1].append(segment)
        else:
            weeks.append([segment])
    return weeks


def _one_file_per_week(segments: list[Segment], budget: int) -> list[list[Segment]]:
    return [part for week in _by_week(segments) for part in _pack(week, budget)]


def _merge_adjacent_weeks(segments: list[Segment], budget: int) -> list[list[Segment]]:
    """Whole weeks share a file while they fit; a week too big for one file gets its own split."""
    files: list[list[Segment]] = []
    current: list[Segment] = []
    words = 0
    for week in _by_week(segments):
        week_words = sum(s.words for s in week)
        if week_words > budget:
            if current:
                files.append(current)
                current, words = [], 0
            files.extend(_pack(week, budget))
            continue
        if current and words + week_words > budget:
            files.append(current)
            current, words = [], 0
        current.extend(week)
        words += week_words
    if current:
        files.append(current)
    return files


STRATEGIES: tuple[tuple[str, Callable[[list[Segment], int], list[list[Segment]]]], ...] = (
    ("one file per week", _one_file_per_week),
    ("adjacent weeks merged", _merge_adjacent_weeks),
    ("densely packed", _pack),
)


def plan_export(
    filters: RecordFilter, limits: NotebookLimits = NotebookLimits(), *, now: datetime | None = None
) -> NotebookPlan:
    """Measure and lay out the export; raises ExportTooLarge when no layout fits the limits."""
    exported_at = now or datetime.now(UTC)
    # Records created after this moment are left out, so both passes see the same set.
    filters = replace(filters, created_until=filters.created_until or exported_at)
    plan = NotebookPlan(filters=filters, limits=limits, exported_at=exported_at)
    segments = measure(filters, limits)
    if not segments:
        return plan
    budget = _budget(filters, limits)
    biggest = max(segments, key=lambda s: s.words)
    if biggest.words > budget:
        raise ExportTooLarge(
            f"one item of {biggest.source} ({biggest.words} words) does not fit a file of {budget} words"
        )
    content_files = limits.max_files - 1
    for name, strategy in STRATEGIES:
        layout = strategy(segments, budget)
        if len(layout) <= content_files:
            plan.files = [PlannedFile(segments=group) for group in layout]
            plan.strategy = name
            _name_files(plan.files)
            return plan
    total = sum(s.words for s in segments)
    raise ExportTooLarge(
        f"{total:,} words do not fit in {content_files} files of under {limits.max_words:,} words "
        f"(NotebookLM's limits); narrow the export with since/until, source, topic or entity"
    )


def _name_files(files: list[PlannedFile]) -> None:
    spans = [f.span().replace(" to ", "_to_") for f in files]
    for number, (planned, span) in enumerate(zip(files, spans, strict=True), start=1):
        same_span = [i for i, other in enumerate(spans) if other == span]
        planned.part = same_span.index(number - 1) + 1 if len(same_span) > 1 else None
        suffix = f"-part{planned.part}" if planned.part else ""
        planned.name = f"{number:02d}-{span}{suffix}.md"


def _file_title(planned: PlannedFile) -> str:
    weeks = planned.weeks
    first, last = weeks[0], weeks[-1] + timedelta(days=6)
    part = f", part {planned.part}" if planned.part else ""
    return f"# Newsletter digest: {planned.span()}{part} ({first.isoformat()} to {last.isoformat()})\n\n"


def _file_preamble(planned: PlannedFile, plan: NotebookPlan) -> str:
    sources = planned.sources
    return (
        f"{sum(s.items for s in planned.segments)} newsletter items from {len(sources)} sources, "
        f"enhanced with summaries, topics, entities, categories, sentiment, urgency and action items. "
        f"Exported {plan.exported_at:%Y-%m-%d %H:%M} UTC; filters: {inline(plan.filters.describe())}.\n\n"
    )


def iter_file(planned: PlannedFile, plan: NotebookPlan) -> Iterator[str]:
    """Pass 2 for one file: its segments, re-read by key range, as Markdown."""
    planned.words_written = planned.items_written = 0

    def emit(text: str) -> str:
        planned.words_written += count_words(text)
        return text

    yield emit(_file_title(planned))
    yield emit(_file_preamble(planned, plan))
    last_week: date | None = None
    last_group: tuple[date, str] | None = None
    for segment in planned.segments:
        if segment.week != last_week:
            yield emit(week_heading(segment.week))
            last_week = segment.week
        if (segment.week, segment.source) != last_group:
            yield emit(source_heading(segment.source))
            last_group = (segment.week, segment.source)
        rows = iter_records(
            replace(plan.filters, source=segment.source),
            with_content=False,
            first_key=segment.first_key,
            last_key=segment.last_key,
        )
        for row in rows:
            planned.items_written += 1
            yield emit(render_item(row))


def render_index(plan: NotebookPlan) -> str:
    limits = plan.limits
    lines = [
        "# Newsletter export for NotebookLM: index",
        "",
        f"Exported {plan.exported_at:%Y-%m-%d %H:%M} UTC by newsletter-enhancer. "
        f"Filters: {inline(plan.filters.describe())}. "
        f"{sum(f.items_written for f in plan.files)} items in {len(plan.files)} source files plus this index "
        f"(layout: {plan.strategy}).",
        "",
        f"Upload every file of this zip as a source of one notebook. NotebookLM takes up to "
        f"{limits.max_files} sources per notebook and up to {limits.max_words:,} words per source; "
        "each file here stays below both.",
        "",
        "## Files",
        "",
    ]
    if not plan.files:
        lines.append("No records match this export.")
    else:
        lines += ["| File | Weeks | Items | Words | Sources |", "| --- | --- | --- | --- | --- |"]
        for planned in plan.files:
            lines.append(
                f"| {planned.name} | {planned.span()} | {planned.items_written} | {planned.words_written:,} "
                f"| {len(planned.sources)} |"
            )
    return "\n".join(lines) + "\n"


class _ZipSink(io.RawIOBase):
    """An unseekable sink: zipfile then streams (data descriptors) and we hand out its bytes."""

    def __init__(self) -> None:
        super().__init__()
        self._chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[no-untyped-def, override]
        self._chunks.append(bytes(data))
        return len(data)

    def drain(self) -> bytes:
        out = b"".join(self._chunks)
        self._chunks.clear()
        return out


def _entry(name: str, when: datetime) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=when.timetuple()[:6])
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def stream_zip(
    files: Iterable[tuple[str, Iterable[str]]],
    *,
    index: Callable[[], str],
    when: datetime,
    flush_bytes: int = 64 * 1024,
) -> Iterator[bytes]:
    """A zip of text files, block by block, then INDEX_NAME: `index()` runs after the files were
    written, so it can report what was (the plans count as they stream)."""
    sink = _ZipSink()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, texts in files:
            with archive.open(_entry(name, when), "w") as entry:
                pending = 0
                for text in texts:
                    data = text.encode("utf-8")
                    entry.write(data)
                    pending += len(data)
                    if pending >= flush_bytes:
                        pending = 0
                        if chunk := sink.drain():
                            yield chunk
            if chunk := sink.drain():
                yield chunk
        with archive.open(_entry(INDEX_NAME, when), "w") as entry:
            entry.write(index().encode("utf-8"))
    if chunk := sink.drain():
        yield chunk


def iter_zip(plan: NotebookPlan, *, flush_bytes: int = 64 * 1024) -> Iterator[bytes]:
    """The zip, block by block: each source file, then the index with the counts actually written."""
    files = ((planned.name, iter_file(planned, plan)) for planned in plan.files)
    return stream_zip(files, index=lambda: render_index(plan), when=plan.exported_at, flush_bytes=flush_bytes)
