"""Model sources (HF id, local HF directory, local .gguf, OpenVINO IR) -> a ready runtime."""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from app.core.hashing import file_sha256
from worker.runtime.base import ModelRuntime, RuntimeInfo

log = logging.getLogger(__name__)
T = TypeVar("T")

SourceKind = Literal["hf_id", "hf_dir", "gguf", "openvino_ir", "registry"]
OV_MODEL_FILE = "openvino_model.xml"
MANIFEST_FILE = "manifest.json"
REGISTRY_HF_DIR = "hf"


class ModelSourceError(ValueError):
    """The model source cannot be used; the message says why."""


@dataclass(frozen=True)
class ModelSource:
    kind: SourceKind
    location: str

    @property
    def name(self) -> str:
        return Path(self.location).name if self.kind != "hf_id" else self.location


def classify_source(source: str) -> ModelSource:
    path = Path(source).expanduser()
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            return ModelSource("gguf", str(path.resolve()))
        raise ModelSourceError(f"{source}: a model file must be a .gguf")
    if path.is_dir():
        if (path / MANIFEST_FILE).exists() and (path / REGISTRY_HF_DIR).is_dir():
            return ModelSource("registry", str(path.resolve()))
        if (path / OV_MODEL_FILE).exists():
            return ModelSource("openvino_ir", str(path.resolve()))
        if (path / "config.json").exists():
            return ModelSource("hf_dir", str(path.resolve()))
        raise ModelSourceError(f"{source}: directory has neither config.json nor {OV_MODEL_FILE}")
    if source.startswith((".", "/", "~")) or source.count("/") > 1 or source.endswith(".gguf"):
        raise ModelSourceError(f"{source}: no such file or directory")
    return ModelSource("hf_id", source)


def _gguf_special_token_ids(gguf_path: Path) -> dict[str, int]:
    import gguf

    reader = gguf.GGUFReader(gguf_path)
    ids = {}
    for role in ("bos", "eos", "unk", "pad"):
        key = (
            f"tokenizer.ggml.{'unknown' if role == 'unk' else 'padding' if role == 'pad' else role}_token_id"
        )
        field = reader.fields.get(key)
        if field is not None:
            ids[role] = int(field.parts[field.data[0]][0])
    return ids


def gguf_to_hf_dir(gguf_path: Path, target: Path) -> Path:
    """Dequantise a .gguf once into a HF directory (transformers loads GGUF as fp32).

    The tokenizer is loaded as a fast byte-level tokenizer (AutoTokenizer picks a sentencepiece
    class for llama GGUFs and decodes 'Ġ' literally), with special tokens taken from the GGUF.
    """
    if (target / "config.json").exists():
        return target
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    log.info("converting %s to a transformers directory (once)", gguf_path.name)
    tmp = target.with_name(target.name + ".tmp")
    tokenizer = PreTrainedTokenizerFast.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    special = _gguf_special_token_ids(gguf_path)
    for role, token_id in special.items():
        setattr(tokenizer, f"{role}_token", tokenizer.convert_ids_to_tokens(token_id))
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    if "eos" in special:
        model.generation_config.eos_token_id = special["eos"]
        model.generation_config.pad_token_id = special.get("pad", special["eos"])
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(target)
    return target


def gguf_cache_dir(gguf_path: Path, cache_dir: Path) -> Path:
    return cache_dir / f"gguf-{file_sha256(gguf_path)[:16]}"


def ensure_hf_dir(source: ModelSource, cache_dir: Path) -> str:
    """A location `from_pretrained` accepts: HF id or directory."""
    if source.kind == "gguf":
        gguf_path = Path(source.location)
        return str(gguf_to_hf_dir(gguf_path, gguf_cache_dir(gguf_path, cache_dir)))
    if source.kind == "openvino_ir":
        raise ModelSourceError(f"{source.location} is OpenVINO IR; the torch backend needs HF weights")
    if source.kind == "registry":
        return str(Path(source.location) / REGISTRY_HF_DIR)
    return source.location


def openvino_dir_for(source: ModelSource, cache_dir: Path, precision: str) -> Path:
    """Where this source's IR at `precision` lives; registry versions keep theirs beside the manifest."""
    if source.kind == "registry":
        return Path(source.location) / f"openvino-{precision}"
    return cache_dir / f"ov-{precision}-{_source_key(source)}"


def export_openvino(hf_location: str, target: Path, precision: str) -> Path:
    """Export HF weights to OpenVINO IR (+ tokenizer) at the given weight precision."""
    if (target / OV_MODEL_FILE).exists():
        return target
    from optimum.intel import OVModelForCausalLM, OVWeightQuantizationConfig
    from transformers import AutoTokenizer

    kwargs: dict[str, object] = {}
    if precision == "int8":
        kwargs["quantization_config"] = OVWeightQuantizationConfig(bits=8)
    elif precision == "int4":
        kwargs["quantization_config"] = OVWeightQuantizationConfig(bits=4, group_size=-1, ratio=1.0)
    else:
        kwargs["load_in_8bit"] = False
    log.info("exporting %s to OpenVINO IR (%s)", hf_location, precision)
    tmp = target.with_name(target.name + ".tmp")
    model = OVModelForCausalLM.from_pretrained(hf_location, export=True, compile=False, **kwargs)
    if precision == "fp16":
        model.half()
    model.save_pretrained(tmp)
    tokenizer = AutoTokenizer.from_pretrained(hf_location)
    tokenizer.save_pretrained(tmp)
    try:  # openvino-genai needs tokenizer IR; optimum-intel does not, so export never fails on it
        from worker.runtime.ov_tokenizers import convert_tokenizer_ir

        convert_tokenizer_ir(tmp, tokenizer)
    except Exception as error:
        log.warning(
            "tokenizer not converted to OpenVINO IR (%s): the openvino-genai backend will retry", error
        )
    tmp.rename(target)
    return target


def merge_adapter(base_location: str, adapter_dir: Path, target: Path) -> Path:
    """Base weights + LoRA merged into plain transformers weights (OpenVINO cannot apply PEFT)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    base = AutoModelForCausalLM.from_pretrained(base_location, dtype=torch.float32)
    # A shipped adapter is fp16: PEFT's autocast_adapter_dtype (on) loads it as fp32, the base's dtype.
    merged = PeftModel.from_pretrained(base, str(adapter_dir), autocast_adapter_dtype=True).merge_and_unload()
    merged.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(base_location).save_pretrained(tmp)
    tmp.rename(target)
    return target


def _source_key(source: ModelSource) -> str:
    return hashlib.sha256(f"{source.kind}:{source.location}".encode()).hexdigest()[:16]


def load_torch(source: ModelSource, cache_dir: Path) -> ModelRuntime:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from worker.runtime.hf_runtime import HFGenerateRuntime

    started = time.perf_counter()
    location = ensure_hf_dir(source, cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(location)
    model = AutoModelForCausalLM.from_pretrained(location, dtype=torch.float32)
    model.eval()
    info = RuntimeInfo(source.name, "torch", "cpu", "fp32", load_seconds=time.perf_counter() - started)
    info.weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    return HFGenerateRuntime(model, tokenizer, info, vocab_size=model.config.vocab_size)


def openvino_properties(cache_dir: Path, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """OpenVINO compile properties: one latency-oriented stream over all cores (generation is a
    sequence of small batched steps, not independent requests), and a model cache so a restart
    skips graph compilation."""
    properties: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "CACHE_DIR": str(cache_dir / "ov-cache")}
    properties.update(overrides or {})
    return properties


def openvino_ir_dir(source: ModelSource, cache_dir: Path, precision: str) -> Path:
    if source.kind == "openvino_ir":
        return Path(source.location)
    hf_location = ensure_hf_dir(source, cache_dir)
    return export_openvino(hf_location, openvino_dir_for(source, cache_dir, precision), precision)


def ir_weight_bytes(ir_dir: Path) -> int:
    """The IR's weights file: the bytes a decode pass reads (constants are stored at their precision)."""
    return (ir_dir / "openvino_model.bin").stat().st_size


def _with_cpu_fallback(device: str, load: Callable[[str], T]) -> tuple[T, str]:
    try:
        return load(device), device
    except Exception as error:  # GPU driver missing or device busy: serve on CPU rather than not at all
        if device.upper() == "CPU":
            raise
        log.warning("OpenVINO device %s unavailable (%s); falling back to CPU", device, error)
        return load("CPU"), "CPU"


def load_openvino(
    source: ModelSource,
    cache_dir: Path,
    *,
    device: str,
    precision: str,
    ov_config: dict[str, Any] | None = None,
) -> ModelRuntime:
    from optimum.intel import OVModelForCausalLM
    from transformers import AutoTokenizer

    from worker.runtime.hf_runtime import HFGenerateRuntime

    started = time.perf_counter()
    ir_dir = openvino_ir_dir(source, cache_dir, precision)
    properties = openvino_properties(cache_dir, ov_config)
    model, device = _with_cpu_fallback(
        device, lambda dev: OVModelForCausalLM.from_pretrained(ir_dir, device=dev, ov_config=properties)
    )
    tokenizer = AutoTokenizer.from_pretrained(ir_dir)
    info = RuntimeInfo(source.name, "openvino", device, precision, weight_bytes=ir_weight_bytes(ir_dir))
    runtime = HFGenerateRuntime(model, tokenizer, info, vocab_size=model.config.vocab_size)
    info.load_seconds = time.perf_counter() - started
    return runtime


def load_openvino_genai(
    source: ModelSource,
    cache_dir: Path,
    *,
    device: str,
    precision: str,
    ov_config: dict[str, Any] | None = None,
) -> ModelRuntime:
    from worker.runtime.genai_runtime import GenAIRuntime
    from worker.runtime.light_tokenizer import LightTokenizer
    from worker.runtime.ov_tokenizers import ensure_tokenizer_ir

    started = time.perf_counter()
    ir_dir = openvino_ir_dir(source, cache_dir, precision)
    ensure_tokenizer_ir(ir_dir)
    tokenizer = LightTokenizer(ir_dir)  # no transformers: keeps torch out of the serving process
    properties = openvino_properties(cache_dir, ov_config)
    info = RuntimeInfo(source.name, "openvino-genai", device, precision, weight_bytes=ir_weight_bytes(ir_dir))
    runtime, info.device = _with_cpu_fallback(
        device, lambda dev: GenAIRuntime(ir_dir, tokenizer, info, device=dev, properties=properties)
    )
    info.load_seconds = time.perf_counter() - started
    return runtime


BACKENDS = ("openvino", "openvino-genai", "torch")


def load_runtime(
    source: str,
    *,
    backend: str = "openvino",
    device: str = "CPU",
    precision: str = "int8",
    cache_dir: Path,
    ov_config: dict[str, Any] | None = None,
) -> ModelRuntime:
    """A ready runtime. `ov_config` overrides OpenVINO compile properties (see `openvino_properties`)."""
    if backend not in BACKENDS:
        raise ModelSourceError(f"unknown backend {backend!r}: use {', '.join(BACKENDS)}")
    cache_dir.mkdir(parents=True, exist_ok=True)
    model_source = classify_source(source)
    try:
        if backend == "torch":
            return load_torch(model_source, cache_dir)
        load = load_openvino if backend == "openvino" else load_openvino_genai
        return load(model_source, cache_dir, device=device, precision=precision, ov_config=ov_config)
    except Exception as error:
        if model_source.kind != "hf_id":
            raise
        # The hub's client raises connection errors, 401/404s and OSErrors of its own: say it once.
        raise ModelSourceError(
            f"cannot load {source!r} as a Hugging Face model id ({type(error).__name__}: {error}); "
            "no network, no such repository, or it needs a token (HF_TOKEN)"
        ) from error
