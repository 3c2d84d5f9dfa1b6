"""A newsletter link -> the story's canonical link.

Tracking redirects that carry their target are unwrapped: TLDR's
`tracking.tldrnewsletter.com/CL0/<percent-encoded URL>/1/...` (the form several senders on the same
e-mail platform use), and any redirect whose target sits percent-encoded in a `url`, `u`,
`redirect`, `target`, `dest` or `destination` parameter. Then the contract's tracking-parameter
stripping applies (utm_*, fbclid, ref, ...). Opaque redirects (Substack's `/redirect/<id>`,
beehiiv's `/ss/c/...`, HubSpot's `/e3t/...`) do not carry the target: they are kept as written.
"""

from __future__ import annotations

import re
from functools import lru_cache
from urllib.parse import parse_qsl, unquote, urlsplit

from app.contract import strip_tracking

# The target is one path segment: its own slashes are percent-encoded.
_CL0_RE = re.compile(r"^https?://[^/]+/CL0/([^/]+)", re.I)
_TARGET_KEYS = ("url", "u", "redirect", "redirect_url", "target", "dest", "destination", "link")
_MAX_UNWRAPS = 3  # a redirect to a redirect to ...: a few hops, never a loop


def _carried_target(url: str) -> str | None:
    match = _CL0_RE.match(url)
    if match and unquote(match.group(1)).lower().startswith(("http://", "https://")):
        return unquote(match.group(1))
    try:
        query = urlsplit(url).query
    except ValueError:
        return None
    for key, value in parse_qsl(query, keep_blank_values=False):
        if key.lower() in _TARGET_KEYS and value.lower().startswith(("http://", "https://")):
            return value
    return None


@lru_cache(maxsize=8192)  # a story's link shows in its title, its text and its link list
def canonical_link(url: str) -> str:
    """The target of carrying redirects, without tracking parameters; opaque redirects as they are."""
    current = url.strip()
    for _ in range(_MAX_UNWRAPS):
        target = _carried_target(current)
        if target is None or target == current:
            break
        current = target.strip()
    try:
        return strip_tracking(current)
    except ValueError:  # a netloc urlsplit refuses (an unclosed IPv6 bracket): leave it alone
        return current
