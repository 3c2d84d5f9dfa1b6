"""Generation through openvino-genai's continuous-batching pipeline: C++ loop, paged KV cache.

The same grammar text as the transformers path (worker/runtime/grammar.py) goes to genai's
bundled xgrammar through `StructuredOutputConfig(grammar=...)`, so the layout and the length bound
are identical across backends. We drive the pipeline step by step, which lets the repetition guard
stop one request without stopping the batch: genai has no per-request stopping callback.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import openvino as ov
import openvino_genai as ov_genai

from worker.runtime.base import (
    GREEDY,
    GenerationResult,
    RuntimeInfo,
    SamplingParams,
    StepClock,
    eos_token_ids,
    finish_row,
)
from worker.runtime.grammar import grammar_text
from worker.runtime.repetition import LoopDetector
from worker.runtime.schema_budget import decoding_schemas

log = logging.getLogger(__name__)


class GenAIRuntime:
    def __init__(
        self,
        ir_dir: Path,
        tokenizer: Any,
        info: RuntimeInfo,
        *,
        device: str,
        properties: dict[str, Any],
        max_num_batched_tokens: int = 2048,
    ) -> None:
        self.tokenizer = tokenizer
        self.info = info
        scheduler = ov_genai.SchedulerConfig()
        # Long prompts are prefilled in chunks of this many tokens, interleaved with decoding.
        scheduler.max_num_batched_tokens = max_num_batched_tokens
        # Every item shares the system prompt, and the second attempt repeats the whole prompt.
        scheduler.enable_prefix_caching = True
        self.pipeline = ov_genai.ContinuousBatchingPipeline(str(ir_dir), scheduler, device, properties)
        self.eos_token_ids = self._eos_ids()
        self._next_request_id = 0
        # One caller at a time drives the pipeline's steps (a threads-pool worker shares the runtime).
        self._lock = threading.Lock()
        for schema in decoding_schemas():  # genai compiles a grammar on first use: do it now
            self.generate(["{"], max_new_tokens=1, schema=schema, stop_on_repetition=False)

    def _eos_ids(self) -> list[int]:
        return eos_token_ids(self.tokenizer, self.pipeline.get_config().eos_token_id)

    def _config(
        self, max_new_tokens: int, schema: dict[str, Any] | None, sampling: SamplingParams
    ) -> ov_genai.GenerationConfig:
        config = ov_genai.GenerationConfig()
        config.max_new_tokens = max_new_tokens
        config.apply_chat_template = False  # prompts are already rendered
        config.stop_token_ids = set(self.eos_token_ids)
        config.eos_token_id = self.eos_token_ids[0]
        config.do_sample = sampling.do_sample
        if sampling.do_sample:
            config.temperature = sampling.temperature
            config.top_p = sampling.top_p
            config.rng_seed = sampling.seed
        if sampling.repetition_penalty != 1.0:
            config.repetition_penalty = sampling.repetition_penalty
        if schema is not None:
            config.structured_output_config = ov_genai.StructuredOutputConfig(grammar=grammar_text(schema))
        return config

    def _decode(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=True))

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
        config = self._config(max_new_tokens, schema, sampling)
        config.min_new_tokens = min_new_tokens
        detector = LoopDetector(self._decode, constrained=schema is not None) if stop_on_repetition else None
        encoded = [
            self.tokenizer(p, add_special_tokens=False, return_tensors="np")["input_ids"] for p in prompts
        ]
        with self._lock:
            clock.tokenized(sum(int(ids.shape[-1]) for ids in encoded))
            tokens, looped = self._run(encoded, config, detector, clock)
        elapsed = time.perf_counter() - started
        timing = clock.timing()
        eos = set(self.eos_token_ids)
        results = []
        for row, (ids, finish) in enumerate(tokens):
            ids, reason = finish_row(ids, eos, repeated=row in looped, engine_stopped=finish == "STOP")
            text = self._decode(ids)
            results.append(
                GenerationResult(
                    text=text, new_tokens=len(ids), finish_reason=reason, seconds=elapsed, timing=timing
                )
            )
        return results

    def _run(
        self,
        encoded: list[Any],
        config: ov_genai.GenerationConfig,
        detector: LoopDetector | None,
        clock: StepClock,
    ) -> tuple[list[tuple[list[int], str | None]], set[int]]:
        """Add one request per prompt, step until all finish; (generated ids, finish reason) per row."""
        handles = []
        for ids in encoded:
            handles.append(self.pipeline.add_request(self._next_request_id, ov.Tensor(ids), config))
            self._next_request_id += 1
        tokens: list[list[int]] = [[] for _ in encoded]
        finish: dict[int, str] = {}
        looped: set[int] = set()
        try:
            while self.pipeline.has_non_finished_requests():
                prefill = any(not ids for row, ids in enumerate(tokens) if row not in finish)
                self.pipeline.step()
                clock.step(prefill=prefill)
                for row, handle in enumerate(handles):
                    if row in finish or row in looped:
                        continue
                    while handle.can_read():
                        for output in handle.read().values():
                            tokens[row].extend(output.generated_ids)
                            if output.finish_reason != ov_genai.GenerationFinishReason.NONE:
                                finish[row] = output.finish_reason.name
                    if row not in finish and detector is not None and detector(tokens[row]):
                        looped.add(row)
                        handle.stop()
        except BaseException:
            for handle in handles:  # leave no request behind for the next call to step through
                handle.cancel()
            raise
        return [(ids, finish.get(row)) for row, ids in enumerate(tokens)], looped
