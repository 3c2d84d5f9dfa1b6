"""Turn a LoRA adapter downloaded from Tinker into a PEFT adapter that `PeftModel.from_pretrained` loads.

Tinker exports `adapter_model.safetensors` + `adapter_config.json` (`r`, `lora_alpha`) with its own
tensor names: HF module paths under a `base_model.model.` prefix, except the output layer, which it
calls `model.unembed_tokens` instead of `lm_head`:

    base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight   (same in PEFT)
    base_model.model.model.unembed_tokens.lora_B.weight              -> base_model.model.lm_head.lora_B.weight

Tensors are kept raw: PEFT applies the lora_alpha / r scaling itself, exactly as Tinker does.
Mixture-of-experts adapters (3-D expert tensors) are out of scope: our base models are dense.

Note for merging: with tied input/output embeddings (SmolLM2, Gemma 3), a LoRA on `lm_head` is a
delta on the output layer only; merging it into the tied weight would change the input embeddings
too, so untie `lm_head` before `merge_and_unload`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
TINKER_PREFIX = "base_model.model."
# Tinker's names for the output layer -> the HF module name PEFT wraps.
UNEMBED_RENAMES = (
    ("base_model.model.model.unembed_tokens.", "base_model.model.lm_head."),
    ("base_model.model.unembed_tokens.", "base_model.model.lm_head."),
)
LORA_SUFFIXES = (".lora_A.weight", ".lora_B.weight")


class TinkerAdapterError(ValueError):
    """The downloaded files are not a Tinker LoRA adapter we can convert."""


def peft_tensor_name(tinker_name: str) -> str:
    """Tinker tensor name -> PEFT tensor name (module path under `base_model.model.`)."""
    if not tinker_name.startswith(TINKER_PREFIX) or not tinker_name.endswith(LORA_SUFFIXES):
        raise TinkerAdapterError(
            f"unexpected tensor {tinker_name!r}: Tinker LoRA tensors are named "
            f"'{TINKER_PREFIX}<module>.lora_A.weight' / '.lora_B.weight'"
        )
    for old, new in UNEMBED_RENAMES:
        if tinker_name.startswith(old):
            return new + tinker_name[len(old) :]
    return tinker_name


def _module_path(peft_name: str) -> str:
    for suffix in LORA_SUFFIXES:
        if peft_name.endswith(suffix):
            return peft_name[len(TINKER_PREFIX) : -len(suffix)]
    raise TinkerAdapterError(f"not a LoRA tensor: {peft_name!r}")


def _read_tinker_config(folder: Path) -> dict[str, Any]:
    path = folder / ADAPTER_CONFIG
    if not path.is_file():
        raise TinkerAdapterError(f"{path} is missing")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise TinkerAdapterError(f"{path} is not valid JSON: {exc}") from None
    for key in ("r", "lora_alpha"):
        if not isinstance(config.get(key), int | float) or config[key] <= 0:
            raise TinkerAdapterError(f"{path} needs a positive {key!r}, got {config.get(key)!r}")
    return config


def convert_tensors(tensors: dict[str, Any], rank: int) -> tuple[dict[str, Any], list[str]]:
    """Tinker-named LoRA tensors -> (PEFT-named tensors, sorted target module names)."""
    converted: dict[str, Any] = {}
    for name, tensor in tensors.items():
        if tensor.ndim != 2:
            raise TinkerAdapterError(
                f"{name} has shape {tuple(tensor.shape)}: only 2-D LoRA tensors (dense models) are "
                "supported, not mixture-of-experts adapters"
            )
        new_name = peft_tensor_name(name)
        if new_name in converted:
            raise TinkerAdapterError(f"two Tinker tensors map to {new_name!r}")
        converted[new_name] = tensor.contiguous()
    modules = {_module_path(name) for name in converted}
    for module in sorted(modules):
        a = converted.get(f"{TINKER_PREFIX}{module}.lora_A.weight")
        b = converted.get(f"{TINKER_PREFIX}{module}.lora_B.weight")
        if a is None or b is None:
            raise TinkerAdapterError(f"{module}: lora_A and lora_B must both be present")
        if a.shape[0] != rank or b.shape[1] != rank:
            raise TinkerAdapterError(
                f"{module}: lora_A {tuple(a.shape)} / lora_B {tuple(b.shape)} do not match rank {rank}"
            )
    if not converted:
        raise TinkerAdapterError("the adapter holds no LoRA tensors")
    return converted, sorted({module.rsplit(".", 1)[-1] for module in modules})


def peft_adapter_config(*, rank: int, lora_alpha: float, target_modules: list[str], base_model: str) -> dict:
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": rank,
        "lora_alpha": lora_alpha,
        "lora_dropout": 0.0,
        "target_modules": target_modules,
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "init_lora_weights": True,
        "modules_to_save": None,
        "rank_pattern": {},
        "alpha_pattern": {},
    }


def convert_tinker_adapter(tinker_dir: Path, output_dir: Path, *, base_model: str) -> Path:
    """Write a PEFT adapter (adapter_config.json + adapter_model.safetensors) into output_dir."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, save_file

    config = _read_tinker_config(tinker_dir)
    weights_path = tinker_dir / ADAPTER_WEIGHTS
    if not weights_path.is_file():
        raise TinkerAdapterError(f"{weights_path} is missing")
    try:
        tensors = load_file(str(weights_path))
    except (SafetensorError, OSError) as exc:
        raise TinkerAdapterError(f"{weights_path} is not a readable safetensors file: {exc}") from None
    rank = int(config["r"])
    converted, target_modules = convert_tensors(tensors, rank)
    output_dir.mkdir(parents=True, exist_ok=True)
    save_file(converted, str(output_dir / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    peft_config = peft_adapter_config(
        rank=rank, lora_alpha=config["lora_alpha"], target_modules=target_modules, base_model=base_model
    )
    (output_dir / ADAPTER_CONFIG).write_text(json.dumps(peft_config, indent=2) + "\n", encoding="utf-8")
    return output_dir
