"""Silver summaries: an item without a gold summary learns its own first sentence that the guards accept."""

from __future__ import annotations

import json
from pathlib import Path

from app.contract.field_guards import summary_rejection
from tests.fixtures import labelled_lines
from training.config import TrainConfig
from training.data.loading import parse_lines
from training.data.tokens import encode_example


def _unlabelled_summary_example(text: str | None = None):  # type: ignore[no-untyped-def]
    row = json.loads(labelled_lines(1)[0])
    row["annotation"]["summary"] = ""
    if text is not None:
        prompt = row["messages"][0]["content"]
        start = prompt.index("**Summary:** ") + len("**Summary:** ")
        end = prompt.index("\n\nJSON only:")
        row["messages"][0]["content"] = prompt[:start] + text + prompt[end:]
    (example,) = parse_lines([json.dumps(row)]).examples
    return example


def test_the_first_sentence_is_learned_with_weight(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    example = _unlabelled_summary_example()
    silver = example.silver_summary()
    assert silver is not None and example.item.text.startswith(silver)
    assert summary_rejection(silver, headline=example.item.headline, labels=[]) is None

    encoded = encode_example(example, tokenizer, silver_summaries=True)
    assert "summary" not in encoded.placeholders
    start, end = encoded.field_spans["summary"]
    assert encoded.completion_text[start:end] == json.dumps(silver, ensure_ascii=False)
    weights = [
        w
        for (a, b), w in zip(encoded.completion_offsets, encoded.completion_weights, strict=True)
        if a < end and start < b
    ]
    assert weights and min(weights) == 1.0
    # Off, the summary is the old zero-weight placeholder.
    assert "summary" in encode_example(example, tokenizer, silver_summaries=False).placeholders
    assert TrainConfig(data=Path("x.jsonl")).silver_summaries is True


def test_a_sentence_the_guards_reject_is_skipped_or_left_a_placeholder() -> None:
    example = _unlabelled_summary_example(
        "Short note. Nvidia and Microsoft sign a multi-year supply deal for chips."
    )
    assert example.silver_summary() == "Nvidia and Microsoft sign a multi-year supply deal for chips."
    headline_only = _unlabelled_summary_example(example.item.headline)
    assert headline_only.silver_summary() is None
    _target, placeholders = headline_only.target(silver_summaries=True)
    assert "summary" in placeholders
