"""The Batch (DeepLearning.AI): an untitled "Dear friends" letter, then news stories under
headings with "What's new / Why it matters / We're thinking" paragraphs, and "A message from
DeepLearning.AI" promotions (a label over a linked title). Headings and linked titles start
stories: the bold lead-ins are paragraphs. The job board ("Work With Andrew Ng") starts the footer."""

from __future__ import annotations

import re

from app.mail.blocks import Block
from app.mail.message import NewsletterEmail
from app.mail.splitters.base import MAX_TITLE_WORDS, Layout, Splitter

_JOB_BOARD_RE = re.compile(r"^\W*work with andrew ng\W*$", re.I)


class TheBatchSplitter(Splitter):
    name = "the_batch"

    def matches(self, email: NewsletterEmail, blocks: list[Block]) -> bool:
        return email.sender.endswith("deeplearning.ai") or "the batch" in email.subject.lower()[:40]

    def is_title(self, block: Block, layout: Layout) -> bool:
        if block.list_item or block.button or not block.text or len(block.text.split()) > MAX_TITLE_WORDS:
            return False
        return block.heading > 0 or (block.all_bold and block.single_link is not None)

    def is_footer(self, block: Block) -> bool:
        return super().is_footer(block) or bool(_JOB_BOARD_RE.match(block.text))
