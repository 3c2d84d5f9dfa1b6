"""Story grouping measured on hand-labelled record pairs (tests/data/story_pairs.jsonl).

Each pair is two records from different newsletters, labelled the same story or not; the pairs
that are not are mostly the hard kind (one company, two events; one topic, two companies). This
embeds each record as the worker does and asks the grouping's one decision
(`app.knowledge.stories.same_story`) about every pair:

    python bench/story_pairs.py                 # pair precision / recall / F1, per kind
    python bench/story_pairs.py --sweep         # the same over a grid of thresholds
    python bench/story_pairs.py --errors        # the pairs it gets wrong

The thresholds in app/knowledge/stories.py were chosen on this set (it is all the labelled pairs
there are), so these are in-sample numbers; the sweep shows how flat the optimum is.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from dataclasses import replace
from datetime import datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from app.knowledge.embeddings import get_minilm  # noqa: E402
from app.knowledge.stories import GROUPING, Grouping, StoryEvidence, embedding_text, same_story  # noqa: E402

PAIRS = REPO_ROOT / "tests" / "data" / "story_pairs.jsonl"


def load_pairs(path: Path = PAIRS) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def evidence_pairs(pairs: list[dict]) -> list[tuple[StoryEvidence, StoryEvidence]]:
    sides = [pair[side] for pair in pairs for side in ("a", "b")]
    vectors = get_minilm().vectors([embedding_text(side, side["content"]) for side in sides])
    evidence = [
        StoryEvidence.of(side, datetime.fromisoformat(side["date"].replace("Z", "+00:00")), vector)
        for side, vector in zip(sides, vectors, strict=True)
    ]
    return list(zip(evidence[0::2], evidence[1::2], strict=True))


def pair_scores(pairs: list[dict], evidence: list, grouping: Grouping) -> dict:
    tp = fp = fn = 0
    wrong: Counter[str] = Counter()
    for pair, (a, b) in zip(pairs, evidence, strict=True):
        said = same_story(a, b, grouping)
        tp += said and pair["same_story"]
        fp += said and not pair["same_story"]
        fn += not said and pair["same_story"]
        if said != pair["same_story"]:
            wrong[pair["kind"]] += 1
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 3), "recall": round(recall, 3), "f1": round(f1, 3),
            "pairs": len(pairs), "wrong_by_kind": dict(wrong)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", type=Path, default=PAIRS)
    parser.add_argument("--sweep", action="store_true", help="scores over a grid of the two thresholds")
    parser.add_argument("--errors", action="store_true", help="print the pairs the grouping gets wrong")
    args = parser.parse_args()
    pairs = load_pairs(args.pairs)
    started = time.perf_counter()
    evidence = evidence_pairs(pairs)
    seconds = time.perf_counter() - started
    kinds = Counter(pair["kind"] for pair in pairs)
    print(f"{len(pairs)} pairs ({dict(kinds)}); embedded {2 * len(pairs)} records in {seconds:.1f} s")
    print("grouping:", GROUPING)
    print(json.dumps(pair_scores(pairs, evidence, GROUPING)))
    if args.sweep:
        for shared in (0.45, 0.50, 0.55, 0.60, 0.65, 0.70):
            for alone in (0.80, 0.86, 0.92):
                grouping = replace(GROUPING, similarity=shared, similarity_without_entities=alone)
                print(f"similarity {shared:.2f} / without entities {alone:.2f}:",
                      json.dumps(pair_scores(pairs, evidence, grouping)))  # fmt: skip
    if args.errors:
        for pair, (a, b) in zip(pairs, evidence, strict=True):
            if same_story(a, b, GROUPING) != pair["same_story"]:
                cosine = float(a.vector @ b.vector)
                linked = a.link is not None and a.link == b.link
                print(f"{pair['id']} {pair['kind']} labelled {pair['same_story']}: cosine {cosine:.3f}",
                      f"link {linked} | {pair['a']['headline']} | {pair['b']['headline']}")  # fmt: skip


if __name__ == "__main__":
    main()
