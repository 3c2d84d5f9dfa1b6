"""Metric functions: pure, small, tested on hand-made cases (tests/test_evaluation.py).

Normalisation (docs/evaluation.md):
- every string: Unicode NFKC, case-folded, curly quotes straightened, hyphens/underscores/slashes
  read as spaces, punctuation at either end dropped, whitespace collapsed;
- entities only: a trailing possessive "'s" and a leading "the" are dropped, and trailing company
  suffixes are stripped while more than one word is left: Inc, Incorporated, Corp, Corporation,
  Co, Company, Ltd, Limited, LLC, PLC, PBC, GmbH, AG, SA, AI, Labs, Lab. "AI" and "Labs" go only
  as a separate last word ("Mistral AI" -> "mistral", "Stability AI" -> "stability"); "OpenAI",
  "xAI" and a lone "AI" stay as they are. Topics keep their suffixes: "Generative AI" is a topic.

Matching is one-to-one (a gold string is matched at most once), best pairs first:
- strict: equal after normalisation;
- fuzzy: strict, or equal with spaces and punctuation removed ("Figure AI" / "FigureAI"), or
  rapidfuzz ratio or token-sort ratio >= FUZZY_THRESHOLD (plurals, typos, word order), or the
  words of one contain all words of the other and the shorter has a non-generic word of 3+
  characters ("Nvidia" / "Nvidia H100", "AI infrastructure" / "AI infrastructure spending";
  not "AI" / "AI safety").
Precision/recall/F1 are micro-averaged: true positives, predictions and gold summed over the
items that have a gold list.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rapidfuzz import fuzz

FUZZY_THRESHOLD = 85.0
COMPANY_SUFFIXES = frozenset(
    {"inc", "incorporated", "corp", "corporation", "co", "company", "ltd", "limited", "llc", "plc", "pbc",
     "gmbh", "ag", "sa", "ai", "labs", "lab"}
)  # fmt: skip
# Words too generic to make a containment match on their own.
GENERIC_WORDS = frozenset(
    {"ai", "ml", "llm", "llms", "the", "and", "of", "for", "in", "on", "a", "an", "new", "model", "models",
     "data", "tech", "technology", "news", "update", "company", "inc", "research", "tool", "tools", "app",
     "apps"}
)  # fmt: skip

_SEPARATORS_RE = re.compile(r"[-_/\u2010-\u2015]+")
_EDGE_PUNCT = " \t\n.,;:!?\"'()[]{}*`"
_SPACE_RE = re.compile(r"\s+")
_WORD_RE = re.compile(r"[a-z0-9]+")


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("\u201c", '"').replace("\u201d", '"')
    text = _SEPARATORS_RE.sub(" ", text)
    text = _SPACE_RE.sub(" ", text).strip(_EDGE_PUNCT)
    return _SPACE_RE.sub(" ", text).strip()


def normalize_entity(text: str) -> str:
    text = normalize(text)
    if text.endswith("'s"):
        text = text[:-2]
    words = [w.strip(".,") for w in text.split()]
    words = [w for w in words if w]
    if len(words) > 1 and words[0] == "the":
        words = words[1:]
    while len(words) > 1 and words[-1] in COMPANY_SUFFIXES:
        words = words[:-1]
    return " ".join(words)


def _compact(text: str) -> str:
    return "".join(_WORD_RE.findall(text))


def fuzzy_score(a: str, b: str) -> float:
    """0-100 similarity of two normalised strings; >= FUZZY_THRESHOLD is a fuzzy match."""
    if a == b or (_compact(a) and _compact(a) == _compact(b)):
        return 100.0
    score = max(fuzz.ratio(a, b), fuzz.token_sort_ratio(a, b))
    words_a, words_b = set(a.split()), set(b.split())
    shorter = words_a if len(words_a) <= len(words_b) else words_b
    longer = words_b if shorter is words_a else words_a
    if shorter and shorter <= longer and any(len(w) >= 3 and w not in GENERIC_WORDS for w in shorter):
        score = max(score, FUZZY_THRESHOLD)
    return float(score)


def count_matches(predicted: Sequence[str], gold: Sequence[str], *, fuzzy: bool) -> int:
    """One-to-one matches between two lists of already-normalised strings (greedy, best first)."""
    pairs = []
    for i, p in enumerate(predicted):
        for j, g in enumerate(gold):
            score = 100.0 if p == g else (fuzzy_score(p, g) if fuzzy else 0.0)
            if score >= (FUZZY_THRESHOLD if fuzzy else 100.0):
                pairs.append((score, i, j))
    used_p: set[int] = set()
    used_g: set[int] = set()
    for _score, i, j in sorted(pairs, key=lambda t: (-t[0], t[1], t[2])):
        if i not in used_p and j not in used_g:
            used_p.add(i)
            used_g.add(j)
    return len(used_p)


@dataclass(frozen=True)
class PRF:
    precision: float
    recall: float
    f1: float
    true_positives: int
    predicted: int
    gold: int
    items: int


def _dedupe(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(v for v in values if v))


def micro_prf(
    pairs: Iterable[tuple[Sequence[str], Sequence[str] | None]], *, fuzzy: bool, entity: bool
) -> PRF:
    """(predicted, gold) per item; items whose gold is None or empty do not count."""
    norm = normalize_entity if entity else normalize
    tp = n_pred = n_gold = n_items = 0
    for predicted, gold in pairs:
        if not gold:
            continue
        p = _dedupe(norm(x) for x in predicted)
        g = _dedupe(norm(x) for x in gold)
        tp += count_matches(p, g, fuzzy=fuzzy)
        n_pred += len(p)
        n_gold += len(g)
        n_items += 1
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return PRF(precision, recall, f1, tp, n_pred, n_gold, n_items)


def relevance_errors(pairs: Iterable[tuple[int | None, int | None]]) -> tuple[float, float, int]:
    """(mean absolute error, share within +-1, n) over items with both a prediction and gold."""
    errors = [abs(p - g) for p, g in pairs if p is not None and g is not None]
    if not errors:
        return math.nan, math.nan, 0
    return sum(errors) / len(errors), sum(e <= 1 for e in errors) / len(errors), len(errors)


def best_constant_within_1(gold: Iterable[int | None]) -> float:
    """The share within +-1 that the best single score (the same answer for every item) achieves.

    The seed labels are mostly 9 and 10, so "within +-1" alone cannot tell a model that ranks
    items from one that always answers 10: this is the bar to read it against.
    """
    values = [g for g in gold if g is not None]
    if not values:
        return math.nan
    return max(sum(abs(c - g) <= 1 for g in values) for c in range(1, 11)) / len(values)


def rouge_tokens(text: str) -> list[str]:
    """Lower-cased alphanumeric words (rouge-score's tokenizer, without its Porter stemmer)."""
    return _WORD_RE.findall(unicodedata.normalize("NFKC", text).casefold())


def _f_measure(overlap: int, n_candidate: int, n_reference: int) -> float:
    if not overlap:
        return 0.0
    precision, recall = overlap / n_candidate, overlap / n_reference
    return 2 * precision * recall / (precision + recall)


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if x == y else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F1: longest common subsequence of words."""
    c, r = rouge_tokens(candidate), rouge_tokens(reference)
    return _f_measure(lcs_length(c, r), len(c), len(r))


def rouge_1(candidate: str, reference: str) -> float:
    """ROUGE-1 F1: clipped unigram overlap."""
    c, r = Counter(rouge_tokens(candidate)), Counter(rouge_tokens(reference))
    return _f_measure(sum((c & r).values()), sum(c.values()), sum(r.values()))


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default), q in 0-100."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def consistency(runs: Sequence[Sequence[str]]) -> float:
    """Share of items whose output signature is identical in every run (runs[run][item])."""
    if not runs or not runs[0]:
        return math.nan
    n = len(runs[0])
    return sum(all(run[i] == runs[0][i] for run in runs) for i in range(n)) / n


def mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values) if values else math.nan
