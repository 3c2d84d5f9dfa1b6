"""Stories: the records that report one event, across newsletters.

Two records are one story when they share a canonical link, or else when their headline + summary
embeddings are close, guarded by a date window and by the entities they name: two different
announcements by one company read alike, so without an entity in common the bar is higher, and a
story never spans more days than the window. `same_story` is the one decision; `assign_story`
applies it to a new record against the recent ones, and `bench/story_pairs.py` measures it on
hand-labelled pairs. A person's split or merge pins the records (`story_pinned`): grouping never
moves them again.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app.contract.derived import strip_tracking
from app.crud import as_utc
from app.knowledge.embeddings import from_bytes
from app.models import Record, Story, utcnow
from app.record_query import effective_metadata


@dataclass(frozen=True)
class Grouping:
    window: timedelta = timedelta(days=3)  # one event's coverage: the same or the next few days
    link_window: timedelta = timedelta(days=14)  # a shared article link is stronger evidence
    similarity: float = 0.60  # cosine, with an entity in common
    similarity_without_entities: float = 0.86  # cosine, when neither names an entity the other does


GROUPING = Grouping()

_NOT_STORY_PATHS = re.compile(r"^/?(index\.html?)?$|^/(home|blog|news|about|pricing|subscribe)/?$", re.I)


def story_link(url: str | None) -> str | None:
    """The form two newsletters' links to one article share: tracking stripped, scheme, host case,
    "www." and a trailing slash ignored. A site's front page links no particular story: None."""
    if not url:
        return None
    parts = urlsplit(strip_tracking(url))
    host = (parts.hostname or "").lower().removeprefix("www.")
    if not host or _NOT_STORY_PATHS.match(parts.path or "/"):
        return None
    return urlunsplit(("https", host, parts.path.rstrip("/"), parts.query, ""))


def entity_key(name: str) -> str:
    return " ".join(re.sub(r"[^\w]+", " ", name.casefold()).split())


_SUFFIXES = {"inc", "corp", "corporation", "ltd", "llc", "co", "ai", "labs", "lab", "the"}


def _entity_core(key: str) -> frozenset[str]:
    return frozenset(word for word in key.split() if word not in _SUFFIXES) or frozenset(key.split())


def share_an_entity(a: Iterable[str], b: Iterable[str]) -> bool:
    """Whether two entity lists name one organisation, person or product ("Nvidia" ~ "NVIDIA Corp")."""
    cores_b = [_entity_core(key) for key in b]
    for key in a:
        core = _entity_core(key)
        if any(core <= other or other <= core for other in cores_b):
            return True
    return False


@dataclass(frozen=True)
class StoryEvidence:
    """What the grouping compares: a record's link, entities, date and embedding."""

    link: str | None
    entities: frozenset[str]
    date: datetime
    vector: Any  # (384,) float32, unit length

    @classmethod
    def of(cls, metadata: dict[str, Any], date: datetime, vector: Any) -> StoryEvidence:
        return cls(
            link=story_link(metadata.get("url")),
            entities=frozenset(entity_key(e) for e in metadata.get("entities") or [] if entity_key(e)),
            date=as_utc(date),  # type: ignore[arg-type]
            vector=vector,
        )


CONTEXT_CHARS = 300  # of the item's own text: headlines are short and summaries from a small model terse


def embedding_text(metadata: dict[str, Any], text: str = "") -> str:
    """What a record's embedding is of (grouping and search read the same vector): the headline,
    the summary and the start of the newsletter's own text. On the labelled pairs the text's start
    lifted recall from 0.75 to 0.91 at the same precision (docs/knowledge.md)."""
    headline = str(metadata.get("headline") or "").strip()
    summary = str(metadata.get("summary") or "").strip()
    context = " ".join(text.split())[:CONTEXT_CHARS]
    return " ".join(part for part in (f"{headline}." if headline else "", summary, context) if part)


def similarity(a: StoryEvidence, b: StoryEvidence) -> float:
    return float(a.vector @ b.vector)


def same_story(a: StoryEvidence, b: StoryEvidence, grouping: Grouping = GROUPING) -> bool:
    apart = abs(a.date - b.date)
    if a.link is not None and a.link == b.link:
        return apart <= grouping.link_window
    if apart > grouping.window:
        return False
    shared = share_an_entity(a.entities, b.entities)
    bar = grouping.similarity if shared else grouping.similarity_without_entities
    return similarity(a, b) >= bar


# Applying it ------------------------------------------------------------------------------


def evidence_of(record: Record) -> StoryEvidence | None:
    if record.embedding is None:
        return None
    metadata = effective_metadata(record.data, record.corrected_data)
    return StoryEvidence.of(metadata, record.date, from_bytes(record.embedding))


def _candidates(session: Session, record: Record, grouping: Grouping) -> list[Record]:
    date = as_utc(record.date)
    assert date is not None
    span = max(grouping.window, grouping.link_window)
    return list(
        session.scalars(
            select(Record).where(
                Record.story_id.is_not(None),
                Record.embedding.is_not(None),
                Record.id != record.id,
                Record.date >= date - span,
                Record.date <= date + span,
            )
        )
    )


def best_story_for(session: Session, record: Record, grouping: Grouping = GROUPING) -> str | None:
    """The story of the closest recent record that is the same story as this one, if any."""
    evidence = evidence_of(record)
    if evidence is None:
        return None
    best: tuple[float, str] | None = None
    for other in _candidates(session, record, grouping):
        other_evidence = evidence_of(other)
        if other_evidence is None or not same_story(evidence, other_evidence, grouping):
            continue
        linked = evidence.link is not None and evidence.link == other_evidence.link
        score = 2.0 if linked else similarity(evidence, other_evidence)
        if best is None or score > best[0]:
            best = (score, other.story_id)  # type: ignore[assignment]
    return best[1] if best else None


def assign_story(session: Session, *, record: Record, grouping: Grouping = GROUPING) -> tuple[str, bool]:
    """Put the record in its story (a new one when none matches). Returns (story id, changed).

    A pinned record stays where a person put it.
    """
    if record.story_pinned and record.story_id:
        return record.story_id, False
    previous = record.story_id
    story_id = best_story_for(session, record, grouping)
    if story_id is None:
        if previous is not None and _record_count(session, previous) == 1:
            story_id = previous  # alone in its story already: keep the id (and its links)
        else:
            story_id = _new_story(session, record).id
    if story_id != previous:
        record.story_id = story_id
        session.flush()
        if previous is not None:
            refresh_story(session, story_id=previous)
    refresh_story(session, story_id=story_id)
    return story_id, story_id != previous


def _record_count(session: Session, story_id: str) -> int:
    return session.scalar(select(func.count()).select_from(Record).where(Record.story_id == story_id)) or 0


def _new_story(session: Session, record: Record) -> Story:
    metadata = effective_metadata(record.data, record.corrected_data)
    story = Story(
        title=str(metadata.get("headline") or "")[:1000],
        canonical_link=story_link(metadata.get("url")),
        first_date=record.date,
        last_date=record.date,
        record_count=0,
    )
    session.add(story)
    session.flush()
    return story


def refresh_story(session: Session, *, story_id: str) -> Story | None:
    """Recompute a story's summary fields from its records; a story left empty is deleted."""
    story = session.get(Story, story_id)
    if story is None:
        return None
    records = list(session.scalars(select(Record).where(Record.story_id == story_id).order_by(Record.date)))
    if not records:
        session.execute(update(Story).where(Story.merged_into_id == story_id).values(merged_into_id=None))
        if story.merged_into_id is None:
            session.delete(story)
        else:
            story.record_count = 0
        session.flush()
        return None
    metadata = [effective_metadata(r.data, r.corrected_data) for r in records]
    relevances = [int(m["relevance_score"]) for m in metadata if isinstance(m.get("relevance_score"), int)]
    story.record_count = len(records)
    story.first_date, story.last_date = records[0].date, records[-1].date
    story.max_relevance = max(relevances) if relevances else None
    story.title = str(metadata[0].get("headline") or story.title)[:1000]
    story.canonical_link = next((link for m in metadata if (link := story_link(m.get("url")))), None)
    story.updated_at = utcnow()
    session.flush()
    return story


# A person's decisions ---------------------------------------------------------------------


def split_record(session: Session, *, record: Record) -> Story:
    """Take a wrongly grouped record out into a story of its own, and keep it there."""
    previous = record.story_id
    story = _new_story(session, record)
    record.story_id, record.story_pinned = story.id, True
    session.flush()
    if previous:
        refresh_story(session, story_id=previous)
    refresh_story(session, story_id=story.id)
    return story


def merge_stories(session: Session, *, into: Story, merged: Story) -> Story:
    """Fold `merged` into `into`; every record of both is pinned, and `merged` now leads to `into`."""
    if into.id == merged.id:
        raise ValueError("a story cannot be merged into itself")
    session.execute(
        update(Record)
        .where(Record.story_id.in_([into.id, merged.id]))
        .values(story_id=into.id, story_pinned=True)
        .execution_options(synchronize_session="fetch")
    )
    session.execute(update(Story).where(Story.merged_into_id == merged.id).values(merged_into_id=into.id))
    merged.merged_into_id = into.id
    merged.record_count = 0
    session.flush()
    refreshed = refresh_story(session, story_id=into.id)
    assert refreshed is not None
    return refreshed


def resolve_story(session: Session, *, story_id: str) -> Story | None:
    """The story with this id, following merges (an old link to a merged story still works)."""
    seen: set[str] = set()
    story = session.get(Story, story_id)
    while story is not None and story.merged_into_id and story.id not in seen:
        seen.add(story.id)
        story = session.get(Story, story.merged_into_id)
    return story
