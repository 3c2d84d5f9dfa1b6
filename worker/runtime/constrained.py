"""JSON-schema-constrained decoding with xgrammar, plus a guard against repetition loops."""

from __future__ import annotations

import os
import time
from typing import Any, cast

import torch
import xgrammar as xgr
from transformers import LogitsProcessor, StoppingCriteria

from worker.runtime.base import StepClock
from worker.runtime.grammar import grammar_text
from worker.runtime.repetition import LOOP_WINDOW, LoopDetector
from worker.runtime.schema_budget import decoding_schemas

# Grammar compilation is CPU-bound; more threads than a laptop's cores only contend.
COMPILER_THREADS = max(1, min(4, os.cpu_count() or 1))


class GrammarCache:
    """Grammars compiled once per tokenizer and schema; cheap matchers per generate call."""

    def __init__(self, tokenizer: Any, vocab_size: int) -> None:
        # The padded model vocab, or the tail logits stay unmasked.
        self.tokenizer_info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size)
        # xgrammar 0.2.8's compiler cache trips an internal check on long bounded regexes; we cache
        # compiled grammars ourselves.
        self.compiler = xgr.GrammarCompiler(
            self.tokenizer_info, max_threads=COMPILER_THREADS, cache_enabled=False
        )
        self.vocab_size = vocab_size
        self._compiled: dict[str, xgr.CompiledGrammar] = {}
        for schema in decoding_schemas():  # at load time, not on the first job (seconds each)
            self.compiled(schema)

    def compiled(self, schema: dict[str, Any]) -> xgr.CompiledGrammar:
        text = grammar_text(schema)
        if text not in self._compiled:
            self._compiled[text] = self.compiler.compile_grammar(text)
        return self._compiled[text]

    def processor(self, schema: dict[str, Any], batch_size: int) -> SchemaLogitsProcessor:
        return SchemaLogitsProcessor(self.compiled(schema), self.vocab_size, batch_size)


class SchemaLogitsProcessor(LogitsProcessor):
    """One matcher per row; rows whose matcher has terminated are left alone (padding)."""

    def __init__(self, compiled: xgr.CompiledGrammar, vocab_size: int, batch_size: int) -> None:
        self.matchers = [xgr.GrammarMatcher(compiled) for _ in range(batch_size)]
        self.bitmask = xgr.allocate_token_bitmask(batch_size, vocab_size)
        self.prompt_length: int | None = None
        self.rejected = [False] * batch_size
        self.mask_s = 0.0  # accepting tokens and filling masks: the grammar's share of decoding

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        started = time.perf_counter()
        if self.prompt_length is None:
            self.prompt_length = input_ids.shape[1]
        else:
            last = input_ids[:, -1].tolist()
            for row, matcher in enumerate(self.matchers):
                if not matcher.is_terminated() and not self.rejected[row]:
                    self.rejected[row] = not matcher.accept_token(last[row])
        for row, matcher in enumerate(self.matchers):
            if not matcher.is_terminated() and not self.rejected[row]:
                matcher.fill_next_token_bitmask(self.bitmask, row)
        xgr.apply_token_bitmask_inplace(scores, self.bitmask.to(scores.device), vocab_size=scores.shape[-1])
        self.mask_s += time.perf_counter() - started
        return scores

    def finished(self, row: int) -> bool:
        return self.matchers[row].is_terminated()


class StepClockProcessor(LogitsProcessor):
    """Marks each forward pass of an HF `generate` call on a StepClock (the first one is the prefill)."""

    def __init__(self, clock: StepClock) -> None:
        self.clock = clock
        self.calls = 0

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self.clock.step(prefill=self.calls == 0)
        self.calls += 1
        return scores


class RepetitionGuard(StoppingCriteria):
    """Stops a row of an HF `generate` call whose output ends in a loop (see `LoopDetector`).

    A row that ended with EOS is padded from then on (often with EOS itself): its padding is not a
    loop, so such rows are remembered as finished and never tripped.
    """

    def __init__(self, prompt_length: int, detector: LoopDetector, eos_token_ids: list[int]) -> None:
        self.prompt_length = prompt_length
        self.detector = detector
        self.eos_token_ids = set(eos_token_ids)
        self.tripped: set[int] = set()
        self.finished: set[int] = set()

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any
    ) -> torch.BoolTensor:
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        tails = input_ids[:, max(self.prompt_length, input_ids.shape[1] - LOOP_WINDOW) :].tolist()
        for row, tokens in enumerate(tails):
            if row in self.finished or (tokens and tokens[-1] in self.eos_token_ids):
                self.finished.add(row)
                continue
            if row not in self.tripped and self.detector(tokens):
                self.tripped.add(row)
            done[row] = row in self.tripped
        # StoppingCriteria.__call__ is annotated -> torch.BoolTensor (a legacy tensor-type class);
        # torch's stubs type torch.zeros(dtype=torch.bool) as plain Tensor.
        return cast(torch.BoolTensor, done)
