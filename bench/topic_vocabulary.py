"""key_topics F1 with the topic vocabulary against without it, cross-validated on the seed labels.

Reads the labelled seed items and one model's predictions for them (what `enhancer eval
--predictions FILE` writes), then for each fold builds a vocabulary the way a running archive
has one: every predicted and labelled topic of the other folds goes in first. The held-out
fold's predicted and labelled topics are then mapped onto it (new entries as needed, as the worker
does) and compared as canonical entries. Without the vocabulary, topics match as strings, case
aside (the evaluation's exact F1).

    python bench/cv_fold.py --base-model data/models/smollm2-135m-instruct --folds-to-run 0,1,2,3 \
        --from-manifest training/adapters/smollm2-135m-newsletter/manifest.json \
        --predictions /tmp/cv_predictions.jsonl        # the shipped recipe's held-out predictions
    python bench/topic_vocabulary.py --predictions /tmp/cv_predictions.jsonl

The thresholds (app/knowledge/topics.py MATCHING) are not tuned here; --sweep shows how the
result moves with the cosine threshold.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402

from app.knowledge.embeddings import get_minilm  # noqa: E402
from app.knowledge.topics import MATCHING, Matching, Vocabulary, display_name, topic_key  # noqa: E402
from training.evaluation.items import load_eval_items  # noqa: E402
from training.seed_data import seed_file  # noqa: E402

FOLDS = 4


class Canonicaliser:
    """The vocabulary in memory: the worker's Vocabulary.match, entries added as topics arrive."""

    def __init__(self, matching: Matching, vectors: dict[str, np.ndarray]) -> None:
        self.vocabulary = Vocabulary(ids=[], keys=[], vectors=np.zeros((0, 384), np.float32), aliases={})
        self.matching, self.vectors = matching, vectors

    def canonical(self, raw: str) -> str:
        key = topic_key(raw)
        found = self.vocabulary.aliases.get(key) or self.vocabulary.match(
            key, self.vectors[display_name(raw)], self.matching
        )
        if found is None:
            found = key
            self.vocabulary.add(found, key, self.vectors[display_name(raw)])
        self.vocabulary.aliases[key] = found
        return found


def f1(pairs: list[tuple[set[str], set[str]]]) -> dict[str, float]:
    tp = sum(len(p & g) for p, g in pairs)
    predicted, gold = sum(len(p) for p, _ in pairs), sum(len(g) for _, g in pairs)
    precision, recall = tp / predicted if predicted else 0.0, tp / gold if gold else 0.0
    score = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 3), "recall": round(recall, 3), "f1": round(score, 3)}


def load_rows(predictions: Path, data: Path | None) -> list[tuple[list[str], list[str]]]:
    """(predicted, labelled) topics per item, from either kind of predictions file: the JSON of
    `enhancer eval --predictions` (matched to the seed labels by item key), or the JSONL of
    `bench/cv_fold.py --predictions` (held-out folds; gold and prediction on each line)."""
    text = predictions.read_text(encoding="utf-8")
    if text.lstrip().startswith("{") and '"predictions"' in text[:200_000]:
        report = json.loads(text)
        predicted = {
            p["key"]: (p.get("metadata") or {}).get("key_topics") or [] for p in report["predictions"]
        }
        items = [item for item in load_eval_items(data or seed_file()) if item.gold.key_topics]
        return [(list(predicted[i.key]), list(i.gold.key_topics or [])) for i in items if i.key in predicted]
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    return [
        (list(r.get("key_topics") or []), list(r["gold_key_topics"]))
        for r in lines
        if r.get("gold_key_topics")
    ]


def main() -> None:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument(
        "--predictions",
        type=Path,
        required=True,
        help="enhancer eval or bench/cv_fold.py --predictions output",
    )
    parser.add_argument("--data", type=Path, default=None, help="labelled seed rows (default: the seed file)")
    parser.add_argument("--sweep", action="store_true")
    args = parser.parse_args()
    rows = load_rows(args.predictions, args.data)
    names = sorted({display_name(t) for pred, gold in rows for t in [*pred, *gold]})
    vectors = dict(zip(names, get_minilm().vectors(names), strict=True))
    print(
        f"{len(rows)} labelled items with predictions, {len(names)} distinct topic spellings, {FOLDS} folds"
    )

    def run(matching: Matching) -> tuple[dict, dict, dict]:
        plain, keyed, canonical = [], [], []
        for fold in range(FOLDS):
            held = [row for i, row in enumerate(rows) if i % FOLDS == fold]
            vocabulary = Canonicaliser(matching, vectors)
            for i, (pred, gold) in enumerate(rows):
                if i % FOLDS != fold:
                    for topic in [*pred, *gold]:
                        vocabulary.canonical(topic)
            for pred, gold in held:
                plain.append(({t.casefold() for t in pred}, {t.casefold() for t in gold}))
                keyed.append(({topic_key(t) for t in pred}, {topic_key(t) for t in gold}))
                canonical.append(
                    ({vocabulary.canonical(t) for t in pred}, {vocabulary.canonical(t) for t in gold})
                )
        return f1(plain), f1(keyed), f1(canonical)

    plain, keyed, canonical = run(MATCHING)
    print("without the vocabulary (strings, case aside):", json.dumps(plain))
    print("normalised keys only (case, Unicode, plural):", json.dumps(keyed))
    print(f"with the vocabulary ({MATCHING}):", json.dumps(canonical))
    if args.sweep:
        for cosine in (0.70, 0.75, 0.80, 0.86, 0.90, 0.95):
            print(f"cosine {cosine:.2f}:", json.dumps(run(replace(MATCHING, cosine=cosine))[2]))


if __name__ == "__main__":
    main()
