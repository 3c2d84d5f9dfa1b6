"""What both training backends share about the optimisation: how many steps, the learning rate of each,
the batch order and the AdamW settings. The local backend and the Tinker backend train with the same
steps, rates and batches for the same TrainConfig and data.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Final, Literal

from training.config import TrainConfig

LRSchedule = Literal["cosine", "linear", "constant"]
LR_SCHEDULES: Final = ("cosine", "linear", "constant")

# AdamW beyond learning rate and weight decay (torch's defaults), and the global gradient-norm clip.
ADAM_BETAS: Final = (0.9, 0.999)
ADAM_EPS: Final = 1e-8
GRAD_CLIP_NORM: Final = 1.0

# Batches are formed from windows of this many batches' worth of examples sorted by length: less
# padding, still a different mix every epoch.
LENGTH_GROUP_BATCHES: Final = 16


def lr_factor(step: int, total_steps: int, schedule: str, warmup_steps: int = 0) -> float:
    """Multiplier of the base learning rate at 0-based optimizer step `step`: linear warmup, then decay.

    The curves of transformers' get_scheduler (cosine, linear, constant_with_warmup).
    """
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"unknown learning-rate schedule {schedule!r}; choose one of {LR_SCHEDULES}")
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    if schedule == "constant":
        return 1.0
    if schedule == "linear":  # written as transformers does, for the same floats
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


@dataclass(frozen=True)
class Schedule:
    """The optimizer steps of one run and the learning rate of each."""

    learning_rate: float
    lr_schedule: LRSchedule
    steps_per_epoch: int
    total_steps: int  # epochs * steps_per_epoch, or max_steps when that is fewer
    warmup_steps: int

    @classmethod
    def for_run(cls, config: TrainConfig, train_examples: int) -> Schedule:
        steps_per_epoch = math.ceil(train_examples / config.batch_size)
        total_steps = config.epochs * steps_per_epoch
        if config.max_steps is not None:
            total_steps = min(total_steps, config.max_steps)
        return cls(
            learning_rate=config.learning_rate,
            lr_schedule=config.lr_schedule,
            steps_per_epoch=steps_per_epoch,
            total_steps=total_steps,
            warmup_steps=round(config.warmup_ratio * total_steps),
        )

    def factor(self, step: int) -> float:
        """The learning rate of 0-based `step` as a multiple of learning_rate."""
        return lr_factor(step, self.total_steps, self.lr_schedule, self.warmup_steps)

    def learning_rate_at(self, step: int) -> float:
        """The learning rate of 0-based optimizer step `step`."""
        return self.learning_rate * self.factor(step)

    def ends_epoch(self, epoch: int, step: int) -> bool:
        """Whether 0-based `step` is the last of `epoch` (1-based), or of the run when max_steps cuts
        an epoch short."""
        return step + 1 in (epoch * self.steps_per_epoch, self.total_steps)


def epoch_batches(lengths: list[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The batches of one epoch as example indices (`lengths`: tokens per example).

    Deterministic per (seed, epoch): shuffle, sort windows by length, shuffle the batches.
    """
    rng = random.Random(seed * 100_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = batch_size * LENGTH_GROUP_BATCHES
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches
