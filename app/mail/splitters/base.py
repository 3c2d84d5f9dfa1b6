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

import itertools
import re
import unicodedata
from dataclasses import dataclass, field

from app.mail.blocks import Block, Run, blocks_markdown
from app.mail.links import canonical_link
from app.mail.message import NewsletterEmail

MAX_TITLE_WORDS = 30

SPONSOR_RE = re.compile(
    r"^\W*(sponsor(ed)?\b|sponsored by|together with|presented by|brought to you by|a message from|"
    r"in partnership with|partner(ed)? (content|post|message)|advertisement\b|\(sponsor\)|"
    r"from our (partner|sponsor)s?\b|partenaire|sponsoris|publicit|anzeige|werbung|patrocinado|"
    r"publicidad|広告|スポンサー|提供)|\((sponsor|sponsored|ad)\)\s*$",
    re.I,
)
MAX_LABEL_WORDS = 6  # "PRESENTED BY LOOPWISE", "A MESSAGE FROM DEEPLEARNING.AI"
# Where the footer starts: nothing after it is a story.
FOOTER_RE = re.compile(
    r"^\W*(unsubscribe\b|you('re| are) receiving this|you received this|manage (your )?(subscription|"
    r"preferences|email)|update your (email )?preferences|no longer want to receive|©|"
    r"copyright (©|\(c\)|\d{4})|that[’']?s (all|it) for (today|this (week|issue))|"
    r"how (did you like|would you rate)|what did you think of (this|today)|"
    r"want to advertise|if you have any comments or feedback|you can unsubscribe|love \w+( \w+)?\?|"
    r"this email was sent to|sent to you because|forwarded this (email|newsletter)\? (sign|subscribe))",
    re.I,
)
# Lines that are a newsletter's furniture, not text: never a title, never kept in a story.
FURNITURE_RE = re.compile(
    r"^\W*(view (this email |it )?(in (your |a )?browser|online)|read (it )?online|read in (the )?app|"
    r"open in (browser|app)|share( this( post| email)?)?|forward to a friend|sign up|subscribe( now)?|"
    r"advertise( with us)?|like|comment|restack|listen|follow us|twitter|x|linkedin|facebook|instagram|"
    r"youtube|threads|tiktok|get the app|upgrade to paid|refer a friend|view in app|click to share|"
    r"share (this|the|our)?\s*\S+( \S+)?)\W*$",
    re.I,
)
READ_MORE_RE = re.compile(r"^\W*(read more|more|source|link|paper|read the (paper|post|story))\b", re.I)
_READING_TIME_RE = re.compile(r"\s*\(\s*\d+\s*(minute|min)s?\s*read\s*\)\s*$", re.I)
_SPONSOR_SUFFIX_RE = re.compile(r"\s*\((sponsor|sponsored|ad)\)\s*$", re.I)
_DATE_LINE_RE = re.compile(
    r"^\W*((jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.? \d{1,2},? \d{4}|"
    r"\d{1,2} (jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]* \d{4}|\d{4}-\d{2}-\d{2})\W*$",
    re.I,
)
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
    list_story: bool = False  # the title is a list item "[Title](url) - text": the whole story
    body: list[Block] = field(default_factory=list)


@dataclass(frozen=True)
class Layout:
    """What one e-mail's layout says about its titles."""

    # Its stories sit under headings (two or more headings over text): then a bold line is a
    # lead-in ("The details:", "Why it matters"), not a title - unless it is a linked title.
    heading_titles: bool = False


_EDGE_SYMBOLS = "•·-–—*#|>~"


def strip_symbols(text: str) -> str:
    """Emoji and bullets off both ends ("🍌 Nano Banana 2"), brackets and quotes kept ("【無料】")."""

    def symbol(char: str) -> bool:
        return char in _EDGE_SYMBOLS or unicodedata.category(char) in ("So", "Sk", "Zs", "Cf", "Mn", "Me")

    start, end = 0, len(text)
    while start < end and symbol(text[start]):
        start += 1
    while end > start and (symbol(text[end - 1]) and text[end - 1] not in "-*"):
        end -= 1
    return text[start:end]


def fold(text: str) -> str:
    return _SPACE_RE.sub(" ", text.translate(_QUOTES)).strip(" .:!?").casefold()


_QUOTES = str.maketrans({"’": "'", "‘": "'", "“": '"', "”": '"', "\u00a0": " "})
_MASTHEAD_BLOCKS = 20  # the title, subtitle and byline of a post sit in its first blocks


class Splitter:
    """The generic splitter: headings, bold lines and bold linked titles start stories."""

    name = "generic"

    def matches(self, email: NewsletterEmail, blocks: list[Block]) -> bool:
        return True

    # Decisions a family may change ----------------------------------------------------------

    def layout(self, blocks: list[Block]) -> Layout:
        over_text = sum(
            1
            for block, following in itertools.pairwise(blocks)
            if 1 <= block.heading <= 4 and not following.heading and not following.rule and following.text
        )
        return Layout(heading_titles=over_text >= 2)

    def is_title(self, block: Block, layout: Layout) -> bool:
        if block.rule or block.list_item or block.button or not block.text:
            return False
        if len(block.text.split()) > MAX_TITLE_WORDS or READ_MORE_RE.match(block.text):
            return False
        if block.heading:
            return True
        if not block.all_bold:
            return False
        if layout.heading_titles:
            return block.single_link is not None
        return not block.text.endswith(":")  # "The details:" introduces a list

    def is_list_story(self, block: Block) -> bool:
        """A list item that is a story of its own: it starts with a link that is bold, or that is
        followed by a dash or colon and a description (`[Title](url) - what it is`)."""
        if not block.list_item:
            return False
        first = next((run for run in block.runs if any(c.isalnum() for c in run.text)), None)
        if first is None or first.href is None:
            return False
        links = block.links
        linked = next((text for text, href in links if href == first.href and text), "")
        rest = block.text[block.text.find(linked) + len(linked) :].strip() if linked else ""
        return first.bold or rest[:1] in ("-", "–", "—", ":", "|")

    def is_footer(self, block: Block) -> bool:
        return bool(FOOTER_RE.match(block.text))

    def is_sponsor_label(self, block: Block) -> bool:
        """A short line that only says what follows is paid for ("PRESENTED BY LOOPWISE")."""
        return (
            not block.single_link
            and not block.list_item
            and len(block.text.split()) <= MAX_LABEL_WORDS
            and bool(SPONSOR_RE.match(block.text))
        )

    def clean_headline(self, text: str) -> str:
        text = _SPACE_RE.sub(" ", text).strip()
        text = _READING_TIME_RE.sub("", text)
        text = _SPONSOR_SUFFIX_RE.sub("", text)
        text = strip_symbols(text).strip()
        text = _ENUMERATION_RE.sub("", text)
        return text.strip().rstrip(":").strip()

    def is_sponsored(self, draft: _Draft) -> bool:
        # The first line counts only as a label ("Together with Vanta"), not as a sentence that
        # happens to start with "Sponsored".
        first = draft.body[0].text if draft.body else ""
        first_line = first if len(first.split()) <= MAX_LABEL_WORDS else ""
        return draft.sponsor_label or any(
            SPONSOR_RE.search(text) for text in (draft.title.text, draft.section or "", first_line) if text
        )

    # The walk --------------------------------------------------------------------------------

    def content_blocks(self, email: NewsletterEmail, blocks: list[Block]) -> list[Block]:
        """The blocks that can hold stories: no furniture, no masthead, nothing from the footer on."""
        kept = [b for b in blocks if b.rule or not FURNITURE_RE.match(b.text)]
        end = next((i for i, block in enumerate(kept) if self.is_footer(block)), len(kept))
        return drop_masthead(kept[:end], email.subject)

    def split(self, email: NewsletterEmail, blocks: list[Block]) -> list[Story]:
        kept = self.content_blocks(email, blocks)
        layout = self.layout(kept)
        list_stories = [self.is_list_story(block) for block in kept]
        titles = [self.is_title(block, layout) or list_stories[i] for i, block in enumerate(kept)]
        drafts: list[_Draft] = []
        section: str | None = None
        sponsor_label = False
        current: _Draft | None = None
        for index, block in enumerate(kept):
            if block.rule:
                current = None
                continue
            following = self._next(kept, index)
            if self.is_sponsor_label(block) and following is not None and titles[following]:
                sponsor_label, current = True, None  # labels the story under it, not the section
                continue
            if self._is_section(kept, titles, index):
                section, sponsor_label, current = self.clean_headline(block.text) or section, False, None
                continue
            if titles[index] or self.is_sponsor_label(block):
                current = _Draft(block, section, sponsor_label, list_stories[index])
                sponsor_label = False
                drafts.append(current)
                if current.list_story:
                    current = None  # a list story is one line; the next line is not its text
                continue
            if current is not None and (block.links or any(c.isalnum() for c in block.text)):
                current.body.append(block)  # not a decoration (an emoji or a divider glyph alone)
        return [self._story(draft, position) for position, draft in enumerate(drafts)]

    def is_section_heading(self, block: Block) -> bool:
        """Could head a section: a heading or a bold line that is no link and no list item."""
        return (
            (block.heading > 0 or block.all_bold)
            and not block.single_link
            and not block.list_item
            and not block.button
            and len(block.text.split()) <= MAX_TITLE_WORDS
        )

    @staticmethod
    def _next(blocks: list[Block], index: int) -> int | None:
        """The next block with text (dividers and linked images skipped)."""
        return next((i for i in range(index + 1, len(blocks)) if blocks[i].text), None)

    def _is_section(self, blocks: list[Block], titles: list[bool], index: int) -> bool:
        if not self.is_section_heading(blocks[index]):
            return False
        following = self._next(blocks, index)
        # A sponsor label between a section heading and its first story ("Tools", "PARTNER", title).
        if following is not None and self.is_sponsor_label(blocks[following]):
            following = self._next(blocks, following)
        return following is not None and titles[following]

    def _story(self, draft: _Draft, position: int) -> Story:
        title = draft.title
        headline = title.text
        body = list(draft.body)
        if draft.list_story:  # "**[Title](url)** - what it is": the link text is the headline
            first = next(run for run in title.runs if any(c.isalnum() for c in run.text))
            headline = next(text for text, href in title.links if href == first.href and text)
            rest = title.text[title.text.find(headline) + len(headline) :].lstrip(" -–—:|")
            body = [Block(runs=[Run(rest)])] if rest else []
            title = Block(runs=[run for run in title.runs if run.href == first.href])
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


def masthead_link(blocks: list[Block], subject: str) -> str | None:
    """The link of the post's own title (a single-story e-mail's link to its web version)."""
    subject_key = fold(subject)
    for block in blocks[:_MASTHEAD_BLOCKS]:
        if block.links and (block.heading or block.all_bold) and fold(block.text) == subject_key:
            return canonical_link(block.links[0][1])
    return None


def drop_masthead(blocks: list[Block], subject: str) -> list[Block]:
    """Without a post's own title (the e-mail's subject, above any text), the subtitle under it,
    and the byline (an author's name over a date line): they head the e-mail, not a story. A
    subject that repeats the lead story's headline further down (a digest's usual subject) is no
    masthead: the title must come before the first paragraph."""
    subject_key = fold(subject)
    dropped: set[int] = set()
    text_seen = False
    for index in range(min(len(blocks), _MASTHEAD_BLOCKS)):
        block = blocks[index]
        key = fold(block.text)
        is_title = bool(key) and len(key.split()) >= 3 and (block.heading > 0 or block.all_bold)
        if not text_seen and is_title and (key == subject_key or (len(key) > 20 and key in subject_key)):
            dropped.add(index)
            following = index + 1
            if following < len(blocks) and blocks[following].heading > block.heading > 0:
                dropped.add(following)  # the subtitle
        elif _DATE_LINE_RE.match(block.text):
            dropped.add(index)
            if index and len(blocks[index - 1].text.split()) <= 4:
                dropped.add(index - 1)  # the byline above the date
        elif len(block.text.split()) >= 15:
            text_seen = True
    return [block for index, block in enumerate(blocks) if index not in dropped]


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
