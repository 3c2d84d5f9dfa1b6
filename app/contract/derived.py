"""Fields computed by code, never generated: links, counts, reading time, has_html."""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

WORDS_PER_MINUTE = 230
MAX_LINKS = 200

_TRACKING_PREFIXES = ("utm_", "mc_", "_hs", "pk_", "mtm_", "vero_", "oly_")
_TRACKING_KEYS = frozenset(
    {
        "fbclid", "gclid", "dclid", "msclkid", "yclid", "igshid", "twclid", "ttclid", "li_fat_id",
        "mkt_tok", "ref", "ref_src", "ref_url", "s_cid", "trk", "trkcampaign", "sc_campaign",
        "cmpid", "campaign_id", "ck_subscriber_id", "rb_clickid", "wt_mc", "spm", "share", "si",
    }
)  # fmt: skip

URL_RE = re.compile(r"""https?://[^\s<>"'`)\]]+""", re.IGNORECASE)
_ANY_TAG_RE = re.compile(r"<[^>]*>?")
_HREF_RE = re.compile(r"""href\s*=\s*["']?([^"'\s>]+)""", re.IGNORECASE)
_HTML_TAG_RE = re.compile(r"<(html|body|div|p|br|a|span|table|td|tr|img|h[1-6]|ul|li|script|style)\b", re.I)


def strip_tracking(url: str) -> str:
    """Remove tracking query parameters and fragments that only identify the campaign."""
    parts = urlsplit(url.strip())
    query = [
        (key, value)
        for key, value in parse_qsl(parts.query, keep_blank_values=True)
        if key.lower() not in _TRACKING_KEYS and not key.lower().startswith(_TRACKING_PREFIXES)
    ]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query, doseq=True), parts.fragment))


class _TextExtractor(HTMLParser):
    """HTML to text; drops script/style/head content, keeps hrefs."""

    _SKIP = frozenset({"script", "style", "head", "noscript", "template", "svg"})
    _BLOCK = frozenset(
        {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol"}
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self.hrefs: list[str] = []
        self._skip_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skip_depth += 1
        elif tag in self._BLOCK:
            self.chunks.append("\n")
        if tag == "a":
            self.hrefs.extend(v for k, v in attrs if k == "href" and v)

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP and self._skip_depth:
            self._skip_depth -= 1
        elif tag in self._BLOCK:
            self.chunks.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip_depth:
            self.chunks.append(data)


def looks_like_html(content: str) -> bool:
    return bool(_HTML_TAG_RE.search(content))


def _extract(content: str, is_html: bool) -> tuple[str, list[str]]:
    if not is_html:
        return content, []
    parser = _TextExtractor()
    try:
        parser.feed(content)
        parser.close()
        chunks, hrefs = parser.chunks, parser.hrefs
    except AssertionError:  # Python < 3.13 asserts on some malformed markup ("<![0"): strip tags instead
        chunks = [html.unescape(_ANY_TAG_RE.sub(" ", content))]
        hrefs = _HREF_RE.findall(content)
    text = re.sub(r"[ \t\r\f\v]+", " ", "".join(chunks))
    text = re.sub(r"\n\s*\n+", "\n\n", text).strip()
    return text, hrefs


def html_to_text(content: str, is_html: bool | None = None) -> str:
    """Plain text of an item (HTML converted; Markdown and text returned as they are)."""
    return _extract(content, looks_like_html(content) if is_html is None else is_html)[0]


@dataclass(frozen=True)
class DerivedFields:
    text: str
    links: list[str] = field(default_factory=list)
    content_length: int = 0
    link_count: int = 0
    word_count: int = 0
    reading_time_minutes: int = 0
    has_html: bool = False


def _clean_link(url: str) -> str | None:
    url = url.strip().rstrip(".,;:!?*")
    if not url.lower().startswith(("http://", "https://")):
        return None
    try:
        return strip_tracking(url)
    except ValueError:  # malformed netloc such as an unclosed IPv6 bracket
        return None


def derive_fields(
    *, content: str, links: list[str] | None = None, has_html: bool | None = None
) -> DerivedFields:
    """Everything about an item that code can know for certain."""
    is_html = looks_like_html(content) if has_html is None else has_html
    text, hrefs = _extract(content, is_html)
    # Links the ingester gives are URLs, and hrefs come unescaped from the HTML parser; only URLs
    # found in plain text may still carry entities ("&amp;"): unescaping a given link would turn
    # "?a=1&dd;=2" into "?a=1ⅆ=2".
    found = URL_RE.findall(text) if is_html else [html.unescape(url) for url in URL_RE.findall(content)]
    candidates = [*(links or []), *hrefs, *found]
    seen: dict[str, None] = {}
    for candidate in candidates:
        cleaned = _clean_link(candidate)
        if cleaned and cleaned not in seen:
            seen[cleaned] = None
    cleaned_links = list(seen)[:MAX_LINKS]
    words = len(text.split())
    return DerivedFields(
        text=text,
        links=cleaned_links,
        content_length=len(content),
        link_count=len(cleaned_links),
        word_count=words,
        reading_time_minutes=math.ceil(words / WORDS_PER_MINUTE) if words else 0,
        has_html=is_html,
    )
