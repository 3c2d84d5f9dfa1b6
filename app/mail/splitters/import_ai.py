"""Import AI (Jack Clark, on Substack): bold title lines ending in a colon, a few paragraphs, a
"Read more:" line, dividers between stories; "Tech Tales" fiction at the end under its own title."""

from __future__ import annotations

from app.mail.blocks import Block
from app.mail.message import NewsletterEmail
from app.mail.splitters.base import Splitter


class ImportAiSplitter(Splitter):
    name = "import_ai"

    def matches(self, email: NewsletterEmail, blocks: list[Block]) -> bool:
        return (
            "importai" in (email.list_id or "")
            or email.sender.startswith("importai@")
            or (email.subject.lower().startswith("import ai"))
        )
