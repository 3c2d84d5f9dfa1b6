"""Atom feeds of stories, one per feed token: an RSS reader follows the URL, no header needed.

`POST /v1/feeds` (with the API key) stores a feed's name and filters and the sha256 of a fresh
random token; the token itself is shown once, inside the feed URL. `GET /v1/feeds/stories.atom?
token=...` needs no API key: the token is the credential, and it reads only its own feed, with the
filters stored with it. A revoked token and an unknown one get the same 404. Tokens start with
`enh_`, so the log filter redacts them wherever they appear (app/core/logging.py), as it does any
`token=` query value.

The feed is Atom 1.0 (RFC 4287), built with xml.etree: the newest stories (by the date they broke),
each with its summary, its newsletters and every source link.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape

from sqlalchemy import select
from sqlalchemy.orm import Session

from app import __version__
from app.crud import as_utc
from app.knowledge.digests import html_link, story_links
from app.knowledge.story_query import StoryFilter, StoryView, page_stories
from app.models import FeedToken, utcnow

ATOM_NS = "http://www.w3.org/2005/Atom"
FEED_PATH = "/v1/feeds/stories.atom"
TOKEN_PREFIX = "enh_feed_"  # enh_: redacted in every log line like the API keys
FEED_ENTRIES = 50
MEDIA_TYPE = "application/atom+xml; charset=utf-8"

# Characters XML 1.0 cannot hold at all (not even escaped): dropped from any text.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


# Tokens -----------------------------------------------------------------------------------


def create_feed(session: Session, *, name: str, filters: StoryFilter) -> tuple[FeedToken, str]:
    """A new feed; returns it and its token (only the token's sha256 is stored)."""
    if filters.until is not None:
        raise ValueError("a feed follows new stories: it takes no until")
    token = new_token()
    feed = FeedToken(
        name=name, token_sha256=hash_token(token), filters=filters.as_dict(), created_at=utcnow()
    )
    session.add(feed)
    session.flush()
    return feed, token


def list_feeds(session: Session) -> list[FeedToken]:
    return list(session.scalars(select(FeedToken).order_by(FeedToken.created_at.desc(), FeedToken.id)))


def revoke_feed(session: Session, *, feed_id: str) -> FeedToken | None:
    """Revoke the feed (again is fine); None when there is no such feed."""
    feed = session.get(FeedToken, feed_id)
    if feed is not None and feed.revoked_at is None:
        feed.revoked_at = utcnow()
        session.flush()
    return feed


def feed_for_token(session: Session, token: str | None) -> FeedToken | None:
    """The live feed this token opens; None for a missing, unknown or revoked token alike."""
    if not token or len(token) > 200:
        return None
    feed = session.scalar(select(FeedToken).where(FeedToken.token_sha256 == hash_token(token)))
    if feed is None or feed.revoked_at is not None:
        return None
    return feed


def feed_filters(feed: FeedToken) -> StoryFilter:
    return StoryFilter.from_dict(feed.filters or {})


def feed_stories(session: Session, feed: FeedToken, *, limit: int = FEED_ENTRIES) -> list[StoryView]:
    """The feed's newest stories (by the date they broke), with its stored filters."""
    return page_stories(session, filters=feed_filters(feed), limit=limit).items


# Atom -------------------------------------------------------------------------------------


def _text(value: object) -> str:
    return _NOT_XML.sub("", str(value))


def _time(moment: datetime) -> str:
    utc = as_utc(moment)
    assert utc is not None
    return utc.isoformat(timespec="seconds").replace("+00:00", "Z")


def _add(parent: ET.Element, tag: str, text: object | None = None, **attributes: str) -> ET.Element:
    element = ET.SubElement(parent, tag, {k: _text(v) for k, v in attributes.items()})
    if text is not None:
        element.text = _text(text)
    return element


def _web_link(url: str | None) -> str | None:
    if url and url.strip().lower().startswith(("http://", "https://")):
        return url.strip()
    return None


def entry_html(story: StoryView) -> str:
    """The entry's content: summary, relevance, dates, newsletters and every source link (escaped
    here, and escaped again as the element's text)."""
    dates = story.first_date.date().isoformat()
    if story.last_date.date() != story.first_date.date():
        dates += f" to {story.last_date.date().isoformat()}"
    relevance = f"{story.max_relevance}/10" if story.max_relevance is not None else "unrated"
    parts = [
        f"<p>{escape(story.summary or '(no summary)')}</p>",
        f"<p>Relevance {relevance} · {dates} · Sources: {escape(', '.join(story.sources))}</p>",
    ]
    if story.entities:
        parts.append(f"<p>Entities: {escape(', '.join(story.entities))}</p>")
    links = story_links(story)
    if links:
        parts.append("<ul>" + "".join(html_link(url, sources) for url, sources in links) + "</ul>")
    return "\n".join(parts)


@dataclass(frozen=True)
class AtomFeed:
    body: bytes
    updated: datetime
    etag: str  # a strong validator: the body's sha256


def render_atom(
    feed: FeedToken, stories: list[StoryView], *, self_url: str, now: datetime | None = None
) -> AtomFeed:
    """The feed document. `updated` is its newest story's (the feed's creation without stories), so
    an unchanged feed is byte-for-byte the same and its ETag holds."""
    updated = max(
        (s.updated_at for s in stories), default=as_utc(feed.created_at) or now or datetime.now(UTC)
    )
    # Unqualified names under a default xmlns: Atom's elements, its attributes in no namespace.
    root = ET.Element("feed", xmlns=ATOM_NS)
    _add(root, "id", f"urn:newsletter-enhancer:feed:{feed.id}")
    _add(root, "title", f"Newsletter stories: {feed.name}")
    filters = ", ".join(f"{k}={v}" for k, v in (feed.filters or {}).items())
    _add(root, "subtitle", f"Stories from your newsletters (filters: {filters or 'none'})")
    _add(root, "updated", _time(updated))
    _add(root, "link", rel="self", type="application/atom+xml", href=self_url)
    _add(_add(root, "author"), "name", "newsletter-enhancer")
    _add(root, "generator", "newsletter-enhancer", version=__version__)
    for story in stories:
        entry = _add(root, "entry")
        _add(entry, "id", f"urn:story:{story.id}")
        _add(entry, "title", story.title or "(untitled)", type="text")
        _add(entry, "updated", _time(story.updated_at))
        _add(entry, "published", _time(story.first_date))
        _add(entry, "summary", story.summary or story.title, type="text")
        _add(entry, "content", entry_html(story), type="html")
        for topic in story.topics:
            _add(entry, "category", term=topic, label=topic)
        alternate = next((url for url in (_web_link(u) for u in story.links) if url), None)
        if alternate:
            _add(entry, "link", rel="alternate", type="text/html", href=alternate)
        for source in story.sources:
            _add(_add(entry, "contributor"), "name", source)
    body = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return AtomFeed(body=body, updated=updated, etag='"' + hashlib.sha256(body).hexdigest()[:40] + '"')
