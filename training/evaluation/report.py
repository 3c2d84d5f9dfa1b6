"""The comparison report: Markdown table, PNG charts (matplotlib) and results.json."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from training.evaluation.composite import UPSTREAM

# (key, label, target or None): the rows of the main table.
TABLE_ROWS: list[tuple[str, str, str | None]] = [
    ("n_items", "items scored", None),
    ("schema_valid_rate", "schema-valid (pipeline: stored records)", ">= 1.00"),
    ("json_valid_rate", "JSON-valid (pipeline)", None),
    ("raw_schema_valid_rate", "schema-valid (raw first attempt)", ">= 0.95"),
    ("raw_json_valid_rate", "JSON-valid (raw first attempt)", None),
    ("entities_f1_strict", "entities F1, strict", None),
    ("entities_f1_fuzzy", "entities F1, fuzzy", ">= 0.65"),
    ("entities_precision_fuzzy", "entities precision, fuzzy", None),
    ("entities_recall_fuzzy", "entities recall, fuzzy", None),
    ("key_topics_f1_strict", "key_topics F1, strict", None),
    ("key_topics_f1_fuzzy", "key_topics F1, fuzzy", ">= 0.35"),
    ("relevance_mae", "relevance MAE", None),
    ("relevance_within_1", "relevance within +-1", ">= 0.85"),
    ("relevance_within_1_best_constant", "relevance within +-1 of the best constant answer", None),
    ("summary_sentence_rate", "summaries that are one real sentence about the item (rule)", None),
    ("summary_failures", "summaries the rule rejects, by reason", None),
    ("summary_rouge_l", "summary ROUGE-L (n gold = summary_n_items)", None),
    ("summary_cosine", "summary cosine (MiniLM)", None),
    ("summary_n_items", "items with a gold summary", None),
    ("consistency", "consistency (identical over runs)", None),
    ("p50_s", "latency p50 (s per item, batch)", None),
    ("p95_s", "latency p95 (s per item, batch)", None),
    # The field guards (app/contract/field_guards.py), read against the same generations without them.
    ("flagged_summary_or_topic_rate", "records whose summary/topics the guards reject", None),
    ("flagged_summary_or_topic_rate_unguarded", "... the same, without the guards", None),
    ("flagged_action_items_rate", "records with an action item that repeats a label", None),
    ("flagged_action_items_rate_unguarded", "... the same, without the guards", None),
    ("entities_f1_fuzzy_unguarded", "entities F1, fuzzy, without the guards", None),
    ("key_topics_f1_fuzzy_unguarded", "key_topics F1, fuzzy, without the guards", None),
    ("schema_valid_rate_unguarded", "schema-valid, without the guards", None),
    ("rejections", "rejected attempts, by attempt and reason", None),
    ("dropped", "action items dropped, by reason", None),
    ("repairs", "records mended after every attempt was guard-rejected", None),
]
CHART_METRICS = [
    ("schema_valid_rate", "schema-valid"),
    ("raw_schema_valid_rate", "raw schema-valid"),
    ("entities_f1_fuzzy", "entities F1 fuzzy"),
    ("key_topics_f1_fuzzy", "topics F1 fuzzy"),
    ("relevance_within_1", "relevance ±1"),
    ("summary_cosine", "summary cosine"),
]


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, dict):
        return "; ".join(f"{key} x{count}" for key, count in value.items()) or "none"
    return str(value)


def _num(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not math.isnan(float(value)) else 0.0


AGREEMENT_ROWS = [
    ("entities_f1_fuzzy", "entities F1, fuzzy"),
    ("key_topics_f1_strict", "key_topics F1, strict"),
    ("key_topics_f1_fuzzy", "key_topics F1, fuzzy"),
    ("relevance_mae", "relevance MAE"),
    ("relevance_within_1", "relevance within +-1"),
]


def agreement_section(agreement: dict[str, Any], results: list[Any]) -> list[str]:
    """Second labelling vs first, next to each model: how far the labels themselves agree."""
    if not agreement.get("stories_labelled_twice"):
        return []
    names = [r.name for r in results]
    lines = [
        "## Human agreement (the ceiling)",
        "",
        f"{agreement['stories_labelled_twice']} stories are labelled twice in the data. One labelling "
        "scored against the other with the same metrics, both ways (so precision = recall = F1), is "
        "how far the labels agree with themselves; the model columns repeat the table above.",
        "",
        "| metric | labelling vs labelling | " + " | ".join(names) + " |",
        "| --- | --- | " + " | ".join("---" for _ in names) + " |",
    ]
    for key, label in AGREEMENT_ROWS:
        lines.append(
            f"| {label} | {_fmt(agreement.get(key))} | "
            + " | ".join(_fmt(r.scores.get(key)) for r in results)
            + " |"
        )
    return [*lines, ""]


def markdown(
    results: list[Any],
    options: dict[str, Any],
    counts: dict[str, int],
    agreement: dict[str, Any] | None = None,
) -> str:
    names = [r.name for r in results]
    lines = ["# Evaluation: base vs tuned models", ""]
    lines += [f"- data: `{options['data']}`; repeats {options['repeats']}; folds {options['folds']}; "
              f"epochs per fold: {options['epochs'] or 'TrainConfig default'}; repeated passes over the "
              f"first {options.get('consistency_items') or 'all'} items (consistency)"]  # fmt: skip
    if options.get("base_limit"):
        lines.append(
            f"- the base model is scored on the first {options['base_limit']} items only (it is slow)"
        )
    lines.append("")
    lines += [
        "| metric | target | " + " | ".join(names) + " |",
        "| --- | --- | " + " | ".join("---" for _ in names) + " |",
    ]
    for key, label, target in TABLE_ROWS:
        lines.append(
            f"| {label} | {target or ''} | " + " | ".join(_fmt(r.scores.get(key)) for r in results) + " |"
        )
    lines += ["", "![label metrics](metrics.png)", ""]
    lines += agreement_section(agreement or {}, results)
    lines += ["## Upstream composite score", ""]
    if any(r.composite for r in results):
        lines += [
            f"Test set: `{options.get('test_data')}`: {counts.get('lines', 0)} distinct stories, "
            f"{counts.get('in_training_data', 0)} removed because they occur in the training data, "
            f"{counts.get('repeated_headline', 0)} repeated headlines removed, {counts.get('kept', 0)} kept"
            + (f", first {counts['scored']} scored" if "scored" in counts else "")
            + ". BERTScore is computed with all-MiniLM-L6-v2 token embeddings (not roberta-large).",
            "",
            "| model | composite | ROUGE-1 | ROUGE-L | BERTScore F1 (MiniLM) | semantic sim. "
            "| JSON valid | n |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in results:
            c = r.composite
            if c:
                lines.append(
                    f"| {r.name} | {_fmt(c.get('composite'))} | {_fmt(c.get('composite_rouge_1'))} | "
                    f"{_fmt(c.get('composite_rouge_l'))} | {_fmt(c.get('composite_bertscore_f1'))} | "
                    f"{_fmt(c.get('composite_semantic_similarity'))} | "
                    f"{_fmt(c.get('composite_json_valid'))} | "
                    f"{c.get('composite_n_items', '-')} |"
                )
        for name, value in UPSTREAM.items():
            lines.append(f"| upstream: {name} | {value:.4f} | | | | | | |")
        lines += ["", "![composite](composite.png)", ""]
    lines += ["## Notes", ""]
    for r in results:
        lines += [f"- **{r.name}** ({r.seconds:.0f} s): " + "; ".join(r.notes)]
    lines += ["", "![latency](latency.png)", ""]
    return "\n".join(lines)


def charts(out_dir: Path, results: list[Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    width = 0.8 / max(1, len(results))
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for i, r in enumerate(results):
        xs = [x + i * width for x in range(len(CHART_METRICS))]
        ax.bar(xs, [_num(r.scores.get(k)) for k, _ in CHART_METRICS], width, label=r.name)
    ax.set_xticks([x + width * (len(results) - 1) / 2 for x in range(len(CHART_METRICS))])
    ax.set_xticklabels([label for _, label in CHART_METRICS])
    ax.set_ylim(0, 1.05)
    ax.set_title("Label metrics (held-out items)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "metrics.png", dpi=110)
    plt.close(fig)

    ours = [(r.name, r.composite["composite"]) for r in results if r.composite.get("composite") is not None]
    if ours:
        bars = ours + [(f"upstream {k}", v) for k, v in UPSTREAM.items()]
        fig, ax = plt.subplots(figsize=(10, 4))
        colors = ["tab:blue"] * len(ours) + ["tab:gray"] * len(UPSTREAM)
        ax.bar(range(len(bars)), [v for _, v in bars], color=colors)
        ax.set_xticks(range(len(bars)))
        ax.set_xticklabels([n for n, _ in bars], rotation=15, fontsize=8)
        ax.set_ylim(0, 1.0)
        ax.set_title("Upstream composite (templated references; ours with MiniLM BERTScore)")
        fig.tight_layout()
        fig.savefig(out_dir / "composite.png", dpi=110)
        plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 3.5))
    for i, key in enumerate(("p50_s", "p95_s")):
        ax.bar(
            [x + i * 0.4 for x in range(len(results))],
            [_num(r.scores.get(key)) for r in results],
            0.4,
            label=key,
        )
    ax.set_xticks([x + 0.2 for x in range(len(results))])
    ax.set_xticklabels([r.name for r in results], fontsize=8)
    ax.set_ylabel("seconds per item (batched)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "latency.png", dpi=110)
    plt.close(fig)


def write_report(
    out_dir: Path,
    results: list[Any],
    options: dict[str, Any],
    counts: dict[str, int],
    *,
    agreement: dict[str, Any] | None = None,
) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    charts(out_dir, results)
    (out_dir / "results.json").write_text(
        json.dumps(
            {"options": options, "composite_test_set": counts, "label_agreement": agreement or {},
             "models": [{"name": r.name, "kind": r.kind, "source": r.source, "scores": r.scores,
                         "composite": r.composite, "notes": r.notes, "seconds": r.seconds} for r in results]},
            indent=2, default=str,
        ),
        encoding="utf-8",
    )  # fmt: skip
    path = out_dir / "report.md"
    path.write_text(markdown(results, options, counts, agreement), encoding="utf-8")
    return path
