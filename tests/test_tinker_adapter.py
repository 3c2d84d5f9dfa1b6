"""Tinker adapter export -> PEFT adapter: tensor names, config, and refusal of what we cannot convert."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from training.tinker_adapter import TinkerAdapterError, convert_tinker_adapter, peft_tensor_name

RANK, HIDDEN, VOCAB = 2, 8, 16
Q_PROJ = "base_model.model.model.layers.0.self_attn.q_proj"
UNEMBED = "base_model.model.model.unembed_tokens"


def _tinker_export(folder: Path, tensors: dict[str, torch.Tensor], config: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    config = {"r": RANK, "lora_alpha": 32} if config is None else config
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder


def _dense_tensors() -> dict[str, torch.Tensor]:
    return {
        f"{Q_PROJ}.lora_A.weight": torch.randn(RANK, HIDDEN),
        f"{Q_PROJ}.lora_B.weight": torch.randn(HIDDEN, RANK),
        f"{UNEMBED}.lora_A.weight": torch.randn(RANK, HIDDEN),
        f"{UNEMBED}.lora_B.weight": torch.randn(VOCAB, RANK),
    }


def test_tensor_names_map_unembed_tokens_to_lm_head() -> None:
    assert peft_tensor_name(f"{Q_PROJ}.lora_A.weight") == f"{Q_PROJ}.lora_A.weight"
    assert peft_tensor_name(f"{UNEMBED}.lora_B.weight") == "base_model.model.lm_head.lora_B.weight"
    assert peft_tensor_name("base_model.model.unembed_tokens.lora_A.weight") == (
        "base_model.model.lm_head.lora_A.weight"
    )
    with pytest.raises(TinkerAdapterError, match="unexpected tensor"):
        peft_tensor_name("model.layers.0.self_attn.q_proj.lora_A.weight")


def test_conversion_writes_a_peft_adapter_with_raw_tensors(tmp_path: Path) -> None:
    tensors = _dense_tensors()
    source = _tinker_export(tmp_path / "tinker", tensors)
    out = convert_tinker_adapter(source, tmp_path / "peft", base_model="meta-llama/Llama-3.2-1B")

    converted = load_file(str(out / "adapter_model.safetensors"))
    assert set(converted) == {
        f"{Q_PROJ}.lora_A.weight",
        f"{Q_PROJ}.lora_B.weight",
        "base_model.model.lm_head.lora_A.weight",
        "base_model.model.lm_head.lora_B.weight",
    }
    # No scaling baked in: PEFT applies lora_alpha / r, as Tinker does.
    lm_head_b = converted["base_model.model.lm_head.lora_B.weight"]
    assert torch.equal(lm_head_b, tensors[f"{UNEMBED}.lora_B.weight"])
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["task_type"] == "CAUSAL_LM"
    assert (config["r"], config["lora_alpha"]) == (RANK, 32)
    assert config["target_modules"] == ["lm_head", "q_proj"]
    assert config["base_model_name_or_path"] == "meta-llama/Llama-3.2-1B"


@pytest.mark.parametrize(
    ("tensors", "config", "message"),
    [
        ({f"{Q_PROJ}.lora_A.weight": torch.randn(RANK, HIDDEN)}, None, "lora_A and lora_B must both"),
        (
            {
                "base_model.model.model.layers.0.mlp.experts.w1.lora_A.weight": torch.randn(4, RANK, HIDDEN),
                "base_model.model.model.layers.0.mlp.experts.w1.lora_B.weight": torch.randn(4, HIDDEN, RANK),
            },
            None,
            "mixture-of-experts",
        ),
        (_dense_tensors(), {"lora_alpha": 32}, "positive 'r'"),
        (_dense_tensors(), {"r": 3, "lora_alpha": 32}, "do not match rank 3"),
        ({}, None, "no LoRA tensors"),
    ],
)
def test_conversion_refuses_what_it_cannot_convert(
    tmp_path: Path, tensors: dict[str, torch.Tensor], config: dict | None, message: str
) -> None:
    source = _tinker_export(tmp_path / "tinker", tensors, config)
    with pytest.raises(TinkerAdapterError, match=message):
        convert_tinker_adapter(source, tmp_path / "peft", base_model="m")
    assert not (tmp_path / "peft" / "adapter_model.safetensors").exists()


def test_missing_or_corrupt_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(TinkerAdapterError, match=r"adapter_config\.json is missing"):
        convert_tinker_adapter(tmp_path, tmp_path / "peft", base_model="m")
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 2, "lora_alpha": 32}))
    (tmp_path / "adapter_model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(TinkerAdapterError, match="not a readable safetensors file"):
        convert_tinker_adapter(tmp_path, tmp_path / "peft", base_model="m")
