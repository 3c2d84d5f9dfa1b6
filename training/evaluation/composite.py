"""The upstream composite score, recomputed so our numbers sit next to upstream's table.

Upstream (youshen-lim/llama-tinker-lora-newsletter, docs/EVALUATION_METHODOLOGY.md) scored each
model's whole reply against the assistant reply of `unannotated_test.jsonl`:

    composite = 0.2 ROUGE-1 + 0.2 ROUGE-L + 0.3 BERTScore-F1 + 0.2 semantic similarity + 0.1 JSON validity

Those references are templated (six distinct strings chosen by a relevance bucket), and 51 of the
230 test items repeat training items. Here:
- the test set is unannotated_test.jsonl minus every item that occurs in the training data (same
  item, same normalised headline or same URL), de-duplicated;
- our reply is the stored record projected onto upstream's reply shape, rendered like theirs
  (`json.dumps(indent=2)`): {"relevance_score", "summary", "insights": key_topics}; an item
  without a record contributes the model's raw final text and JSON validity 0;
- BERTScore is computed with all-MiniLM-L6-v2 token embeddings (last layer, greedy cosine
  matching, no idf, no baseline rescaling), not roberta-large: MiniLM is the model we can ship;
- ROUGE uses our tokenizer (lower-cased alphanumeric words) without rouge-score's Porter stemmer.
The score rewards reproducing a template, not correct metadata: see docs/evaluation.md.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from training.evaluation import metrics as m
from training.evaluation.items import EvalItem, load_eval_items
from training.evaluation.overlap import TrainedItems, held_out, trained_items_from_file

WEIGHTS = {"rouge_1": 0.2, "rouge_l": 0.2, "bertscore_f1": 0.3, "semantic_similarity": 0.2, "json_valid": 0.1}
UPSTREAM = {"base (Llama 3.2-1B)": 0.3302, "Unsloth LoRA": 0.2664, "Tinker LoRA": 0.8674}


def upstream_reply(metadata: dict[str, Any]) -> str:
    """A stored record in the shape of upstream's templated reply."""
    projected = {
        "relevance_score": metadata.get("relevance_score"),
        "summary": metadata.get("summary"),
        "insights": list(metadata.get("key_topics") or []),
    }
    return json.dumps(projected, indent=2, ensure_ascii=False)


def composite_scores(items: list[EvalItem], predictions: list[Any]) -> dict[str, Any]:
    """Composite and its parts over the items that have a reference reply."""
    from app.knowledge.embeddings import get_minilm

    pairs = [(item.reference, p) for item, p in zip(items, predictions, strict=True) if item.reference]
    if not pairs:
        return {}
    candidates = [upstream_reply(p.metadata) if p.metadata is not None else p.final_text for _, p in pairs]
    references = [reference for reference, _ in pairs]
    minilm = get_minilm()
    parts = {
        "rouge_1": m.mean(m.rouge_1(c, r) for c, r in zip(candidates, references, strict=True)),
        "rouge_l": m.mean(m.rouge_l(c, r) for c, r in zip(candidates, references, strict=True)),
        "bertscore_f1": m.mean(
            minilm.bertscore(c, r).f1 for c, r in zip(candidates, references, strict=True)
        ),
        "semantic_similarity": m.mean(minilm.cosine(candidates, references)),
        "json_valid": m.mean(float(p.metadata is not None) for _, p in pairs),
    }
    composite = sum(WEIGHTS[name] * value for name, value in parts.items())
    return {
        "composite": round(composite, 4),
        "composite_n_items": len(pairs),
        **{f"composite_{name}": round(value, 4) for name, value in parts.items()},
    }


def composite_items(test_path: Path, training_paths: list[Path]) -> tuple[list[EvalItem], dict[str, int]]:
    """(test items that occur in none of the training files, counts of what was removed).

    The test file also repeats stories with slightly different text: one item per headline.
    """
    items = load_eval_items(test_path)
    counts = {"lines": len(items), "in_training_data": 0, "repeated_headline": 0}  # lines: distinct items
    for path in training_paths:
        trained: TrainedItems = trained_items_from_file(path)
        items, dropped = held_out(items, trained)
        counts["in_training_data"] += dropped
    unique: dict[str, EvalItem] = {}
    for item in items:
        unique.setdefault(item.headline_key, item)
    counts["repeated_headline"] = len(items) - len(unique)
    counts["kept"] = len(unique)
    return list(unique.values()), counts
