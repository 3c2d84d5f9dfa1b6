"""Errors a user can fix; `enhancer train` prints their message and exits with code 2."""

from __future__ import annotations


class TrainingError(Exception):
    """Base class: bad input (data, config, base model, backend) with a message saying what to fix."""


class DataError(TrainingError):
    """The data file has problems; `problems` lists every one as 'line N: problem'."""

    def __init__(self, path: object, problems: list[str]) -> None:
        self.problems = problems
        shown = problems[:50]
        more = f"\n  ... and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
        super().__init__(
            f"{path}: {len(problems)} problem(s), nothing was trained:\n  " + "\n  ".join(shown) + more
        )


class ConfigError(TrainingError):
    """The training config (file or flags) is invalid."""


class BaseModelError(TrainingError):
    """The base model cannot be found or loaded."""
