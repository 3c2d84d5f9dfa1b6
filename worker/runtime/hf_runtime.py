"""Generation through the transformers `generate()` API: shared by the torch and OpenVINO backends.

optimum-intel's OVModelForCausalLM implements the same `generate()`, so one code path serves both
and the constrained-decoding processor is identical across them.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import torch
from transformers import LogitsProcessorList, StoppingCriteriaList

from worker.runtime.base import (
    GREEDY,
    GenerationResult,
    RuntimeInfo,
    SamplingParams,
    StepClock,
    eos_token_ids,
    finish_row,
)
from worker.runtime.constrained import GrammarCache, RepetitionGuard, StepClockProcessor
from worker.runtime.repetition import LoopDetector


class HFGenerateRuntime:
    def __init__(self, model: Any, tokenizer: Any, info: RuntimeInfo, vocab_size: int) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.info = info
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.eos_token_ids = self._eos_ids()
        self.grammars = GrammarCache(tokenizer, vocab_size)
        # optimum-intel's model owns one infer request: one generate at a time (threads-pool workers).
        self._lock = threading.Lock()

    def _eos_ids(self) -> list[int]:
        generation_config = getattr(self.model, "generation_config", None)
        return eos_token_ids(self.tokenizer, getattr(generation_config, "eos_token_id", None))

    def _decode(self, ids: list[int]) -> str:
        # No clean_up_tokenization_spaces: it rewrites " ." to "." after the grammar accepted the text.
        return str(self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False))

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
        started = time.perf_counter()
        clock = StepClock(len(prompts))
        encoded = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        prompt_length = encoded["input_ids"].shape[1]
        # First in the list: each call marks the end of a forward pass, before the grammar's mask.
        processors = LogitsProcessorList([StepClockProcessor(clock)])
        schema_processor = self.grammars.processor(schema, len(prompts)) if schema is not None else None
        if schema_processor is not None:
            processors.append(schema_processor)
        detector = LoopDetector(self._decode, constrained=schema is not None)
        guard = RepetitionGuard(prompt_length, detector, self.eos_token_ids)
        kwargs: dict[str, Any] = {
            "max_new_tokens": max_new_tokens,
            "logits_processor": processors,
            "stopping_criteria": StoppingCriteriaList([guard] if stop_on_repetition else []),
            "pad_token_id": self.tokenizer.pad_token_id,
            "eos_token_id": self.eos_token_ids,
            "do_sample": sampling.do_sample,
        }
        if min_new_tokens:
            kwargs["min_new_tokens"] = min_new_tokens
        if sampling.do_sample:
            torch.manual_seed(sampling.seed)
            kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p)
        if sampling.repetition_penalty != 1.0:
            kwargs["repetition_penalty"] = sampling.repetition_penalty
        with self._lock, torch.inference_mode():
            clock.tokenized(int(encoded["attention_mask"].sum()))
            output = self.model.generate(**encoded, **kwargs)
        elapsed = time.perf_counter() - started
        timing = clock.timing(grammar_s=schema_processor.mask_s if schema_processor is not None else None)
        results: list[GenerationResult] = []
        eos = set(self.eos_token_ids)
        for row in range(len(prompts)):
            new_ids, reason = finish_row(
                output[row, prompt_length:].tolist(),
                eos,
                repeated=row in guard.tripped,  # a stopped row's padding may be EOS
                pad_id=self.tokenizer.pad_token_id,
            )
            text = self._decode(new_ids)
            results.append(
                GenerationResult(
                    text=text, new_tokens=len(new_ids), finish_reason=reason, seconds=elapsed, timing=timing
                )
            )
        return results
