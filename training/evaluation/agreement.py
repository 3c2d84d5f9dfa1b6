"""Human agreement: one labelling of a story scored against another labelling of the same story.

The seed file labels 12 stories twice (once as a plain item, once under a digest's decorated
headline). Scoring one labelling against the other with the very metrics the models get, in both
directions, says how much of a field the labels themselves agree on: the ceiling a model's score
on that field is to be read against. Evaluation and training keep only the later labelling.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from training.evaluation.items import EvalItem, Gold, load_eval_items, story_groups
from training.evaluation.metrics import micro_prf, relevance_errors


def labelling_pairs(items: list[EvalItem]) -> list[tuple[Gold, Gold]]:
    """(earlier, later) labellings of every story labelled more than once, consecutive pairs."""
    pairs = []
    for group in story_groups(items):
        ordered = sorted((item for item in group if item.gold != Gold()), key=lambda item: item.line)
        pairs += [(a.gold, b.gold) for a, b in itertools.pairwise(ordered)]
    return pairs


def label_agreement(path: Path) -> dict[str, Any]:
    """Model-style scores of each labelling against the other (both directions, micro-averaged).

    Symmetric by construction: precision = recall = F1 for the list fields.
    """
    pairs = labelling_pairs(load_eval_items(path, keep_superseded=True))
    both_ways = [*pairs, *((b, a) for a, b in pairs)]
    result: dict[str, Any] = {"stories_labelled_twice": len(pairs)}
    for name, entity in (("entities", True), ("key_topics", False)):
        lists = [(getattr(a, name), getattr(b, name)) for a, b in both_ways]
        lists = [(a, b) for a, b in lists if a and b]
        for fuzzy in (False, True):
            prf = micro_prf(lists, fuzzy=fuzzy, entity=entity)
            result[f"{name}_f1_{'fuzzy' if fuzzy else 'strict'}"] = prf.f1
        result[f"{name}_stories"] = len(lists) // 2
    mae, within_1, n = relevance_errors((a.relevance_score, b.relevance_score) for a, b in pairs)
    result |= {"relevance_mae": mae, "relevance_within_1": within_1, "relevance_stories": n}
    return result
