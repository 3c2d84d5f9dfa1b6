"""Raw e-mail bytes -> everything a submission stores: the e-mail row's fields, one item per story
and where each sat. One function for `POST /v1/emails` and `enhancer ingest --local`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.contract import EnhanceItem
from app.crud import StoryPlacement
from app.mail.message import parse_email
from app.mail.split import SplitEmail, split_email, story_item


@dataclass(frozen=True)
class PreparedEmail:
    split: SplitEmail
    items: list[EnhanceItem]
    placements: list[StoryPlacement]
    fields: dict[str, Any]  # app.models.Email columns

    @property
    def dedup_key(self) -> str:
        return str(self.fields["dedup_key"])


def prepare_email(raw: bytes) -> PreparedEmail:
    """Parse and split; EmailUnreadable (a ValueError) when the bytes hold no newsletter."""
    parsed = parse_email(raw)
    split = split_email(parsed)
    newsletter = split.email
    items, placements, seen = [], [], set()
    for story in split.stories:
        item = story_item(split, story)
        if (item.message_id, item.content) in seen:  # one story printed twice (a "top story" recap)
            continue
        seen.add((item.message_id, item.content))
        items.append(item)
        placements.append(
            StoryPlacement(section=story.section, position=story.position, sponsored=story.sponsored)
        )
    fields = {
        "dedup_key": parsed.dedup_key,
        "message_id": parsed.message_id,
        "sender": newsletter.sender,
        "subject": newsletter.subject,
        "date": newsletter.date,
        "list_id": newsletter.list_id,
        "size": parsed.size,
        "sha256": parsed.sha256,
        "splitter": split.splitter,
        "story_count": len(items),
    }
    return PreparedEmail(split, items, placements, fields)
