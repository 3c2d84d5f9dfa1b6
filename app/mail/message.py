"""One raw RFC 5322 message -> the newsletter inside it: headers, HTML and plain-text bodies.

The standard library's `email` package (policy `default`) does the MIME work: multipart walking,
quoted-printable and base64. What it leaves to us is being robust to what real mailboxes hold:
a charset that is unknown or wrong is decoded as UTF-8 with replacement characters (never an
error), headers are cleaned of control and bidi-override characters (an encoded-word can carry
CR/LF, NUL or U+202E), and a message forwarded as an attachment (`message/rfc822`) is read as the
newsletter it carries. Attachments and inline images are ignored. A message that yields no text
at all raises EmailUnreadable, which the API answers with a 422 and `enhancer ingest` reports.
"""

from __future__ import annotations

import codecs
import email
import email.policy
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import Message
from email.utils import getaddresses, parsedate_to_datetime

# Walking more parts than this is an attack, not a newsletter (real ones have 2-30).
MAX_MIME_PARTS = 500
MAX_HEADER_CHARS = 1000

_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")
_SPACE_RE = re.compile(r"\s+")


class EmailUnreadable(ValueError):
    """The bytes hold no newsletter we can read; the message says why."""


@dataclass(frozen=True)
class NewsletterEmail:
    message_id: str | None  # as sent, without angle brackets; None when the message has none
    sender: str  # the address, e.g. dan@tldrnewsletter.com ("" when absent)
    sender_name: str
    subject: str
    date: datetime | None
    list_id: str | None  # List-Id without the display name, e.g. tldr-ai.tldrnewsletter.com
    html: str | None
    text: str | None
    size: int
    sha256: str
    forwarded: bool = False  # the newsletter came as an attachment of another message

    @property
    def dedup_key(self) -> str:
        """What makes two posts the same e-mail: its Message-ID, else the sha256 of its bytes."""
        return f"mid:{self.message_id}" if self.message_id else f"sha256:{self.sha256}"

    @property
    def item_message_id(self) -> str:
        """The Message-ID its items carry. Without one, a stand-in made of sender, date and subject:
        the same newsletter exported again with other bytes (a rewritten header) maps to its items."""
        if self.message_id:
            return self.message_id
        when = self.date.isoformat() if self.date else ""
        digest = hashlib.sha256(f"{self.sender}\n{when}\n{self.subject}".encode()).hexdigest()[:32]
        return f"no-message-id-{digest}"


def clean_header(value: str, limit: int = MAX_HEADER_CHARS) -> str:
    """One line of printable text: folded lines joined, control and bidi-override characters gone."""
    return _SPACE_RE.sub(" ", _CONTROL_RE.sub("", value)).strip()[:limit]


def _header(message: Message, name: str) -> str:
    try:
        value = message.get(name)
    except Exception:  # a malformed header the policy cannot parse: its raw text instead
        value = next((raw for key, raw in message.raw_items() if key.lower() == name.lower()), None)
    return clean_header(str(value)) if value is not None else ""


def _message_id(message: Message) -> str | None:
    value = _header(message, "Message-ID").strip("<> ")
    return value or None


def parse_address(value: str) -> tuple[str, str]:
    """(display name, address in lower case) of a From value; ("", "") when there is none."""
    try:
        name, address = getaddresses([value])[0]
    except (IndexError, ValueError):
        return "", ""
    return clean_header(name, 200), clean_header(address, 320).lower()


def parse_date(value: str) -> datetime | None:
    """An RFC 5322 date in UTC; None when it is missing or not one (Gmail's forward header, say)."""
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _sender(message: Message) -> tuple[str, str]:
    return parse_address(_header(message, "From"))


def _date(message: Message) -> datetime | None:
    return parse_date(_header(message, "Date"))


def _list_id(message: Message) -> str | None:
    value = _header(message, "List-Id")
    match = re.search(r"<([^<>]+)>", value)
    found = (match.group(1) if match else value).strip().lower()
    return found or None


def decode_part(part: Message) -> str:
    """A text part's content; an unknown or wrong charset gives replacement characters, not an error."""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "utf-8"
    try:
        codecs.lookup(charset)
    except LookupError:
        charset = "utf-8"
    try:
        return payload.decode(charset, errors="replace")
    except (LookupError, UnicodeError):  # codecs that fail on their own terms (e.g. utf-7)
        return payload.decode("utf-8", errors="replace")


def _is_attachment(part: Message) -> bool:
    disposition = (part.get("Content-Disposition") or "").split(";", 1)[0].strip().lower()
    return disposition == "attachment"


def _parts(message: Message) -> Iterator[Message]:
    """Every part in document order, without descending into attached messages (nor recursing)."""
    stack = [message]
    count = 0
    while stack:
        part = stack.pop()
        count += 1
        if count > MAX_MIME_PARTS:
            raise EmailUnreadable(f"the e-mail has more than {MAX_MIME_PARTS} MIME parts")
        yield part
        children = part.get_payload() if part.is_multipart() else None
        if isinstance(children, list) and part.get_content_type() != "message/rfc822":
            stack.extend(reversed([c for c in children if isinstance(c, Message)]))


def _bodies(message: Message) -> tuple[str | None, str | None, Message | None]:
    """(html, text, attached message): the first HTML and plain-text parts that are not attachments."""
    html = text = None
    attached: Message | None = None
    for part in _parts(message):
        kind = part.get_content_type()
        if kind == "message/rfc822":
            inner = part.get_payload()
            if attached is None and isinstance(inner, list) and inner and isinstance(inner[0], Message):
                attached = inner[0]
            continue
        if part.is_multipart() or _is_attachment(part):
            continue
        if kind == "text/html" and html is None:
            html = decode_part(part)
        elif kind == "text/plain" and text is None:
            text = decode_part(part)
    return html, text, attached


def parse_email(raw: bytes) -> NewsletterEmail:
    """The newsletter in one raw message (see the module docstring); EmailUnreadable if none."""
    if not raw.strip():
        raise EmailUnreadable("the e-mail is empty")
    try:
        message = email.message_from_bytes(raw, policy=email.policy.default)
        if not message.keys():
            raise EmailUnreadable("not an RFC 5322 message: it starts with no header lines")
        html, text, attached = _bodies(message)
        forwarded = False
        if attached is not None and not _has_own_text(html, text):
            inner_html, inner_text, _ = _bodies(attached)
            if inner_html or inner_text:
                html, text, forwarded = inner_html, inner_text, True
    except RecursionError:
        raise EmailUnreadable("the e-mail nests MIME parts too deep") from None
    if not (html and html.strip()) and not (text and text.strip()):
        raise EmailUnreadable("the e-mail has no text/html or text/plain part with newsletter text")
    if _binary(html or text or ""):
        raise EmailUnreadable("the e-mail's text part holds binary data, not text")
    source = attached if forwarded and attached is not None else message
    name, address = _sender(source)
    return NewsletterEmail(
        message_id=_message_id(message),
        sender=address,
        sender_name=name,
        subject=_header(source, "Subject") or _header(message, "Subject"),
        date=_date(source) or _date(message),
        list_id=_list_id(source) or _list_id(message),
        html=html,
        text=text,
        size=len(raw),
        sha256=hashlib.sha256(raw).hexdigest(),
        forwarded=forwarded,
    )


def _binary(text: str) -> bool:
    sample = text[:4096]
    odd = sum(1 for c in sample if (c < " " and c not in "\t\n\r\f") or c == "\ufffd")
    return odd > len(sample) / 10


def _has_own_text(html: str | None, text: str | None) -> bool:
    """Whether the outer message says more than a forwarding note (a few lines) itself."""
    words = len((text or "").split()) if text else len(re.sub(r"<[^>]*>", " ", html or "").split())
    return words > 200
