"""Model runtime: one interface (`ModelRuntime`), two backends (openvino, torch)."""

from worker.runtime.base import GenerationResult, ModelRuntime, SamplingParams
from worker.runtime.loading import load_runtime

__all__ = ["GenerationResult", "ModelRuntime", "SamplingParams", "load_runtime"]
