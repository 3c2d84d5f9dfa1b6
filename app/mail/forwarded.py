"""A newsletter forwarded inline ("---------- Forwarded message ---------" in Gmail, "Begin
forwarded message:" in Apple Mail, "-----Original Message-----" in Outlook): the forwarder's note
and the quoted header lines go; the original sender, subject and date come from those lines, so
the right splitter is chosen and the stories name the newsletter, not the person who forwarded it."""

from __future__ import annotations

import re
from dataclasses import replace

from app.mail.blocks import Block
from app.mail.message import NewsletterEmail, clean_header, parse_address, parse_date

_MARKER_RE = re.compile(
    r"^\W*(-{3,}\s*forwarded message\s*-{3,}|begin forwarded message:?|-{3,}\s*original message\s*-{3,})\W*$",
    re.I,
)
_FIELD_RE = re.compile(r"^\s*(from|date|sent|subject|to|cc|reply-to)\s*:\s*(.*)$", re.I)
_MAX_MARKER_INDEX = 40  # the marker sits near the top, under the forwarder's note


def unwrap_inline_forward(email: NewsletterEmail, blocks: list[Block]) -> tuple[NewsletterEmail, list[Block]]:
    marker = next((i for i, b in enumerate(blocks[:_MAX_MARKER_INDEX]) if _MARKER_RE.match(b.text)), None)
    if marker is None:
        return email, blocks
    fields: dict[str, str] = {}
    index = marker + 1
    while index < len(blocks):
        match = _FIELD_RE.match(blocks[index].text)
        if not match:
            break
        fields.setdefault(match.group(1).lower(), clean_header(match.group(2)))
        index += 1
    if "from" not in fields:
        return email, blocks
    name, address = parse_address(fields["from"])
    # Gmail writes "Tue, Mar 3, 2026 at 6:12 AM", not RFC 5322: then the outer date stays.
    date = parse_date(fields.get("date") or fields.get("sent") or "") or email.date
    original = replace(
        email,
        sender=address or email.sender,
        sender_name=name or email.sender_name,
        subject=fields.get("subject") or re.sub(r"^\s*(fwd?|fw)\s*:\s*", "", email.subject, flags=re.I),
        date=date,
        list_id=None,
        forwarded=True,
    )
    return original, blocks[index:]
