"""Tokenisation with loss weights: prompt and completion tokens, and a weight per completion token
(zero on placeholder values).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app.contract import JSON_SEPARATORS, render_prompt, render_target
from training.data.examples import GENERATED_FIELDS, LabeledExample
from training.errors import TrainingError
from training.types import TokenizedExample


@dataclass(frozen=True)
class EncodedExample:
    """Everything about one tokenized example, for training and for inspecting the weights."""

    prompt_ids: list[int]
    completion_ids: list[int]
    completion_offsets: list[tuple[int, int]]
    completion_text: str
    field_spans: dict[str, tuple[int, int]]
    placeholders: frozenset[str]
    completion_weights: list[float]
    eos_id: int

    def to_tokenized(self, example_id: str) -> TokenizedExample:
        input_ids = [*self.prompt_ids, *self.completion_ids, self.eos_id]
        weights = [0.0] * len(self.prompt_ids) + self.completion_weights + [1.0]
        return TokenizedExample(input_ids=input_ids, weights=weights, example_id=example_id)


def field_spans(text: str, target: Mapping[str, Any]) -> dict[str, tuple[int, int]]:
    """Character span of each field's JSON value inside render_target(target)."""
    spans: dict[str, tuple[int, int]] = {}
    cursor = 0
    for name in GENERATED_FIELDS:
        if name not in target:
            continue
        key_text = json.dumps(name) + JSON_SEPARATORS[1]
        value_text = json.dumps(target[name], ensure_ascii=False, separators=JSON_SEPARATORS)
        found = text.find(key_text + value_text, cursor)
        if found < 0:
            raise AssertionError(f"render_target layout changed: cannot find field {name!r}")
        start = found + len(key_text)
        spans[name] = (start, start + len(value_text))
        cursor = start + len(value_text)
    return spans


def encode_example(
    example: LabeledExample,
    tokenizer: Any,
    *,
    field_weights: Mapping[str, float] | None = None,
    silver_summaries: bool = False,
) -> EncodedExample:
    """Prompt and completion tokenized separately, exactly as the worker sees the prompt.

    A completion token gets weight 0 when any of its characters lies inside a placeholder value:
    no placeholder character is ever learned (the JSON keys and punctuation around it still are).
    Otherwise a token inside a labelled field's value gets that field's `field_weights` entry
    (default 1.0; the largest where a token straddles two fields), and JSON keys and punctuation 1.0.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise TrainingError("training needs a fast tokenizer (character offsets of tokens)")
    eos_id = tokenizer.eos_token_id
    if eos_id is None:
        raise TrainingError("the tokenizer has no EOS token: cannot teach the model to stop")
    target, placeholders = example.target(silver_summaries=silver_summaries)
    completion = render_target(target)
    spans = field_spans(completion, target)
    zero_spans = [spans[name] for name in placeholders]
    prompt_ids = tokenizer(render_prompt(example.item, tokenizer), add_special_tokens=False)["input_ids"]
    encoded = tokenizer(completion, add_special_tokens=False, return_offsets_mapping=True)
    offsets = [(int(start), int(end)) for start, end in encoded["offset_mapping"]]
    weighted_spans = [(span, (field_weights or {}).get(name, 1.0)) for name, span in spans.items()]
    weights = [
        0.0
        if any(start < b and a < end for a, b in zero_spans)
        else max([w for (a, b), w in weighted_spans if start < b and a < end], default=1.0)
        for start, end in offsets
    ]
    return EncodedExample(
        prompt_ids=list(prompt_ids),
        completion_ids=list(encoded["input_ids"]),
        completion_offsets=offsets,
        completion_text=completion,
        field_spans=spans,
        placeholders=placeholders,
        completion_weights=weights,
        eos_id=int(eos_id),
    )


def tokenize_examples(
    examples: list[LabeledExample],
    tokenizer: Any,
    *,
    max_length: int,
    field_weights: Mapping[str, float] | None = None,
    silver_summaries: bool = False,
) -> tuple[list[TokenizedExample], list[str]]:
    """(tokenized examples, notes about the ones left out because they exceed max_length)."""
    tokenized = []
    skipped = []
    for example in examples:
        encoded = encode_example(
            example, tokenizer, field_weights=field_weights, silver_summaries=silver_summaries
        )
        row = encoded.to_tokenized(example.key[:16])
        if len(row.input_ids) > max_length:
            skipped.append(
                f"line {example.line}: {len(row.input_ids)} tokens > max_length {max_length}, left out"
            )
            continue
        tokenized.append(row)
    return tokenized, skipped
