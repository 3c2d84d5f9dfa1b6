"""How a labels file (`enhancer label-fields`) agrees with a person's labels of the same stories.

    python bench/field_label_agreement.py --labels data/field-labels.jsonl \\
        --person docs/evaluation/field-labels-person.jsonl

Both files: one {"key": <story key>, "labels": {...}} per line (training.field_labels' format);
--labels may also be `bench/cv_fold.py --predictions` output, to score what a tuned model writes
on stories it was not trained on.
Per field over the stories both label: sentiment and urgency_level, the share with the same label;
categories, the share whose first (best) label is among the person's, and the mean F1 of the sets.
Beside each, what the constant answer would score (the person's most common label on every story:
on a field that is mostly one value, agreement alone flatters a constant labeller), and the labels'
own spread over the whole labels file (bench/preset_outputs.py's value_spread).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench.preset_outputs import value_spread  # noqa: E402
from training.field_labels import FIELD_QUESTIONS, LABELLED_FIELDS, read_field_labels  # noqa: E402


def _set_f1(predicted: list[str], gold: list[str]) -> float:
    overlap = len(set(predicted) & set(gold))
    if not overlap:
        return 0.0
    precision, recall = overlap / len(set(predicted)), overlap / len(set(gold))
    return 2 * precision * recall / (precision + recall)


def agreement(labels: dict[str, dict[str, Any]], person: dict[str, dict[str, Any]]) -> dict[str, Any]:
    shared = sorted(set(labels) & set(person))
    report: dict[str, Any] = {"stories": len(shared)}
    for question in FIELD_QUESTIONS:
        name = question.field
        pairs = [
            (labels[k][name], person[k][name]) for k in shared if name in labels[k] and name in person[k]
        ]
        if not pairs:
            continue
        if question.multi:
            common = Counter(v for _, gold in pairs for v in gold).most_common(1)[0][0]
            report[name] = {
                "first_label_agrees": sum(p[0] in g for p, g in pairs) / len(pairs),
                "set_f1": sum(_set_f1(p, g) for p, g in pairs) / len(pairs),
                "constant_first_label_agrees": sum(common in g for _, g in pairs) / len(pairs),
                "constant_set_f1": sum(_set_f1([common], g) for _, g in pairs) / len(pairs),
                "constant": common,
            }
        else:
            common = Counter(g for _, g in pairs).most_common(1)[0][0]
            report[name] = {
                "agrees": sum(p == g for p, g in pairs) / len(pairs),
                "constant_agrees": sum(common == g for _, g in pairs) / len(pairs),
                "constant": common,
            }
    return report


def load_labels(path: Path) -> dict[str, dict[str, Any]]:
    """A labels file, or the predictions of `bench/cv_fold.py --predictions` (each story's fields as
    the fold model that never trained on it wrote them)."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if rows and "labels" not in rows[0]:
        fields = [q.field for q in FIELD_QUESTIONS]
        return {row["key"]: {name: row[name] for name in fields if name in row} for row in rows}
    return read_field_labels(path)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--labels", type=Path, required=True)
    parser.add_argument("--person", type=Path, required=True)
    args = parser.parse_args()
    labels, person = load_labels(args.labels), read_field_labels(args.person)
    spread = value_spread(list(labels.values()), LABELLED_FIELDS)
    print(json.dumps({"agreement": agreement(labels, person), "spread": spread}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
