"""Small newsletter e-mails built in code, for tests that need e-mails with known stories (the
realistic corpus is tests/data/emails/). The builder is bench/tldr_email.py's."""

from __future__ import annotations

from bench.tldr_email import CELL_STYLE, STORIES, tldr_email, tldr_link

__all__ = ["CELL_STYLE", "STORIES", "numbered_tldr_email", "tldr_email", "tldr_link"]


def numbered_tldr_email(number: int) -> bytes:
    """One of many distinct TLDR issues: its own Message-ID and two stories of its own."""
    stories = [
        ("Headlines & Launches", f"Lab {number} releases model {number}", f"https://example.com/{number}/model",
         f"Lab {number} released a model that scores {number} points higher on the benchmark.", False),
        ("Quick Links", f"Tool {number} goes open source", f"https://example.com/{number}/tool",
         f"The team behind tool {number} published its source code under Apache-2.0.", False),
    ]  # fmt: skip
    return tldr_email(message_id=f"<tldr-{number}@tldrnewsletter.com>", stories=stories)
