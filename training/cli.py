"""Subcommands of `enhancer` that belong to training (train, eval)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Training adds `train` and `eval` here."""
