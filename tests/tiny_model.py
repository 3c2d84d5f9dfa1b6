"""The tests' tiny model: bench/tiny_model.py's, its tokenizer also trained on the fixture prompts."""

from __future__ import annotations

import json
from pathlib import Path

from bench.tiny_model import build_tiny_llama as _build
from tests.fixtures import labelled_lines


def build_tiny_llama(target: Path, *, vocab_size: int = 512, hidden_size: int = 32, seed: int = 0) -> Path:
    prompts = [json.loads(line)["messages"][0]["content"] for line in labelled_lines(40)]
    return _build(target, extra_texts=prompts, vocab_size=vocab_size, hidden_size=hidden_size, seed=seed)
