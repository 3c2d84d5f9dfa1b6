"""A parsed e-mail -> its stories, and a story -> the item the enhancer takes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import ValidationError

from app.contract import EnhanceItem
from app.contract.request import MAX_CONTENT_CHARS
from app.mail.blocks import Block, blocks_markdown, html_blocks, text_blocks
from app.mail.forwarded import unwrap_inline_forward
from app.mail.message import NewsletterEmail
from app.mail.splitters import GENERIC, Story, choose_splitter
from app.mail.splitters.base import canonical_markdown, masthead_link

MAX_LINKS = 500


@dataclass(frozen=True)
class SplitEmail:
    email: NewsletterEmail  # the newsletter's own headers when it was forwarded inline
    splitter: str
    stories: list[Story]


def body_blocks(email: NewsletterEmail) -> list[Block]:
    """HTML preferred (it carries the structure); the plain-text part when the HTML has no text."""
    blocks = html_blocks(email.html) if email.html else []
    if not blocks and email.text:
        blocks = text_blocks(email.text)
    return blocks


def split_email(email: NewsletterEmail) -> SplitEmail:
    email, blocks = unwrap_inline_forward(email, body_blocks(email))
    splitter = choose_splitter(email, blocks)
    stories = splitter.split(email, blocks)
    if not stories and splitter is not GENERIC:
        splitter, stories = GENERIC, GENERIC.split(email, blocks)
    if not stories:  # a single-story e-mail (an essay, an announcement): the whole text is the story
        text = canonical_markdown(blocks) or blocks_markdown(blocks)
        url = masthead_link(blocks, email.subject)
        stories = [Story(headline=email.subject or "(no subject)", url=url, section=None, position=0,
                         sponsored=False, markdown=text or email.subject, links=[])]  # fmt: skip
        return SplitEmail(email, "whole", stories)
    return SplitEmail(email, splitter.name, stories)


def newsletter_name(email: NewsletterEmail) -> str:
    return (email.sender_name or email.list_id or email.sender or "e-mail")[:200]


def story_item(split: SplitEmail, story: Story, *, received: datetime | None = None) -> EnhanceItem:
    """The enhancer's input for one story: its headline as the subject, its Markdown as the content."""
    email = split.email
    fields = {
        "source": newsletter_name(email),
        "subject": story.headline[:1000],
        "from": email.sender[:500],
        "date": email.date or received or datetime.now(UTC),
        "message_id": email.item_message_id[:500],
        "content": (story.markdown or story.headline or "(empty)")[:MAX_CONTENT_CHARS],
        "links": [link[:4000] for link in story.links[:MAX_LINKS]],
        "has_html": False,
    }
    try:
        return EnhanceItem.model_validate({**fields, "url": story.url})
    except ValidationError:  # a link the contract refuses (not http(s), no host): the item without it
        return EnhanceItem.model_validate(fields)
