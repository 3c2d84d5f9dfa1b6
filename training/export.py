"""A trained adapter -> a registered model version the worker can serve.

models_dir/<version_id>/
  adapter/              the LoRA adapter (PEFT format)
  hf/                   base + adapter merged (transformers), the source of any other export
  openvino-<precision>/ OpenVINO IR + tokenizer (HF files and openvino_tokenizer.xml/detokenizer)
  manifest.json         base model, adapter/data sha256, training config and metrics, evaluation {}
"""

from __future__ import annotations

import functools
import hashlib
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.core.config import Settings
from app.registry import MANIFEST_FILE, register_version_dir, write_manifest
from training.errors import TrainingError
from worker.runtime.loading import REGISTRY_HF_DIR, export_openvino, merge_adapter

log = logging.getLogger(__name__)

ADAPTER_DIR = "adapter"


@dataclass(frozen=True)
class ExportResult:
    version_id: str
    version_dir: Path
    precision: str
    activated: bool
    manifest: dict[str, Any]


def directory_sha256(path: Path) -> str:
    """Content hash of a directory: relative names and bytes of every file, in sorted order."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with file.open("rb") as handle:
            for block in iter(functools.partial(handle.read, 1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def ensure_openvino_tokenizer(hf_dir: Path, ir_dir: Path) -> bool:
    """openvino_tokenizer.xml + openvino_detokenizer.xml beside the IR (for openvino-genai pipelines).

    optimum-intel's export usually writes them already; otherwise they are converted here. The worker
    tokenizes with the HF tokenizer files, so a tokenizer openvino-tokenizers cannot convert is logged,
    not fatal.
    """
    files = [ir_dir / "openvino_tokenizer.xml", ir_dir / "openvino_detokenizer.xml"]
    if all(file.exists() for file in files):
        return True
    try:
        import openvino as ov
        from openvino_tokenizers import convert_tokenizer
        from transformers import AutoTokenizer

        tokenizer, detokenizer = convert_tokenizer(
            AutoTokenizer.from_pretrained(hf_dir), with_detokenizer=True
        )
        ov.save_model(tokenizer, files[0])
        ov.save_model(detokenizer, files[1])
        return True
    except Exception as error:
        log.warning("OpenVINO tokenizer conversion failed (the HF tokenizer files still serve): %s", error)
        return False


def export_version(
    *,
    settings: Settings,
    version_id: str,
    base_location: str,
    adapter_dir: Path,
    precision: str,
    manifest: dict[str, Any],
    activate: bool,
) -> ExportResult:
    """Merge, export to OpenVINO IR, write the manifest, register (and maybe activate) the version."""
    from app.core.db import session_scope
    from app.core.migrate import upgrade_database

    settings.ensure_dirs()
    version_dir = settings.models_dir / version_id
    if (version_dir / MANIFEST_FILE).exists():
        raise TrainingError(
            f"model version {version_id!r} already exists at {version_dir}: pick another version id"
        )
    if version_dir.exists():  # left over from an export that did not finish: rebuild it
        shutil.rmtree(version_dir)
    version_dir.mkdir(parents=True)
    shutil.copytree(adapter_dir, version_dir / ADAPTER_DIR)
    hf_dir = merge_adapter(base_location, adapter_dir, version_dir / REGISTRY_HF_DIR)
    ir_dir = export_openvino(str(hf_dir), version_dir / f"openvino-{precision}", precision)
    has_ov_tokenizer = ensure_openvino_tokenizer(hf_dir, ir_dir)
    adapter_sha256 = directory_sha256(version_dir / ADAPTER_DIR)
    written = write_manifest(
        version_dir,
        {
            "version_id": version_id,
            **manifest,
            "adapter_sha256": adapter_sha256,
            "adapter": {"path": ADAPTER_DIR, "sha256": adapter_sha256},
            "exports": {"hf": REGISTRY_HF_DIR, f"openvino-{precision}": ir_dir.name},
            "openvino_tokenizer": has_ov_tokenizer,
            "evaluation": manifest.get("evaluation", {}),
        },
    )
    upgrade_database(settings.sqlalchemy_url)
    with session_scope() as session:
        version = register_version_dir(
            session, version_id=version_id, version_dir=version_dir, precision=precision, activate=activate
        )
        activated = bool(version.active)
    return ExportResult(version_id, version_dir, precision, activated, written)
