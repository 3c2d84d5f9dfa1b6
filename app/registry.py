"""Model registry: a model_versions row plus a directory with manifest.json, hf/ and openvino-*/."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from app.crud import register_model_version
from app.models import ModelVersion

MANIFEST_FILE = "manifest.json"


def write_manifest(version_dir: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    manifest = {"created_at": datetime.now(UTC).isoformat(), **manifest}
    tmp = version_dir / (MANIFEST_FILE + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, default=str), encoding="utf-8")
    tmp.replace(version_dir / MANIFEST_FILE)
    return manifest


def read_manifest(version_dir: Path) -> dict[str, Any]:
    return json.loads((version_dir / MANIFEST_FILE).read_text(encoding="utf-8"))


def update_manifest(version_dir: Path, **fields: Any) -> dict[str, Any]:
    manifest = read_manifest(version_dir)
    manifest.update(fields)
    return write_manifest(version_dir, manifest)


def register_version_dir(
    session: Session, *, version_id: str, version_dir: Path, precision: str = "int8", activate: bool = False
) -> ModelVersion:
    manifest = read_manifest(version_dir)
    version = ModelVersion(
        id=version_id,
        path=str(version_dir.resolve()),
        base_model=str(manifest.get("base_model", "")),
        backend="openvino",
        precision=precision,
        manifest=manifest,
    )
    return register_model_version(session, version=version, activate=activate)
