"""The small interface the worker codes against."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

# stop: the row ended (end-of-sequence, the grammar's end); length: it ran out of tokens;
# repetition: the repetition guard ended a loop.
FinishReason = Literal["stop", "length", "repetition"]


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


@dataclass(frozen=True)
class CallTiming:
    """Where one generate call's wall time went; every row of the call holds the same object.

    Prefill is every forward pass before each row has its first token (a chunked prefill may carry
    decode work of rows that started already); decode is the rest, including whatever the engine does
    between passes (sampling, the grammar, the repetition guard). `grammar_s` is the part of it spent
    computing token masks where Python can time that (the transformers path); None where the engine
    does it inside its own step (openvino-genai)."""

    rows: int
    prompt_tokens: int  # over all rows, padding excluded
    tokenize_s: float
    prefill_steps: int
    prefill_s: float
    decode_steps: int
    decode_s: float
    grammar_s: float | None = None


class StepClock:
    """Times one generate call pass by pass: `step` after every forward pass, `timing` at the end."""

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self.prompt_tokens = 0
        self._started = self._last = time.perf_counter()
        self._tokenize_s: float | None = None
        self._steps = {True: 0, False: 0}  # prefill?: passes
        self._seconds = {True: 0.0, False: 0.0}

    def tokenized(self, prompt_tokens: int) -> None:
        self.prompt_tokens = prompt_tokens
        self._last = time.perf_counter()
        self._tokenize_s = self._last - self._started

    def step(self, *, prefill: bool) -> None:
        now = time.perf_counter()
        self._steps[prefill] += 1
        self._seconds[prefill] += now - self._last
        self._last = now

    def timing(self, *, grammar_s: float | None = None) -> CallTiming:
        tail = time.perf_counter() - self._last  # after the last pass: the last sampling, stopping
        return CallTiming(
            rows=self.rows,
            prompt_tokens=self.prompt_tokens,
            tokenize_s=self._tokenize_s or 0.0,
            prefill_steps=self._steps[True],
            prefill_s=self._seconds[True],
            decode_steps=self._steps[False],
            decode_s=self._seconds[False] + tail,
            grammar_s=grammar_s,
        )


@dataclass
class GenerationResult:
    text: str
    new_tokens: int
    finish_reason: FinishReason
    seconds: float = 0.0
    timing: CallTiming | None = None


def eos_token_ids(tokenizer: Any, configured: int | Iterable[int] | None) -> list[int]:
    """The tokenizer's end-of-sequence id and the model's configured one(s)."""
    ids = {tokenizer.eos_token_id}
    if isinstance(configured, int):
        if configured >= 0:
            ids.add(configured)
    elif configured is not None:
        ids.update(configured)
    return sorted(i for i in ids if i is not None)


def finish_row(
    ids: Sequence[int],
    eos: set[int],
    *,
    repeated: bool,
    engine_stopped: bool = False,
    pad_id: int | None = None,
) -> tuple[list[int], FinishReason]:
    """A row's generated ids up to its first end-of-sequence token, and why it ended.

    `engine_stopped`: the engine reports a stop without an EOS in the ids (a stop token it strips).
    `pad_id`: a batch pads the rows that ended early; a row ended by the guard may carry that padding.
    """
    end = next((i for i, token in enumerate(ids) if token in eos), None)
    kept = list(ids[:end]) if end is not None else list(ids)
    if repeated:
        reason: FinishReason = "repetition"
    elif end is not None or engine_stopped:
        return kept, "stop"
    else:
        reason = "length"
    while pad_id is not None and kept and kept[-1] == pad_id:
        kept.pop()
    return kept, reason


@dataclass
class RuntimeInfo:
    name: str
    backend: str
    device: str
    precision: str
    load_seconds: float = 0.0
    weight_bytes: int | None = None  # what one decode pass reads at least: the bench's bandwidth limit
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
