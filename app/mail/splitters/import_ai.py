"""Import AI (Jack Clark, on Substack): bold title lines ending in a colon, a few paragraphs, a
"Read more:" line, dividers between stories; "Tech Tales" fiction at the end under its own title."""

from __future__ import annotations

from app.mail.blocks import Block
from app.mail.message import NewsletterEmail
from app.mail.splitters.base import MAX_TITLE_WORDS, READ_MORE_RE, Layout, Splitter


class ImportAiSplitter(Splitter):
    name = "import_ai"

    def matches(self, email: NewsletterEmail, blocks: list[Block]) -> bool:
        return (
            "importai" in (email.list_id or "")
            or email.sender.startswith("importai@")
            or (email.subject.lower().startswith("import ai"))
        )

    def is_title(self, block: Block, layout: Layout) -> bool:
        # Its titles are bold lines that end in a colon; its body has no headings to go by.
        if block.rule or block.list_item or block.button or not block.text:
            return False
        if len(block.text.split()) > MAX_TITLE_WORDS or READ_MORE_RE.match(block.text):
            return False
        return block.heading > 0 or block.all_bold
