"""Is a stored summary one real sentence about its item? A rule, so that every model is judged alike.

Most seed items have no gold summary, so overlap with a label cannot say whether summaries are
worth reading. The rule passes a summary when all of these hold:
1. one sentence: it ends with ".", "!" or "?" and has no sentence break inside (a full stop after a
   lower-case letter or digit, then a space and a capital: "U.S. Army" and "Inc. said" are no break);
2. 6 to 60 words: "AI Guide." and a pasted paragraph both fail;
3. about the item: at least 2 distinct content words (4+ letters, not a stop word) of the item's
   headline or text appear in it;
4. not the instructions: no run of 3 words from the system prompt that the item itself lacks (a
   small model copies "one factual sentence" from the prompt);
5. not the headline repeated (letters and digits compared, case ignored).
"""

from __future__ import annotations

import re

from app.contract.prompt import SYSTEM_PROMPT

MIN_WORDS, MAX_WORDS = 6, 60
MIN_SHARED_CONTENT_WORDS = 2
_WORD = re.compile(r"[a-z0-9][a-z0-9'-]*")
_SENTENCE_BREAK = re.compile(r"(?<=[a-z0-9%)][.!?])\s+(?=[A-Z])")
_STOP_WORDS = frozenset((
    "about", "after", "also", "been", "being", "could", "does", "from", "have", "into", "just", "more",
    "most", "much", "only", "other", "over", "said", "says", "some", "such", "than", "that", "their",
    "them", "then", "there", "these", "they", "this", "those", "very", "what", "when", "where",
    "which", "while", "will", "with", "would", "your", "news", "item", "items", "newsletter",
))  # fmt: skip


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _content_words(text: str) -> set[str]:
    return {word for word in _words(text) if len(word) >= 4 and word not in _STOP_WORDS}


def _trigrams(words: list[str]) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + 3]) for i in range(len(words) - 2)}


_INSTRUCTION_GRAMS = _trigrams(_words(SYSTEM_PROMPT))


def _letters(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isalnum())


def summary_failure(summary: str | None, *, headline: str, text: str) -> str | None:
    """The first rule the summary breaks, or None when it is one real sentence about the item."""
    summary = (summary or "").strip()
    if not summary:
        return "missing"
    if summary[-1] not in ".!?" and not (len(summary) > 1 and summary[-1] in "\"')" and summary[-2] in ".!?"):
        return "no sentence end"
    if _SENTENCE_BREAK.search(summary):
        return "more than one sentence"
    words = _words(summary)
    if not MIN_WORDS <= len(words) <= MAX_WORDS:
        return f"{len(words)} words"
    item = f"{headline}\n{text}"
    if len(_content_words(summary) & _content_words(item)) < MIN_SHARED_CONTENT_WORDS:
        return "not about the item"
    if (_trigrams(words) & _INSTRUCTION_GRAMS) - _trigrams(_words(item)):
        return "copies the instructions"
    if _letters(summary) == _letters(headline):
        return "the headline"
    return None
