"""The small interface the worker codes against."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class SamplingParams:
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int = 0


GREEDY = SamplingParams()
# Second attempt: sampled and penalised, so it leaves whatever loop the first attempt fell into.
RETRY = SamplingParams(do_sample=True, temperature=0.7, top_p=0.9, repetition_penalty=1.3, seed=1234)


@dataclass
class GenerationResult:
    text: str
    new_tokens: int
    finish_reason: str  # "stop" | "length" | "repetition"
    seconds: float = 0.0


@dataclass
class RuntimeInfo:
    name: str
    backend: str
    device: str
    precision: str
    load_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


class ModelRuntime(Protocol):
    info: RuntimeInfo
    tokenizer: Any

    def generate(
        self,
        prompts: list[str],
        *,
        max_new_tokens: int,
        schema: dict[str, Any] | None = None,
        sampling: SamplingParams = GREEDY,
        stop_on_repetition: bool = True,
        min_new_tokens: int = 0,
    ) -> list[GenerationResult]:
        """One completion per prompt in one batched call; `schema` constrains it (None: free text).

        `stop_on_repetition` ends a row that loops (finish_reason "repetition"); `min_new_tokens`
        suppresses end-of-sequence before that many tokens (the bench uses it to generate free text
        of a given length)."""
        ...
