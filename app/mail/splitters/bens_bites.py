"""Ben's Bites (beehiiv): a "Together with" sponsor near the top, sections of bold linked titles
with a paragraph, and lists where each bullet is a story ("Title - one line on it")."""

from __future__ import annotations

from app.mail.blocks import Block
from app.mail.message import NewsletterEmail
from app.mail.splitters.base import Splitter


class BensBitesSplitter(Splitter):
    name = "bens_bites"

    def matches(self, email: NewsletterEmail, blocks: list[Block]) -> bool:
        haystack = f"{email.list_id or ''} {email.sender} {email.sender_name}".lower()
        return "bensbites" in haystack or "ben's bites" in haystack or "ben’s bites" in haystack

    def is_list_story(self, block: Block) -> bool:
        if not block.list_item:
            return False
        first = next((run for run in block.runs if run.text.strip()), None)
        return first is not None and first.href is not None
