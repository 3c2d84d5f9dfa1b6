"""Text normalisation shared by entity grounding (worker) and entity matching (evaluation)."""

from __future__ import annotations

import re
import unicodedata

_SPACE_RE = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    text = text.replace("\u2019", "'").replace("\u2018", "'")
    return _SPACE_RE.sub(" ", text).strip()


def is_grounded(phrase: str, normalized_source: str) -> bool:
    """The phrase occurs in the (normalised) source text, on word boundaries."""
    needle = normalize_text(phrase)
    if not needle:
        return False
    pattern = r"(?<!\w)" + re.escape(needle) + r"(?!\w)"
    return re.search(pattern, normalized_source) is not None


def dedupe(values: list[str]) -> list[str]:
    """Drop repeated list items (xgrammar ignores uniqueItems), keeping first spelling and order."""
    seen: set[str] = set()
    kept = []
    for value in values:
        key = normalize_text(value)
        if key and key not in seen:
            seen.add(key)
            kept.append(value)
    return kept
