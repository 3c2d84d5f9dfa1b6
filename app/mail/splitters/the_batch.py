"""The Batch (DeepLearning.AI): an untitled "Dear friends" letter, then news stories under
headings with "What's new / Why it matters / We're thinking" paragraphs, and "A message from
DeepLearning.AI" promotions. Only headings start stories: the bold lead-ins are paragraphs."""

from __future__ import annotations

from app.mail.blocks import Block
from app.mail.message import NewsletterEmail
from app.mail.splitters.base import MAX_TITLE_WORDS, SPONSOR_RE, Splitter


class TheBatchSplitter(Splitter):
    name = "the_batch"

    def matches(self, email: NewsletterEmail, blocks: list[Block]) -> bool:
        return email.sender.endswith("deeplearning.ai") or "the batch" in email.subject.lower()[:40]

    def is_title(self, block: Block) -> bool:
        if block.list_item or not block.text or len(block.text.split()) > MAX_TITLE_WORDS:
            return False
        return block.heading > 0 or (block.all_bold and bool(SPONSOR_RE.match(block.text)))
