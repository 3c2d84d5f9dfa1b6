"""Small newsletter e-mails built in code, for tests that need one e-mail with known stories
(the realistic corpus is tests/data/emails/)."""

from __future__ import annotations

from email.message import EmailMessage
from urllib.parse import quote


def tldr_link(url: str) -> str:
    """TLDR's CL0 tracking redirect around a target."""
    return f"https://tracking.tldrnewsletter.com/CL0/{quote(url, safe='')}/1/0100019a1b2c3d4e-000000/abc=427"


STORIES = [
    ("Headlines & Launches", "OpenAI and Broadcom team up on chips", "https://openai.com/index/broadcom",
     "OpenAI will design custom chips with Broadcom. Deployment starts in late 2026.", False),
    ("Headlines & Launches", "Automate SOC 2 with Vanta", "https://vanta.com/soc2",
     "Vanta gets you compliant in weeks, not months.", True),
    ("Deep Dives & Analysis", "FastLoRA trains adapters twice as fast (GitHub Repo)", "https://github.com/x/fastlora",
     "A LoRA trainer that fuses the adapter matmuls.", False),
]  # fmt: skip


def tldr_email(*, message_id: str | None = "<tldr-1@tldrnewsletter.com>", stories=STORIES) -> bytes:  # type: ignore[no-untyped-def]
    rows, section = [], None
    for story_section, headline, url, text, sponsored in stories:
        if story_section != section:
            section = story_section
            rows.append(f"<tr><td><h1>🚀 {section.replace('&', '&amp;')}</h1></td></tr>")
        suffix = "(Sponsor)" if sponsored else "(3 minute read)"
        link = tldr_link(url + "?utm_source=tldrai")
        rows.append(
            f'<tr><td><a href="{link}"><strong>{headline} {suffix}</strong></a>'
            f"<br><br><span>{text}</span></td></tr>"
        )
    html = (
        '<html><body><div style="display:none;max-height:0">Preheader text</div><table>'
        f'<tr><td><a href="{tldr_link("https://tldr.tech/ai")}">View Online</a></td></tr>'
        + "".join(rows)
        + '<tr><td>Love TLDR? Tell your friends!</td></tr><tr><td><a href="https://tldr.tech/u">Unsubscribe</a>'
        "</td></tr></table></body></html>"
    )
    message = EmailMessage()
    message["From"] = "TLDR AI <dan@tldrnewsletter.com>"
    message["To"] = "reader@example.com"
    message["Subject"] = "OpenAI x Broadcom, FastLoRA"
    message["Date"] = "Tue, 03 Mar 2026 10:00:00 +0000"
    if message_id:
        message["Message-ID"] = message_id
    message["List-Id"] = "TLDR AI <tldr-ai.tldrnewsletter.com>"
    message.set_content("The HTML version has the stories.")
    message.add_alternative(html, subtype="html")
    return bytes(message)


def numbered_tldr_email(number: int) -> bytes:
    """One of many distinct TLDR issues: its own Message-ID and two stories of its own."""
    stories = [
        ("Headlines & Launches", f"Lab {number} releases model {number}", f"https://example.com/{number}/model",
         f"Lab {number} released a model that scores {number} points higher on the benchmark.", False),
        ("Quick Links", f"Tool {number} goes open source", f"https://example.com/{number}/tool",
         f"The team behind tool {number} published its source code under Apache-2.0.", False),
    ]  # fmt: skip
    return tldr_email(message_id=f"<tldr-{number}@tldrnewsletter.com>", stories=stories)
