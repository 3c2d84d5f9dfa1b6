"""The train/validation split: deterministic, by story, never one story on both sides."""

from __future__ import annotations

import hashlib

from training.data.examples import LabeledExample


def split_examples(
    examples: list[LabeledExample], *, validation_fraction: float, seed: int
) -> tuple[list[LabeledExample], list[LabeledExample]]:
    """Deterministic: order by a seeded hash of the item, the first round(n * fraction) validate.

    Depends only on the items and the seed, not on line order. At least one example of each side
    when fraction > 0 and there are two or more examples.
    """
    if validation_fraction <= 0 or len(examples) < 2:
        return list(examples), []
    ranked = sorted(examples, key=lambda e: hashlib.sha256(f"{seed}:{e.key}".encode()).hexdigest())
    count = min(len(examples) - 1, max(1, round(len(examples) * validation_fraction)))
    validation_keys = {e.key for e in ranked[:count]}
    train = [e for e in examples if e.key not in validation_keys]
    validation = [e for e in examples if e.key in validation_keys]
    return train, validation
