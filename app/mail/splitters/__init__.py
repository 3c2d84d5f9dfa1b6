"""One splitter per newsletter family, chosen by List-Id, sender and layout; the generic splitter
(headings, bold lines and bold linked titles as story boundaries: Substack, beehiiv and most
hand-made layouts) when none claims the e-mail."""

from __future__ import annotations

from app.mail.blocks import Block
from app.mail.message import NewsletterEmail
from app.mail.splitters.base import Splitter, Story
from app.mail.splitters.bens_bites import BensBitesSplitter
from app.mail.splitters.import_ai import ImportAiSplitter
from app.mail.splitters.the_batch import TheBatchSplitter
from app.mail.splitters.tldr import TldrSplitter

FAMILIES: tuple[Splitter, ...] = (TldrSplitter(), ImportAiSplitter(), TheBatchSplitter(), BensBitesSplitter())
GENERIC = Splitter()


def choose_splitter(email: NewsletterEmail, blocks: list[Block]) -> Splitter:
    return next((family for family in FAMILIES if family.matches(email, blocks)), GENERIC)


__all__ = ["FAMILIES", "GENERIC", "Splitter", "Story", "choose_splitter"]
