"""TLDR (AI, Tech, ...): sections of linked titles ending in "(N minute read)", "(GitHub Repo)" or
"(Sponsor)", each followed by a short summary; every link behind TLDR's CL0 tracking redirect."""

from __future__ import annotations

import re

from app.mail.blocks import Block
from app.mail.message import NewsletterEmail
from app.mail.splitters.base import MAX_TITLE_WORDS, Layout, Splitter

_ANNOTATED_TITLE_RE = re.compile(r"\([^()]{2,40}\)\s*$")


class TldrSplitter(Splitter):
    name = "tldr"

    def matches(self, email: NewsletterEmail, blocks: list[Block]) -> bool:
        return "tldrnewsletter.com" in (email.list_id or "") or email.sender.endswith("tldrnewsletter.com")

    def is_title(self, block: Block, layout: Layout) -> bool:
        # Only the annotated linked titles: TLDR's bold lines ("Sign Up", the date banner) are not stories.
        return (
            not block.list_item
            and block.single_link is not None
            and len(block.text.split()) <= MAX_TITLE_WORDS
            and bool(_ANNOTATED_TITLE_RE.search(block.text))
        )
