"""TLDR-shaped newsletter e-mails built in code: the tests' known-story e-mails and the 100 KB
e-mail that bench/split_corpus.py times."""

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


# What a real newsletter's table cells carry: inline styles make up most of their bytes.
CELL_STYLE = (
    ' style="font-family:Helvetica,Arial,sans-serif;font-size:16px;line-height:24px;color:#333333;'
    'padding:0 0 12px 0;text-align:left;word-break:break-word;mso-line-height-rule:exactly"'
)


def tldr_email(  # type: ignore[no-untyped-def]
    *, message_id: str | None = "<tldr-1@tldrnewsletter.com>", stories=STORIES, cell_style: str = ""
) -> bytes:
    rows, section = [], None
    for story_section, headline, url, text, sponsored in stories:
        if story_section != section:
            section = story_section
            rows.append(f"<tr><td><h1>🚀 {section.replace('&', '&amp;')}</h1></td></tr>")
        suffix = "(Sponsor)" if sponsored else "(3 minute read)"
        link = tldr_link(url + "?utm_source=tldrai")
        rows.append(
            f'<tr><td{cell_style}><a href="{link}"{cell_style}><strong>{headline} {suffix}</strong></a>'
            f"<br><br><span{cell_style}>{text}</span></td></tr>"
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
