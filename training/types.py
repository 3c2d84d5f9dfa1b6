"""Types shared by the training backends (local PEFT and Tinker)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TokenizedExample:
    """One training conversation as tokens, with a loss weight per token.

    weights[i] applies to predicting input_ids[i] from input_ids[:i]: 1.0 on assistant tokens
    that carry a label, 0.0 on the prompt and on fields the example has no gold label for.
    Backends shift: model input input_ids[:-1], targets input_ids[1:], weights weights[1:].
    """

    input_ids: list[int]
    weights: list[float]
    example_id: str = ""

    def __post_init__(self) -> None:
        if len(self.input_ids) != len(self.weights):
            raise ValueError("input_ids and weights must have the same length")
