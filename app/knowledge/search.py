"""Search over the records archive: full-text and embedding similarity, fused into one ranked list.

Two channels answer a query, each with its top candidates:

- **text**: the `record_fts` index (migration 0006). SQLite: FTS5, ranked by bm25 with column weights
  that favour headline, summary, topics and entities over the item's body. PostgreSQL: a weighted
  tsvector (headline A, summary/topics/entities B, body D) ranked by ts_rank_cd. The user's words are
  never handed to either query language as they are: the query is cut into words here, and each word
  becomes a quoted term (FTS5 `"word"`, tsquery `'word'`), all of them required, the last one also
  matching as a prefix when the query ends in it. When no record has every word, any word will do.
- **semantic**: cosine similarity between the query's all-MiniLM-L6-v2 embedding and the records'
  stored embeddings (`records.embedding`), held in memory as one float32 matrix per database
  (`VectorIndex`), refreshed incrementally before each search. Candidates under `min_similarity`
  are dropped, so a query that means nothing near any record brings back no random records.

The two lists are fused by reciprocal rank fusion (score = sum over channels of 1 / (60 + rank)),
and the matching stories follow in rank order (a story ranks as its best record).

The worker's indexer calls `index_document` inside its transaction whenever it (re-)indexes a
record; `delete_document` takes a record out of the full-text index.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import numpy as np
from sqlalchemy import DateTime, bindparam, func, select, text
from sqlalchemy.orm import Session

from app.knowledge.embeddings import DIMENSIONS, get_minilm
from app.models import Record, Story

log = logging.getLogger(__name__)

MAX_QUERY_CHARS = 500
MAX_QUERY_TERMS = 32  # words past this are ignored by the text channel (the embedding sees them all)
MAX_LIMIT = 100
BODY_CHARS = 20_000  # of the item's text go into the index
RRF_K = 60
MIN_SIMILARITY = 0.3  # cosine under which a semantic candidate is no match
MAX_RANKED = 2000  # matches of one query ranked by relevance: its newest ones, past that
MIN_PREFIX_CHARS = 3  # a shorter last word is matched whole (a one-letter prefix matches everything)
# bm25 weights per record_fts column: record_id (unindexed), headline, summary, topics, entities, body.
BM25_WEIGHTS = (0.0, 10.0, 5.0, 4.0, 4.0, 1.0)
# PostgreSQL ts_rank_cd weights for {D, C, B, A}; normalisation 1 divides by 1 + log(document length).
TS_WEIGHTS = "{0.1, 0.2, 0.6, 1.0}"

Channel = Literal["text", "semantic", "both"]

# Left out when any term will do (no record has them all): PostgreSQL's english list drops the same
# words, and a lone "for" or "the" matching is no reason to show a record.
_STOPWORDS = (
    "a about above after again against all am an and any are as at be because been before being below"
    " between both but by can did do does doing down during each few for from further had has have having"
    " he her here hers herself him himself his how i if in into is it its itself just me more most my"
    " myself no nor not now of off on once only or other our ours ourselves out over own s same she"
    " should so some such t than that the their theirs them themselves then there these they this those"
    " through to too under until up very was we were what when where which while who whom why will with"
    " you your yours yourself yourselves"
)
STOPWORDS = frozenset(_STOPWORDS.split())

_WORD = re.compile(r"[^\W_]+")  # letters and digits: what unicode61 and the PostgreSQL parser keep
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # PostgreSQL text cannot hold NUL


# Indexing -------------------------------------------------------------------------------------


def _clean(value: str) -> str:
    return _CONTROL.sub(" ", value)


SLOT_BITS = 22  # FTS5 rowid = (record date in epoch seconds << SLOT_BITS) | slot
_SLOT_MASK = (1 << SLOT_BITS) - 1
_PROBES = 8


def _fts_rowids(record_id: str, date: datetime | None) -> list[int]:
    """The FTS5 rowids a record's row may have: record_id is UNINDEXED, so it is found by rowid.

    The rowid orders rows by the record's date (so the newest matches of a common word come first,
    and a date range is a rowid range); within a second a hash of the id picks the slot, and the
    next slots take the (rare) record whose slot another record of the same second holds."""
    base = _second(date) << SLOT_BITS
    slot = int.from_bytes(hashlib.blake2b(record_id.encode(), digest_size=8).digest(), "big")
    return [base | ((slot + probe) & _SLOT_MASK) for probe in range(_PROBES)]


def _second(date: datetime | None) -> int:
    return 0 if date is None else math.floor(_epoch(date))


def _record_date(session: Session, record_id: str) -> tuple[bool, datetime | None]:
    date = session.scalar(select(Record.date).where(Record.id == record_id))
    return date is not None, date


def _rowid_params(rowids: list[int]) -> tuple[str, dict[str, int]]:
    names = [f"r{index}" for index in range(len(rowids))]
    return ", ".join(f":{name}" for name in names), dict(zip(names, rowids, strict=True))


def _is_sqlite(session: Session) -> bool:
    return session.get_bind().dialect.name == "sqlite"


def index_document(
    session: Session,
    *,
    record_id: str,
    headline: str,
    summary: str,
    topics: Sequence[str],
    entities: Sequence[str],
    body: str,
) -> None:
    """Put (or replace) a record's row in the full-text index, in the caller's transaction.

    `body` is the item's plain text; only its first BODY_CHARS characters are indexed. On SQLite the
    row's place follows the record's date, read from `records` (a record's date never changes)."""
    values = {
        "record_id": record_id,
        "headline": _clean(headline or ""),
        "summary": _clean(summary or ""),
        "topics": _clean(", ".join(topics or ())),
        "entities": _clean(", ".join(entities or ())),
        "body": _clean((body or "")[:BODY_CHARS]),
    }
    if _is_sqlite(session):
        rowids = _fts_rowids(record_id, _record_date(session, record_id)[1])
        placeholders, params = _rowid_params(rowids)
        held: dict[int, str] = dict(
            session.execute(
                text(f"SELECT rowid, record_id FROM record_fts WHERE rowid IN ({placeholders})"), params
            ).all()
        )
        mine = [rowid for rowid, holder in held.items() if holder == record_id]
        if mine:
            placeholders, params = _rowid_params(mine)
            session.execute(text(f"DELETE FROM record_fts WHERE rowid IN ({placeholders})"), params)
        free = next((r for r in rowids if r not in held or held[r] == record_id), None)
        if free is None:
            raise RuntimeError(f"no free full-text row for record {record_id}")
        session.execute(
            text(
                "INSERT INTO record_fts (rowid, record_id, headline, summary, topics, entities, body)"
                " VALUES (:rowid, :record_id, :headline, :summary, :topics, :entities, :body)"
            ),
            {"rowid": free, **values},
        )
        return
    session.execute(
        text(
            "INSERT INTO record_fts (record_id, document) VALUES (:record_id,"
            " setweight(to_tsvector('english', :headline), 'A')"
            " || setweight(to_tsvector('english', :summary), 'B')"
            " || setweight(to_tsvector('english', :topics || ' ' || :entities), 'B')"
            " || setweight(to_tsvector('english', :body), 'D'))"
            " ON CONFLICT (record_id) DO UPDATE SET document = EXCLUDED.document"
        ),
        values,
    )


def delete_document(session: Session, *, record_id: str) -> None:
    """Take a record out of the full-text index. Call it before deleting the record: on SQLite its
    date finds the row at once, and without the record every row is read to find it."""
    if not _is_sqlite(session):
        session.execute(text("DELETE FROM record_fts WHERE record_id = :record_id"), {"record_id": record_id})
        return
    found, date = _record_date(session, record_id)
    if found:
        placeholders, params = _rowid_params(_fts_rowids(record_id, date))
        sql = f"DELETE FROM record_fts WHERE rowid IN ({placeholders}) AND record_id = :record_id"
    else:
        sql, params = "DELETE FROM record_fts WHERE record_id = :record_id", {}
    session.execute(text(sql), {**params, "record_id": record_id})


# Query parsing --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParsedQuery:
    text: str  # the query as the embedder sees it: spaces collapsed, control characters removed
    terms: tuple[str, ...]  # its words for the full-text channel, lower-cased (see parse_query)
    prefix: bool  # the last term also matches as a prefix (the query ends in it)

    def _quoted(self, open_: str, close: str, star: str, prefix: bool) -> list[str]:
        quoted = [f"{open_}{term}{close}" for term in self.terms]
        if prefix and self.prefix:
            quoted[-1] += star
        return quoted

    def fts5(self, *, any_term: bool = False, prefix: bool = False) -> str:
        """An FTS5 MATCH expression: every term double-quoted, so no FTS5 syntax (column filters,
        NEAR, AND/OR/NOT, ^, -, *) can get through; all terms required, or any one."""
        return (" OR " if any_term else " ").join(self._quoted('"', '"', "*", prefix))

    def tsquery(self, *, any_term: bool = False, prefix: bool = False) -> str:
        """A to_tsquery('english', ...) string: every term single-quoted, joined by & (or |)."""
        return (" | " if any_term else " & ").join(self._quoted("'", "'", ":*", prefix))

    def attempts(self) -> list[tuple[bool, bool]]:
        """(any_term, prefix) in the order the text channel tries them, until one matches: every
        word; every word with the last as a prefix (a word still being typed); any word."""
        tries = [(False, False)]
        if self.prefix:
            tries.append((False, True))
        if len(self.terms) > 1:
            tries.append((True, False))
        return tries


def parse_query(q: str) -> ParsedQuery:
    """The query's words, safe for either query language. ValueError for an empty or long query.

    Words are runs of letters and digits (what both full-text tokenizers keep); stop words are left
    out unless the query has nothing else (PostgreSQL's english index holds none, so there such a
    query finds nothing by text); MAX_QUERY_TERMS words at most. The last word is also a prefix
    when the query ends in it and it has MIN_PREFIX_CHARS or more."""
    if q is None or not q.strip():
        raise ValueError("q must not be empty")
    if len(q) > MAX_QUERY_CHARS:
        raise ValueError(f"q must be at most {MAX_QUERY_CHARS} characters (got {len(q)})")
    cleaned = " ".join(_clean(q).split())
    words = _WORD.findall(cleaned.casefold())
    kept = [word for word in words if word not in STOPWORDS] or words
    terms = tuple(kept[:MAX_QUERY_TERMS])
    prefix = (
        bool(terms)
        and len(kept) <= MAX_QUERY_TERMS
        and words[-1] == terms[-1]
        and len(terms[-1]) >= MIN_PREFIX_CHARS
        and bool(_WORD.search(_clean(q)[-1:]))  # "gpu" ends in the word, "gpu " does not
    )
    return ParsedQuery(text=cleaned, terms=terms, prefix=prefix)


# Vector index ---------------------------------------------------------------------------------


def _epoch(value: datetime | None) -> float:
    if value is None:
        return float("nan")
    return (value.replace(tzinfo=UTC) if value.tzinfo is None else value).timestamp()


class VectorIndex:
    """Every indexed record's embedding as rows of one float32 matrix, for one database.

    Loaded in full on first use. Before each search `refresh` reads, through the records.indexed_at
    index, which records were indexed in the last OVERLAP before the newest one it has seen (a
    transaction that commits late still lands in that window) and loads the embeddings of those
    that changed; a count of indexed records (checked at most every COUNT_SECONDS) that differs
    from its own (a record deleted, or set back to unindexed) and an age of FULL_RELOAD_SECONDS
    bring a full reload instead. A deleted record that is still here is dropped when hits are read.
    """

    OVERLAP = timedelta(seconds=10)
    FULL_RELOAD_SECONDS = 600.0
    COUNT_SECONDS = 1.0  # the count (3 ms at 50,000 records) is checked at most this often

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids: list[str] = []
        self._row_of: dict[str, int] = {}
        self._matrix = np.zeros((0, DIMENSIONS), dtype=np.float32)
        self._dates = np.zeros(0, dtype=np.float64)
        self._size = 0
        self._indexed_at: dict[str, datetime] = {}  # every indexed record seen, with or without embedding
        self._watermark: datetime | None = None
        self._loaded_at: float | None = None
        self._counted_at = 0.0

    def __len__(self) -> int:
        return len(self._row_of)

    def refresh(self, session: Session) -> None:
        with self._lock:
            stale = self._loaded_at is None or time.monotonic() - self._loaded_at > self.FULL_RELOAD_SECONDS
            now = time.monotonic()
            if not stale and now - self._counted_at >= self.COUNT_SECONDS:
                count = session.scalar(select(func.count(Record.indexed_at)))
                self._counted_at = now
                stale = count != len(self._indexed_at)
            if stale:
                self._load_all(session)
            else:
                self._load_recent(session)

    def _load_all(self, session: Session) -> None:
        rows = session.execute(
            select(Record.id, Record.indexed_at, Record.date, Record.embedding).where(
                Record.indexed_at.is_not(None)
            )
        ).all()
        self._indexed_at = {row.id: row.indexed_at for row in rows}
        self._watermark = max(self._indexed_at.values(), default=None)
        size = DIMENSIONS * 4
        usable = [row for row in rows if row.embedding is not None and len(row.embedding) == size]
        self._ids = [row.id for row in usable]
        self._row_of = {record_id: index for index, record_id in enumerate(self._ids)}
        self._size = len(usable)
        matrix = np.frombuffer(b"".join(bytes(row.embedding) for row in usable), dtype="<f4")
        capacity = max(1024, int(self._size * 1.25))
        self._matrix = np.zeros((capacity, DIMENSIONS), dtype=np.float32)
        self._matrix[: self._size] = matrix.reshape(self._size, DIMENSIONS)
        self._dates = np.full(capacity, np.nan)
        self._dates[: self._size] = [_epoch(row.date) for row in usable]
        self._loaded_at = self._counted_at = time.monotonic()
        log.info("search: loaded %d embeddings", self._size)

    def _load_recent(self, session: Session) -> None:
        if self._watermark is None:
            return
        since = self._watermark - self.OVERLAP
        recent = session.execute(select(Record.id, Record.indexed_at).where(Record.indexed_at >= since)).all()
        changed = [row.id for row in recent if self._indexed_at.get(row.id) != row.indexed_at]
        if not changed:
            return
        rows = session.execute(
            select(Record.id, Record.indexed_at, Record.date, Record.embedding).where(Record.id.in_(changed))
        ).all()
        for row in rows:
            if row.indexed_at is None:
                continue
            self._indexed_at[row.id] = row.indexed_at
            self._watermark = max(self._watermark, row.indexed_at)
            self._put(row.id, row.embedding, row.date)

    def _put(self, record_id: str, embedding: bytes | None, date: datetime | None) -> None:
        index = self._row_of.get(record_id)
        if embedding is None or len(embedding) != DIMENSIONS * 4:
            if index is not None:  # no embedding any more: a zero row never passes min_similarity
                self._matrix[index] = 0.0
            return
        if index is None:
            if self._size == len(self._matrix):
                grown = np.zeros((max(1024, 2 * self._size), DIMENSIONS), dtype=np.float32)
                grown[: self._size] = self._matrix[: self._size]
                dates = np.full(len(grown), np.nan)
                dates[: self._size] = self._dates[: self._size]
                self._matrix, self._dates = grown, dates
            index = self._size
            self._size += 1
            self._ids.append(record_id)
            self._row_of[record_id] = index
        self._matrix[index] = np.frombuffer(bytes(embedding), dtype="<f4")
        self._dates[index] = _epoch(date)

    def nearest(
        self,
        vector: np.ndarray,
        *,
        count: int,
        min_similarity: float,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[tuple[str, float]]:
        """The `count` most similar records at `min_similarity` or more, best first."""
        with self._lock:
            size, matrix, dates, ids = self._size, self._matrix, self._dates, self._ids
        if size == 0:
            return []
        scores = matrix[:size] @ vector.astype(np.float32)
        if since is not None or until is not None:
            mask = np.ones(size, dtype=bool)
            if since is not None:
                mask &= dates[:size] >= _epoch(since)
            if until is not None:
                mask &= dates[:size] < _epoch(until)
            scores = np.where(mask, scores, -1.0)
        count = min(count, size)
        top = np.argpartition(-scores, count - 1)[:count] if count < size else np.arange(size)
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(ids[i], float(scores[i])) for i in top if scores[i] >= min_similarity]


_INDEXES: OrderedDict[str, VectorIndex] = OrderedDict()
_INDEXES_LOCK = threading.Lock()
_MAX_INDEXES = 4  # databases held at once (tests switch databases; a service uses one)


def vector_index(session: Session) -> VectorIndex:
    """This process's vector index for the session's database."""
    key = session.get_bind().engine.url.render_as_string(hide_password=False)
    with _INDEXES_LOCK:
        index = _INDEXES.get(key)
        if index is None:
            index = _INDEXES[key] = VectorIndex()
            while len(_INDEXES) > _MAX_INDEXES:
                _INDEXES.popitem(last=False)
        _INDEXES.move_to_end(key)
        return index


def reset_vector_indexes() -> None:
    """Forget every loaded vector index (tests that rebuild a database under the same URL)."""
    with _INDEXES_LOCK:
        _INDEXES.clear()


_EMBEDDER_LOCK = threading.Lock()


def embed_query(q: str) -> np.ndarray:
    """The query's unit embedding; the model is loaded on the first call.

    One query is a few tokens: torch's intra-op threads buy nothing there, and on a busy machine
    (the worker generating on every core) waiting for them to meet costs 10-50x the work itself
    (p50 160 ms against 12-18 ms measured on 2 shared cores). So a query is embedded on one thread,
    one query at a time, and the process's thread setting is put back after."""
    import torch

    with _EMBEDDER_LOCK:
        model = get_minilm()
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            vector = model.vectors([q])[0]
        finally:
            torch.set_num_threads(threads)
    return np.asarray(vector, dtype=np.float32)


# Search ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchHit:
    record_id: str
    story_id: str | None
    score: float  # reciprocal rank fusion over the channels
    channel: Channel
    headline: str
    summary: str
    source: str
    date: datetime | None
    url: str | None
    text_rank: int | None  # 1-based rank in the full-text channel, None when it did not match
    similarity: float | None  # cosine with the query, when the semantic channel matched


@dataclass(frozen=True)
class StoryHit:
    story_id: str
    title: str
    score: float  # its best record's
    records: list[SearchHit] = field(default_factory=list)


@dataclass(frozen=True)
class SearchResult:
    query: str
    hits: list[SearchHit]
    stories: list[StoryHit]
    semantic: bool  # whether the semantic channel ran (False: lexical only)


def _date_params(since: datetime | None, until: datetime | None) -> tuple[str, dict[str, Any], list[Any]]:
    clauses: list[str] = []
    params: dict[str, Any] = {}
    binds: list[Any] = []
    for name, value, op in (("since", since, ">="), ("until", until, "<")):
        if value is not None:
            clauses.append(f" AND r.date {op} :{name}")
            params[name] = value
            binds.append(bindparam(name, type_=DateTime(timezone=True)))
    return "".join(clauses), params, binds


def _sqlite_text(
    session: Session,
    match: str,
    *,
    count: int,
    ranked: int,
    since: datetime | None,
    until: datetime | None,
) -> list[str]:
    # Rowids follow record dates (_fts_rowids): a date range is a rowid range (to the second; the
    # hits are filtered exactly later), and the newest `ranked` matches are a rowid bound.
    bounds, params = "", {"match": match, "count": count}
    if since is not None:
        bounds += " AND rowid >= :low"
        params["low"] = _second(since) << SLOT_BITS
    if until is not None:
        bounds += " AND rowid < :high"
        params["high"] = (math.ceil(_epoch(until))) << SLOT_BITS
    oldest = session.scalar(
        text(
            f"SELECT rowid FROM record_fts WHERE record_fts MATCH :match{bounds}"
            " ORDER BY rowid DESC LIMIT 1 OFFSET :skip"
        ),
        {**params, "skip": ranked - 1},
    )
    if oldest is not None:  # more than `ranked` matches: rank the newest of them only
        bounds += " AND rowid >= :oldest"
        params["oldest"] = oldest
    weights = ", ".join(str(w) for w in BM25_WEIGHTS)
    return list(
        session.scalars(
            text(
                f"SELECT record_id FROM record_fts WHERE record_fts MATCH :match{bounds}"
                f" ORDER BY bm25(record_fts, {weights}) LIMIT :count"
            ),
            params,
        )
    )


def _postgres_text(
    session: Session,
    match: str,
    *,
    count: int,
    ranked: int,
    since: datetime | None,
    until: datetime | None,
) -> list[str]:
    dates, params, binds = _date_params(since, until)
    statement = text(
        "WITH query AS (SELECT to_tsquery('english', :match) AS q),"
        " newest AS (SELECT f.record_id, f.document FROM record_fts f"
        " JOIN records r ON r.id = f.record_id, query"
        f" WHERE f.document @@ query.q{dates} ORDER BY r.date DESC LIMIT :ranked)"
        " SELECT newest.record_id FROM newest, query"
        f" ORDER BY ts_rank_cd(CAST('{TS_WEIGHTS}' AS float4[]), newest.document, query.q, 1) DESC,"
        " newest.record_id LIMIT :count"
    ).bindparams(*binds)
    return list(session.scalars(statement, {"match": match, "count": count, "ranked": ranked, **params}))


def text_candidates(
    session: Session,
    parsed: ParsedQuery,
    *,
    count: int,
    since: datetime | None = None,
    until: datetime | None = None,
    ranked: int | None = None,
) -> list[str]:
    """Record ids from the full-text index, best first: records with every term, or, when there are
    none, with the last as a prefix, or with any term (ParsedQuery.attempts). A query that matches
    more than `ranked` records (MAX_RANKED) is ranked among its newest `ranked` matches only, which
    bounds its cost however common its words are."""
    if not parsed.terms:
        return []
    ranked = max(ranked or MAX_RANKED, count)
    sqlite = _is_sqlite(session)
    find = _sqlite_text if sqlite else _postgres_text
    for any_term, prefix in parsed.attempts():
        if sqlite:
            match = parsed.fts5(any_term=any_term, prefix=prefix)
        else:
            match = parsed.tsquery(any_term=any_term, prefix=prefix)
        ids = find(session, match, count=count, ranked=ranked, since=since, until=until)
        if ids:
            return list(dict.fromkeys(ids))
    return []


def _rrf(channels: Iterable[Sequence[str]]) -> dict[str, float]:
    scores: dict[str, float] = {}
    for ranked in channels:
        for rank, record_id in enumerate(ranked, start=1):
            scores[record_id] = scores.get(record_id, 0.0) + 1.0 / (RRF_K + rank)
    return scores


def _as_utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def search(
    session: Session,
    *,
    q: str,
    limit: int = 20,
    semantic: bool = True,
    since: datetime | None = None,
    until: datetime | None = None,
    min_similarity: float = MIN_SIMILARITY,
    candidates: int | None = None,
) -> SearchResult:
    """The records that match `q`, best first, and their stories.

    ValueError for an empty query, one over MAX_QUERY_CHARS characters, a limit outside 1..MAX_LIMIT
    or `since` not before `until`. `semantic=False`, or an embedder that cannot be loaded, leaves
    the full-text channel alone. Each channel contributes its `candidates` best records (by default
    max(3 * limit, 50)) to the fusion."""
    parsed = parse_query(q)
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIMIT}")
    since, until = _as_utc(since), _as_utc(until)
    if since is not None and until is not None and since >= until:
        raise ValueError("since must be before until")
    pool = candidates or max(3 * limit, 50)

    text_ids = text_candidates(session, parsed, count=pool, since=since, until=until)
    similar: list[tuple[str, float]] = []
    used_semantic = False
    if semantic:
        try:
            vector = embed_query(parsed.text)
        except Exception:  # no model installed, or it failed to load: the text channel still answers
            log.warning("search: embedder unavailable, full-text only", exc_info=True)
        else:
            used_semantic = True
            index = vector_index(session)
            index.refresh(session)
            similar = index.nearest(
                vector, count=pool, min_similarity=min_similarity, since=since, until=until
            )

    semantic_ids = [record_id for record_id, _ in similar]
    fused = _rrf((text_ids, semantic_ids))
    ranked = sorted(fused, key=lambda record_id: (-fused[record_id], record_id))
    text_rank = {record_id: rank for rank, record_id in enumerate(text_ids, start=1)}
    similarity = dict(similar)
    hits = _hydrate(
        session,
        ranked,
        limit=limit,
        fused=fused,
        text_rank=text_rank,
        similarity=similarity,
        since=since,
        until=until,
    )
    return SearchResult(query=parsed.text, hits=hits, stories=_stories(session, hits), semantic=used_semantic)


def _hydrate(
    session: Session,
    ranked: list[str],
    *,
    limit: int,
    fused: dict[str, float],
    text_rank: dict[str, int],
    similarity: dict[str, float],
    since: datetime | None,
    until: datetime | None,
) -> list[SearchHit]:
    """The first `limit` ranked ids that are still records in the date range, as hits (a deleted
    record is skipped)."""
    hits: list[SearchHit] = []
    start = 0
    while len(hits) < limit and start < len(ranked):
        batch = ranked[start : start + limit - len(hits)]
        start += len(batch)
        rows = session.execute(
            select(
                Record.id, Record.story_id, Record.source, Record.date, Record.data, Record.corrected_data
            ).where(Record.id.in_(batch))
        ).all()
        by_id = {row.id: row for row in rows}
        for record_id in batch:
            row = by_id.get(record_id)
            if row is None:
                continue
            date = _as_utc(row.date)
            if (since is not None and (date is None or date < since)) or (
                until is not None and (date is None or date >= until)
            ):
                continue
            meta = {**(row.data or {}), **(row.corrected_data or {})}
            in_text, in_semantic = record_id in text_rank, record_id in similarity
            hits.append(
                SearchHit(
                    record_id=record_id,
                    story_id=row.story_id,
                    score=round(fused[record_id], 6),
                    channel="both" if in_text and in_semantic else "text" if in_text else "semantic",
                    headline=str(meta.get("headline") or ""),
                    summary=str(meta.get("summary") or ""),
                    source=row.source,
                    date=date,
                    url=meta.get("url"),
                    text_rank=text_rank.get(record_id),
                    similarity=round(similarity[record_id], 4) if in_semantic else None,
                )
            )
    return hits


def _stories(session: Session, hits: list[SearchHit]) -> list[StoryHit]:
    """The hits' stories, in the order of their best hit, each with its hits."""
    grouped: dict[str, list[SearchHit]] = {}
    for hit in hits:
        if hit.story_id is not None:
            grouped.setdefault(hit.story_id, []).append(hit)
    if not grouped:
        return []
    titles = dict(session.execute(select(Story.id, Story.title).where(Story.id.in_(list(grouped)))).all())
    return [
        StoryHit(story_id=story_id, title=titles.get(story_id, ""), score=records[0].score, records=records)
        for story_id, records in grouped.items()
    ]
