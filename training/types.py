"""Types shared by the training backends (local PEFT and Tinker)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


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


@dataclass
class EpochMetrics:
    epoch: int
    train_loss: float
    validation_loss: float | None
    seconds: float
    tokens_per_second: float
    steps: int


@dataclass
class RunResult:
    """What a backend's run gives train(): the adapter and the loss curve."""

    adapter_dir: Path
    epochs: list[EpochMetrics]
    steps: int
    initial_validation_loss: float | None
    resumed_from_epoch: int = 0
    device: str = "cpu"
    # Settings of the TrainConfig the backend could not apply, with the reason (the manifest says so).
    not_applied: dict[str, str] = field(default_factory=dict)
