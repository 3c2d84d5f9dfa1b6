"""A newsletter body as a list of blocks (a heading, a paragraph, a line, a list item, a divider),
each a list of text runs that know their link and emphasis; and a block as Markdown.

Splitting works on these blocks, whatever the e-mail's layout: HTML and plain text both become
blocks, so every splitter is written once against one model.

HTML is parsed with selectolax (its lexbor engine): newsletters are 50-150 KB of nested layout
tables, and lexbor builds the tree about a hundred times faster than BeautifulSoup with
html.parser (0.9 ms against 73 ms for a 72 KB TLDR-like page here), which is what lets parse +
split keep well above 50 e-mails a second on two cores. We need only a small Markdown subset
(headings, paragraphs, lists, links, bold, italics), so the blocks render themselves instead of
going through markdownify, whose table rendering would turn layout tables into Markdown tables.
The walk is iterative: a hostile page nested 100,000 levels deep costs time, not the stack.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

from selectolax.lexbor import LexborHTMLParser, LexborNode

from app.contract.derived import URL_RE

_SKIP_TAGS = frozenset(
    {"head", "title", "script", "style", "noscript", "template", "svg", "img", "picture", "video",
     "audio", "iframe", "object", "form", "input", "button", "select", "textarea", "map", "-comment"}
)  # fmt: skip
_BLOCK_TAGS = frozenset(
    {"p", "div", "td", "th", "tr", "table", "tbody", "thead", "tfoot", "ul", "ol", "li", "blockquote",
     "section", "article", "header", "footer", "main", "aside", "center", "h1", "h2", "h3", "h4", "h5",
     "h6", "pre", "dl", "dt", "dd", "figure", "figcaption", "body", "html", "hr", "br", "nav"}
)  # fmt: skip
_BOLD_TAGS = frozenset({"b", "strong"})
_ITALIC_TAGS = frozenset({"i", "em"})
_HIDDEN_STYLE_RE = re.compile(
    r"display\s*:\s*none|visibility\s*:\s*hidden|mso-hide\s*:\s*all|max-height\s*:\s*0(px)?\s*(;|$)", re.I
)
_BOLD_STYLE_RE = re.compile(r"font-weight\s*:\s*(bold|bolder|[6-9]00)", re.I)
_BUTTON_STYLE_RE = re.compile(r"background(-color)?\s*:[^;]*#|border-radius\s*:\s*[1-9]", re.I)
_SPACE_RE = re.compile(r"\s+")


@dataclass(frozen=True)
class Run:
    text: str
    href: str | None = None
    bold: bool = False
    italic: bool = False


@dataclass
class Block:
    runs: list[Run] = field(default_factory=list)
    heading: int = 0  # 1-6 for h1-h6 (or a plain-text heading), 0 otherwise
    list_item: bool = False
    rule: bool = False  # a divider: <hr>, *** or ---
    button: bool = False  # a call-to-action button (a link on a coloured, rounded box): never a title

    # Runs are fixed once a block is built: what is read from them is computed once.
    @cached_property
    def text(self) -> str:
        return _SPACE_RE.sub(" ", "".join(run.text for run in self.runs)).strip()

    @cached_property
    def links(self) -> list[tuple[str, str]]:
        """(text, href) of each link, consecutive runs of one link joined."""
        found: list[tuple[str, str]] = []
        last: Run | None = None
        for run in self.runs:
            previous, last = last, run
            if run.href is None:
                continue
            if found and found[-1][1] == run.href and previous is not None and previous.href == run.href:
                found[-1] = (found[-1][0] + run.text, run.href)
            else:
                found.append((run.text, run.href))
        return [(_SPACE_RE.sub(" ", text).strip(), href) for text, href in found]

    @property
    def all_bold(self) -> bool:
        """Every visible character is bold (a heading counts): a title line."""
        visible = [run for run in self.runs if run.text.strip()]
        return bool(visible) and (self.heading > 0 or all(run.bold for run in visible))

    @property
    def single_link(self) -> str | None:
        """The href when the whole block is one link, else None."""
        hrefs = {run.href for run in self.runs if run.text.strip()}
        if len(hrefs) == 1:
            (href,) = hrefs
            return href
        return None

    @property
    def markdown(self) -> str:
        parts: list[str] = []
        index = 0
        runs = [run for run in self.runs if run.text]  # linked images have no text: not in Markdown
        while index < len(runs):
            run = runs[index]
            if run.href is None:
                parts.append(_emphasis(run))
                index += 1
                continue
            group = [run]
            while index + len(group) < len(runs) and runs[index + len(group)].href == run.href:
                group.append(runs[index + len(group)])
            inner = "".join(_emphasis(r) for r in group)
            lead, body, trail = _split_space(inner)
            parts.append(f"{lead}[{body}]({run.href}){trail}" if body else inner)
            index += len(group)
        line = _SPACE_RE.sub(" ", "".join(parts)).strip()
        if self.heading:
            return "#" * min(self.heading, 6) + " " + line
        return f"- {line}" if self.list_item else line


def _split_space(text: str) -> tuple[str, str, str]:
    stripped = text.strip()
    if not stripped:
        return text, "", ""
    start = text.index(stripped[0])
    return text[:start], stripped, text[start + len(stripped) :]


def _emphasis(run: Run) -> str:
    lead, body, trail = _split_space(run.text)
    if not body:
        return run.text
    marker = "**" if run.bold else ""
    if run.italic:
        marker += "*"
    return f"{lead}{marker}{body}{marker[::-1]}{trail}" if marker else run.text


def blocks_markdown(blocks: list[Block]) -> str:
    return "\n\n".join(line for line in (block.markdown for block in blocks) if line)


# HTML -------------------------------------------------------------------------------------------


@dataclass
class _State:
    bold: int = 0
    italic: int = 0
    heading: int = 0
    list_item: int = 0
    button: int = 0
    hrefs: list[str | None] = field(default_factory=list)


@dataclass(frozen=True)
class _Style:
    hidden: bool
    bold: bool
    button: bool  # coloured and rounded: a button if it holds only a few words


@lru_cache(maxsize=4096)  # a newsletter repeats a handful of inline styles on hundreds of elements
def _style(style: str) -> _Style:
    return _Style(
        hidden=bool(_HIDDEN_STYLE_RE.search(style)),
        bold=bool(_BOLD_STYLE_RE.search(style)),
        button=len(_BUTTON_STYLE_RE.findall(style)) >= 2,
    )


_PLAIN = _Style(False, False, False)


def _style_of(node: LexborNode) -> _Style:
    style = node.attributes.get("style")
    return _style(style) if style else _PLAIN


def _hidden(node: LexborNode) -> bool:
    attributes = node.attributes
    if "hidden" in attributes or (attributes.get("aria-hidden") == "true" and node.tag != "a"):
        return True
    return _style_of(node).hidden


def html_blocks(html: str) -> list[Block]:
    """The blocks of an HTML body, in reading order; hidden preheaders and images left out."""
    tree = LexborHTMLParser(html)
    root = tree.body or tree.root
    if root is None:
        return []
    blocks: list[Block] = []
    state = _State()
    current: list[Run] = []

    def flush() -> None:
        # A block with text, or a linked image alone (its link can be the story's link).
        if any(run.text.strip() or run.href for run in current):
            blocks.append(
                Block(runs=list(current), heading=state.heading, list_item=state.list_item > 0,
                      button=state.button > 0)
            )  # fmt: skip
        current.clear()

    # (node, entering): an explicit stack instead of recursion.
    stack: list[tuple[LexborNode, bool]] = [(root, True)]
    while stack:
        node, entering = stack.pop()
        tag = node.tag
        if tag == "-text":
            text = node.text(deep=False)
            if text:
                href = next((h for h in reversed(state.hrefs) if h is not None), None)
                current.append(Run(text, href, state.bold > 0, state.italic > 0))
            continue
        if entering:
            if tag == "img" and state.hrefs and state.hrefs[-1]:
                current.append(Run("", state.hrefs[-1]))  # a linked image: a link without text
                continue
            if tag in _SKIP_TAGS or _hidden(node):
                continue
            if tag == "hr":
                flush()
                blocks.append(Block(rule=True))
                continue
            if tag == "br":
                flush()
                continue
            if tag in _BLOCK_TAGS:
                flush()
            _enter(node, state)
            stack.append((node, False))
            stack.extend((child, True) for child in reversed(list(node.iter(include_text=True))))
        else:
            if tag in _BLOCK_TAGS:
                flush()
            _leave(node, state)
    flush()
    return blocks


def _style_bold(node: LexborNode) -> bool:
    return _style_of(node).bold


_BUTTON_WORDS = 6


def _is_button(node: LexborNode) -> bool:
    """A few words on a coloured, rounded box: a call to action, not a promo box with a title in it."""
    styled = _style_of(node).button or "button" in (node.attributes.get("class") or "")
    return styled and len((node.text(deep=True) or "").split()) <= _BUTTON_WORDS


def _enter(node: LexborNode, state: _State) -> None:
    tag = node.tag or ""
    if tag in ("td", "a", "div", "span") and _is_button(node):
        state.button += 1
    if tag in _BOLD_TAGS or _style_bold(node):
        state.bold += 1
    if tag in _ITALIC_TAGS:
        state.italic += 1
    if len(tag) == 2 and tag[0] == "h" and tag[1] in "123456":
        state.heading = int(tag[1])
    if tag == "li":
        state.list_item += 1
    if tag == "a":
        href = (node.attributes.get("href") or "").strip()
        state.hrefs.append(href if href.lower().startswith(("http://", "https://")) else None)


def _leave(node: LexborNode, state: _State) -> None:
    tag = node.tag or ""
    if tag in ("td", "a", "div", "span") and _is_button(node):
        state.button -= 1
    if tag in _BOLD_TAGS or _style_bold(node):
        state.bold -= 1
    if tag in _ITALIC_TAGS:
        state.italic -= 1
    if len(tag) == 2 and tag[0] == "h" and tag[1] in "123456":
        state.heading = 0
    if tag == "li":
        state.list_item -= 1
    if tag == "a" and state.hrefs:
        state.hrefs.pop()


# Plain text -------------------------------------------------------------------------------------

_RULE_RE = re.compile(r"^\s*([-*_=~])(\s*\1){2,}\s*$")
_UNDERLINE_RE = re.compile(r"^\s*([=-])\1{2,}\s*$")
_NUMBERED_RE = re.compile(r"^\s*(\d{1,2}|[IVX]{1,4})[.)]\s+\S")
_MD_HEADING_RE = re.compile(r"^\s*(#{1,6})\s+(.+?)\s*#*\s*$")
_MD_BOLD_RE = re.compile(r"^\s*\*\*(.+?)\*\*:?\s*$")
_REFERENCE_RE = re.compile(r"^\s*\[(\d{1,4})\]\s*(https?://\S+)\s*$")
_MD_LINK_RE = re.compile(r"\[([^\]\n]{1,300})\]\((https?://[^)\s]+)\)")
_BULLET_RE = re.compile(r"^\s*[-*•·]\s+")
# A Markdown link, a bare URL, or an `[N]` reference to the list at the end.
_LINK_OR_REFERENCE_RE = re.compile(rf"{_MD_LINK_RE.pattern}|{URL_RE.pattern}|\[(\d{{1,4}})\]", re.I)


def _text_runs(line: str, references: dict[str, str], bold: bool = False) -> list[Run]:
    """A text line's runs: Markdown links, bare URLs and `[N]` references become links."""
    runs: list[Run] = []
    position = 0
    for match in _LINK_OR_REFERENCE_RE.finditer(line):
        label, target, reference = match.group(1), match.group(2), match.group(3)
        if reference is not None and reference not in references:
            continue
        before = line[position : match.start()]
        if reference is not None:  # "Title [3]" -> the title is the link, as the HTML shows it
            if before.strip():
                runs.append(Run(before, references[reference], bold))
            position = match.end()
            continue
        if before:
            runs.append(Run(before, None, bold))
        if label is not None:
            runs.append(Run(label, target, bold))
        else:
            url = match.group(0).rstrip(".,;:!?")
            runs.append(Run(url, url, bold))
            position = match.start() + len(url)
            continue
        position = match.end()
    if position < len(line):
        runs.append(Run(line[position:], None, bold))
    return runs


def _underlines(line: str, next_line: str) -> bool:
    """`next_line` is a ==== or ---- underline of `line` (about as long), not a divider after a URL."""
    text = line.strip()
    return (
        bool(_UNDERLINE_RE.match(next_line))
        and not URL_RE.search(text)
        and len(text) * 0.5 <= len(next_line.strip()) <= len(text) * 2 + 2
    )


def _title_line(lines: list[str]) -> bool:
    """A paragraph's first line that is a title over its text: short, unpunctuated, clearly shorter
    than the wrapped lines under it."""
    if len(lines) < 2:
        return False
    first = lines[0].strip()
    longest = max(len(line.strip()) for line in lines[1:])
    return (
        2 <= len(first.split()) <= 15
        and not first.endswith((".", ",", ";", ":", "!", "?", ">", ")"))
        and not URL_RE.search(first)
        and first[:1].isupper()
        and len(first) < 0.8 * longest
        and longest >= 50
    )


def _plain_heading(line: str, next_line: str | None, paragraph_len: int) -> int:
    """A plain-text line that reads as a heading: its level (2 or 3), else 0."""
    if _MD_HEADING_RE.match(line):
        return len(_MD_HEADING_RE.match(line).group(1))  # type: ignore[union-attr]
    if next_line is not None and _underlines(line, next_line):
        return 2 if next_line.strip()[0] == "=" else 3
    stripped = line.strip()
    words = stripped.split()
    if _MD_BOLD_RE.match(line) and len(words) <= 25:
        return 3
    if not 1 <= len(words) <= 20 or (stripped.endswith((".", ",", ";")) and not _NUMBERED_RE.match(line)):
        return 0
    letters = [c for c in stripped if c.isalpha()]
    if len(letters) >= 3 and all(c.isupper() for c in letters):
        return 2
    if _NUMBERED_RE.match(line) and paragraph_len > 1:
        return 3
    return 0


def text_blocks(text: str) -> list[Block]:
    """Blocks of a plain-text body: paragraphs, with heading lines (Markdown #, **bold**, ALL CAPS,
    underlined, numbered titles above their text) and dividers split off; `[N]` link references
    resolved from the reference list that such e-mails end with."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    references = {}
    for line in lines:
        match = _REFERENCE_RE.match(line)
        if match:
            references[match.group(1)] = match.group(2)
    blocks: list[Block] = []
    paragraph: list[str] = []

    def flush() -> None:
        body = [line for line in paragraph if not _REFERENCE_RE.match(line)]
        paragraph.clear()
        index = 0
        while index < len(body):
            line = body[index]
            following = body[index + 1] if index + 1 < len(body) else None
            if _RULE_RE.match(line) and not (index and _underlines(body[index - 1], line)):
                blocks.append(Block(rule=True))
                index += 1
                continue
            level = _plain_heading(line, following, len(body) - index)
            if level:
                title = _MD_HEADING_RE.sub(r"\2", line)
                bold = _MD_BOLD_RE.match(title)
                runs = _text_runs(bold.group(1) if bold else title, references, True)
                blocks.append(Block(runs=runs, heading=level))
                index += 2 if following is not None and _underlines(line, following) else 1
                continue
            if index == 0 and _title_line(body):
                blocks.append(Block(runs=_text_runs(line, references, True), heading=3))
                index += 1
                continue
            if _BULLET_RE.match(line):
                blocks.append(Block(runs=_text_runs(_BULLET_RE.sub("", line), references), list_item=True))
                index += 1
                continue
            rest: list[str] = []
            while (
                index < len(body)
                and not _BULLET_RE.match(body[index])
                and not (rest and _plain_heading(body[index], None, 2))
            ):
                rest.append(body[index].strip())
                index += 1
            if rest:
                blocks.append(Block(runs=_text_runs(" ".join(rest), references)))

    for line in lines:
        if line.strip():
            paragraph.append(line)
        else:
            flush()
    flush()
    return blocks


def iter_links(blocks: list[Block]) -> Iterator[tuple[str, str]]:
    for block in blocks:
        yield from block.links
