"""What every splitter shares: blocks in, stories out.

A splitter walks a newsletter's blocks (app.mail.blocks) once. A *title* block starts a story and
the blocks after it, up to the next title, a divider or the footer, are its text. A title-looking
block (heading or bold line, not a link) followed directly by another title is a *section*
heading. A story is *sponsored* when its headline, its section or its first line says so
("Sponsor", "Together with", "Presented by", "A message from", ...); a sponsor heading labels only
the story under it, not the rest of its section. A family splitter (one per newsletter family)
changes only what differs: which blocks are titles, where its footer starts, how its headlines
are written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from app.mail.blocks import Block, blocks_markdown
from app.mail.links import canonical_link
from app.mail.message import NewsletterEmail

MAX_TITLE_WORDS = 30

SPONSOR_RE = re.compile(
    r"^\W*(sponsor(ed)?\b|sponsored by|together with|presented by|brought to you by|a message from|"
    r"in partnership with|partner(ed)? (content|post|message)|advertisement\b|\(sponsor\))|"
    r"\((sponsor|sponsored|ad)\)\s*$",
    re.I,
)
# Where the footer starts: nothing after it is a story.
FOOTER_RE = re.compile(
    r"^\W*(unsubscribe\b|you('re| are) receiving this|you received this|manage (your )?(subscription|"
    r"preferences|email)|update your (email )?preferences|no longer want to receive|©|copyright\b|"
    r"want to advertise|if you have any comments or feedback|you can unsubscribe|love \w+( \w+)?\?|"
    r"this email was sent to|sent to you because|forwarded this (email|newsletter)\? (sign|subscribe))",
    re.I,
)
# Lines that are a newsletter's furniture, not text: never a title, never kept in a story.
FURNITURE_RE = re.compile(
    r"^\W*(view (this email |it )?(in (your |a )?browser|online)|read (it )?online|read in (the )?app|"
    r"open in (browser|app)|share( this( post| email)?)?|forward to a friend|sign up|subscribe( now)?|"
    r"advertise( with us)?|like|comment|restack|listen|follow us|twitter|x|linkedin|facebook|instagram|"
    r"youtube|threads|tiktok|get the app|upgrade to paid|refer a friend|view in app)\W*$",
    re.I,
)
READ_MORE_RE = re.compile(r"^\W*(read more|more|source|link|paper|read the (paper|post|story))\b", re.I)
_READING_TIME_RE = re.compile(r"\s*\(\s*\d+\s*(minute|min)s?\s*read\s*\)\s*$", re.I)
_SPONSOR_SUFFIX_RE = re.compile(r"\s*\((sponsor|sponsored|ad)\)\s*$", re.I)
_LEADING_SYMBOLS_RE = re.compile(r"^[^\w\"'“‘(\[$€£]+", re.UNICODE)
_ENUMERATION_RE = re.compile(r"^(\d{1,2}|[IVX]{1,4})[.)]\s+")
_SPACE_RE = re.compile(r"\s+")


@dataclass(frozen=True)
class Story:
    headline: str
    url: str | None
    section: str | None
    position: int  # 0-based, in the e-mail's reading order (sponsored stories counted)
    sponsored: bool
    markdown: str  # the story's text, Markdown, links kept (canonical)
    links: list[str] = field(default_factory=list)


@dataclass
class _Draft:
    title: Block
    section: str | None
    sponsor_label: bool
    body: list[Block] = field(default_factory=list)


class Splitter:
    """The generic splitter: headings, bold lines and bold linked titles start stories."""

    name = "generic"

    def matches(self, email: NewsletterEmail, blocks: list[Block]) -> bool:
        return True

    # Decisions a family may change ----------------------------------------------------------

    def is_title(self, block: Block) -> bool:
        if block.rule or block.list_item or not block.text:
            return False
        if len(block.text.split()) > MAX_TITLE_WORDS or READ_MORE_RE.match(block.text):
            return False
        return block.heading > 0 or block.all_bold

    def is_list_story(self, block: Block) -> bool:
        """A list item that is a story of its own: it starts with a bold link (`**[Title](url)** - text`)."""
        if not block.list_item:
            return False
        first = next((run for run in block.runs if run.text.strip()), None)
        return first is not None and first.href is not None and first.bold

    def is_footer(self, block: Block) -> bool:
        return bool(FOOTER_RE.match(block.text))

    def clean_headline(self, text: str) -> str:
        text = _SPACE_RE.sub(" ", text).strip()
        text = _READING_TIME_RE.sub("", text)
        text = _SPONSOR_SUFFIX_RE.sub("", text)
        text = _LEADING_SYMBOLS_RE.sub("", text)
        text = _ENUMERATION_RE.sub("", text)
        return text.strip().rstrip(":").strip()

    def is_sponsored(self, draft: _Draft) -> bool:
        first_line = draft.body[0].text if draft.body else ""
        return draft.sponsor_label or any(
            SPONSOR_RE.search(text) for text in (draft.title.text, draft.section or "", first_line) if text
        )

    # The walk --------------------------------------------------------------------------------

    def split(self, email: NewsletterEmail, blocks: list[Block]) -> list[Story]:
        kept = [b for b in blocks if b.rule or not FURNITURE_RE.match(b.text)]
        end = next((i for i, block in enumerate(kept) if self.is_footer(block)), len(kept))
        kept = kept[:end]
        titles = [self.is_title(block) or self.is_list_story(block) for block in kept]
        drafts: list[_Draft] = []
        section: str | None = None
        sponsor_label = False
        current: _Draft | None = None
        for index, block in enumerate(kept):
            if block.rule:
                current = None
                continue
            if self._is_section(kept, titles, index):
                if SPONSOR_RE.search(block.text):
                    sponsor_label = True
                else:
                    section, sponsor_label = self.clean_headline(block.text) or section, False
                current = None
                continue
            if titles[index]:
                current = _Draft(block, section, sponsor_label)
                sponsor_label = False
                drafts.append(current)
                if self.is_list_story(block):
                    current = None  # a list story is one line; the next line is not its text
                continue
            if current is not None:
                current.body.append(block)
        return [self._story(draft, position) for position, draft in enumerate(drafts)]

    def is_section_heading(self, block: Block) -> bool:
        """Could head a section: a heading or a bold line that is no link and no list item."""
        return (
            (block.heading > 0 or block.all_bold)
            and not block.single_link
            and not block.list_item
            and len(block.text.split()) <= MAX_TITLE_WORDS
        )

    def _is_section(self, blocks: list[Block], titles: list[bool], index: int) -> bool:
        if not self.is_section_heading(blocks[index]):
            return False
        following = next((i for i in range(index + 1, len(blocks)) if not blocks[i].rule), None)
        return following is not None and titles[following]

    def _story(self, draft: _Draft, position: int) -> Story:
        title = draft.title
        headline = title.text
        body = list(draft.body)
        if self.is_list_story(title):  # "**[Title](url)** - what it is": the link text is the headline
            headline = title.links[0][0]
            rest = title.text[title.text.find(headline) + len(headline) :].lstrip(" -–—:|")
            body = [Block(runs=[run for run in title.runs if run.href != title.links[0][1]])] if rest else []
        links = [canonical_link(href) for block in [title, *body] for _, href in block.links]
        return Story(
            headline=self.clean_headline(headline),
            url=self._url(title, body),
            section=draft.section,
            position=position,
            sponsored=self.is_sponsored(draft),
            markdown=canonical_markdown(body) or self.clean_headline(headline),
            links=list(dict.fromkeys(links)),
        )

    def _url(self, title: Block, body: list[Block]) -> str | None:
        title_links = title.links
        if title_links:
            return canonical_link(title_links[0][1])
        for block in body:
            if READ_MORE_RE.match(block.text) and block.links:
                return canonical_link(block.links[0][1])
        for block in body:
            if block.links:
                return canonical_link(block.links[0][1])
        return None


def canonical_markdown(blocks: list[Block]) -> str:
    """The blocks as Markdown with every link replaced by its canonical form."""
    cleaned = [
        Block(
            runs=[type(run)(run.text, canonical_link(run.href) if run.href else None, run.bold, run.italic)
                  for run in block.runs],
            heading=block.heading,
            list_item=block.list_item,
        )
        for block in blocks
    ]  # fmt: skip
    return blocks_markdown(cleaned)
