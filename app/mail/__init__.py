"""E-mail in: a raw message -> the newsletter in it -> one story per item (see each module)."""

from app.mail.message import EmailUnreadable, NewsletterEmail, parse_email
from app.mail.split import SplitEmail, split_email, story_item

__all__ = ["EmailUnreadable", "NewsletterEmail", "SplitEmail", "parse_email", "split_email", "story_item"]
