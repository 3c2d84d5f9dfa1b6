"""The topic vocabulary: every generated key_topic maps onto one entry, reused across records.

The model names one topic several ways ("AI chip", "AI Chips", "AI accelerators"). A raw topic is
matched, in order, by its normalised key (case, Unicode, punctuation, plural), by a fuzzy match on
that key (typos, word order), then by its nearest neighbour in embedding space; only a topic that
matches none becomes a new entry. The thresholds are the vocabulary's one decision, measured in
docs/knowledge.md (`python bench/topic_vocabulary.py`).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rapidfuzz import fuzz, process
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from app.knowledge.embeddings import from_bytes, to_bytes
from app.models import RecordTopic, Topic, TopicAlias, new_id

KEY_MAX = 100
_POSSESSIVE = re.compile(r"['’][sS]\b")
_NON_WORD = re.compile(r"[^\w+#]+")  # keeps "c++", "c#"
# Words whose final "s" is not a plural.
_KEEP_S = ("ss", "us", "is", "ics", "news", "ous", "ies")


@dataclass(frozen=True)
class Matching:
    """How close a raw topic must be to reuse an entry."""

    fuzzy_ratio: float = 92.0  # rapidfuzz token_sort_ratio on normalised keys, 0-100
    cosine: float = 0.86  # all-MiniLM-L6-v2 of the display names


MATCHING = Matching()


_ACRONYM_PLURAL = re.compile(r"[A-Z0-9]{2,}s")  # GPUs, LLMs, APIs


def _singular(word: str) -> str:
    if _ACRONYM_PLURAL.fullmatch(word):
        return word[:-1].casefold()
    word = word.casefold()
    if len(word) > 3 and word.endswith("s") and not word.endswith(_KEEP_S):
        return word[:-1]
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    return word


def topic_key(raw: str) -> str:
    """The normalised form two spellings of one topic share: "AI  Chips!" -> "ai chip"."""
    text = _POSSESSIVE.sub("", unicodedata.normalize("NFKC", raw))
    words = [_singular(word) for word in _NON_WORD.sub(" ", text).replace("_", " ").split()]
    return " ".join(words)[:KEY_MAX]


def display_name(raw: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", raw).split())[:KEY_MAX]


@dataclass
class Vocabulary:
    """An in-memory view of the entries to match against (ids, keys, embeddings)."""

    ids: list[str]
    keys: list[str]
    vectors: Any  # (n, 384) float32
    aliases: dict[str, str]

    @classmethod
    def load(cls, session: Session) -> Vocabulary:
        import numpy as np

        rows = session.execute(select(Topic.id, Topic.key, Topic.embedding)).all()
        vectors = [from_bytes(row.embedding) for row in rows if row.embedding is not None]
        embedded = [row for row in rows if row.embedding is not None]
        return cls(
            ids=[row.id for row in embedded],
            keys=[row.key for row in embedded],
            vectors=np.stack(vectors) if vectors else np.zeros((0, 384), dtype=np.float32),
            aliases={
                key: topic_id
                for key, topic_id in session.execute(select(TopicAlias.key, TopicAlias.topic_id))
            },
        )

    def match(self, key: str, vector: Any, matching: Matching = MATCHING) -> str | None:
        """The entry this topic is, or None for a new one."""
        if key in self.aliases:
            return self.aliases[key]
        if self.keys:
            best = process.extractOne(key, self.keys, scorer=fuzz.token_sort_ratio)
            if best is not None and best[1] >= matching.fuzzy_ratio:
                return self.ids[best[2]]
        if len(self.ids) and vector is not None:
            similarities = self.vectors @ vector
            index = int(similarities.argmax())
            if float(similarities[index]) >= matching.cosine:
                return self.ids[index]
        return None

    def add(self, topic_id: str, key: str, vector: Any) -> None:
        import numpy as np

        self.ids.append(topic_id)
        self.keys.append(key)
        self.vectors = np.vstack([self.vectors, vector[None, :]])


def _wanted_topics(raw_topics: Sequence[str]) -> list[tuple[str, str]]:
    """(display name, key) of each raw topic that has a key."""
    wanted = [(display_name(raw), topic_key(raw)) for raw in raw_topics]
    return [(name, key) for name, key in wanted if key]


def topic_display_names(raw_topics: Sequence[str]) -> list[str]:
    """The names `canonical_topic_ids` may embed for these raw topics."""
    return [name for name, _ in _wanted_topics(raw_topics)]


def canonical_topic_ids(
    session: Session, *, raw_topics: Sequence[str], embed: Any, vocabulary: Vocabulary | None = None
) -> list[str]:
    """Map raw topics onto vocabulary entries, creating entries and aliases as needed.

    `embed(texts) -> (n, 384)` embeds the display names; one call per record.
    """
    vocabulary = vocabulary or Vocabulary.load(session)
    wanted = _wanted_topics(raw_topics)
    unknown = [i for i, (_, key) in enumerate(wanted) if key not in vocabulary.aliases]
    vectors = embed([wanted[i][0] for i in unknown]) if unknown else []
    vector_of = dict(zip(unknown, vectors, strict=True))
    ids: list[str] = []
    for i, (name, key) in enumerate(wanted):
        known = vocabulary.aliases.get(key)
        topic_id = known or vocabulary.match(key, vector_of.get(i))
        if topic_id is None:
            topic_id = new_id()
            session.add(Topic(id=topic_id, name=name, key=key, embedding=to_bytes(vector_of[i])))
            session.flush()
            vocabulary.add(topic_id, key, vector_of[i])
        if known is None:
            session.add(TopicAlias(key=key, topic_id=topic_id))
            vocabulary.aliases[key] = topic_id
        if topic_id not in ids:
            ids.append(topic_id)
    return ids


def set_record_topics(session: Session, *, record_id: str, topic_ids: Sequence[str]) -> None:
    session.execute(delete(RecordTopic).where(RecordTopic.record_id == record_id))
    session.add_all(
        RecordTopic(record_id=record_id, topic_id=topic_id, position=position)
        for position, topic_id in enumerate(topic_ids)
    )


# Reading and curating the vocabulary ------------------------------------------------------


@dataclass(frozen=True)
class TopicCount:
    id: str
    name: str
    records: int


def list_topics(
    session: Session, *, limit: int, offset: int = 0, prefix: str | None = None
) -> list[TopicCount]:
    """Entries with their record counts, most used first."""
    count = func.count(RecordTopic.record_id)
    query = (
        select(Topic.id, Topic.name, count.label("records"))
        .outerjoin(RecordTopic, RecordTopic.topic_id == Topic.id)
        .group_by(Topic.id, Topic.name)
        .order_by(count.desc(), Topic.name)
        .limit(limit)
        .offset(offset)
    )
    if prefix:
        query = query.where(Topic.key.startswith(topic_key(prefix), autoescape=True))
    return [TopicCount(row.id, row.name, row.records) for row in session.execute(query)]


def topic_record_count(session: Session, *, topic_id: str) -> int:
    query = select(func.count()).select_from(RecordTopic).where(RecordTopic.topic_id == topic_id)
    return session.scalar(query) or 0


def get_topic(session: Session, *, topic_id: str) -> Topic | None:
    return session.get(Topic, topic_id)


class TopicConflict(ValueError):
    """A rename onto a name another entry already has: merge them instead."""

    def __init__(self, other: Topic) -> None:
        super().__init__(f"topic {other.name!r} ({other.id}) already has that name: merge into it instead")
        self.other = other


def rename_topic(session: Session, *, topic: Topic, name: str, embed: Any) -> Topic:
    """A new display name; the old spelling stays an alias, so the model's next use of it lands here."""
    key = topic_key(name)
    if not key:
        raise ValueError("a topic name needs at least one letter or digit")
    other = session.scalars(select(Topic).where(Topic.key == key, Topic.id != topic.id)).first()
    if other is not None:
        raise TopicConflict(other)
    topic.name, topic.key = display_name(name), key
    topic.embedding = to_bytes(embed([topic.name])[0])
    session.merge(TopicAlias(key=key, topic_id=topic.id))
    session.flush()
    return topic


def merge_topics(session: Session, *, into: Topic, merged: Topic) -> int:
    """Fold `merged` into `into`: its records, aliases and future matches. Returns records moved."""
    if into.id == merged.id:
        raise ValueError("a topic cannot be merged into itself")
    already = select(RecordTopic.record_id).where(RecordTopic.topic_id == into.id)
    session.execute(
        delete(RecordTopic).where(RecordTopic.topic_id == merged.id, RecordTopic.record_id.in_(already))
    )
    moved = session.execute(
        update(RecordTopic).where(RecordTopic.topic_id == merged.id).values(topic_id=into.id)
    ).rowcount  # type: ignore[attr-defined]
    session.execute(update(TopicAlias).where(TopicAlias.topic_id == merged.id).values(topic_id=into.id))
    session.merge(TopicAlias(key=merged.key, topic_id=into.id))
    session.delete(merged)
    session.flush()
    return int(moved or 0)


def record_topic_names(session: Session, *, record_ids: Sequence[str]) -> dict[str, list[str]]:
    """Each record's canonical topics, in the model's order."""
    rows = session.execute(
        select(RecordTopic.record_id, Topic.name)
        .join(Topic, Topic.id == RecordTopic.topic_id)
        .where(RecordTopic.record_id.in_(list(record_ids)))
        .order_by(RecordTopic.record_id, RecordTopic.position)
    )
    names: dict[str, list[str]] = {record_id: [] for record_id in record_ids}
    for record_id, name in rows:
        names[record_id].append(name)
    return names
