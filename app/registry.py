"""Model registry: a model_versions row plus a directory with manifest.json, hf/ and openvino-*/."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from app.core.config import Settings
from app.core.db import read_session_scope
from app.crud import active_model_version, list_model_versions, register_model_version
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


class UnknownModelError(ValueError):
    """A model argument names nothing that can be loaded; the message says what was tried."""


def resolve_model(settings: Settings, requested: str | None) -> str:
    """Every model argument (`--model`, `--base-model`, ENHANCER_MODEL) -> what load_runtime takes.

    None: ENHANCER_MODEL, else the registry's active version. A name without '/': a registered
    version id. An existing file or directory: itself. 'owner/name': a Hugging Face id (whether it
    can be reached is known only when it is loaded).
    """
    if requested is None:
        if settings.model_source:
            return settings.model_source
        with read_session_scope() as session:
            active = active_model_version(session)
            if active is not None:
                return active.path
        raise UnknownModelError("no model: pass --model, set ENHANCER_MODEL, or run `enhancer model pull`")
    path = Path(requested).expanduser()
    if path.exists():
        return str(path.resolve())
    registered = settings.models_dir / requested
    if "/" not in requested and "\\" not in requested and (registered / MANIFEST_FILE).is_file():
        return str(registered)
    if requested.startswith((".", "/", "~")) or requested.endswith(".gguf") or "/" not in requested:
        with read_session_scope() as session:
            known = ", ".join(v.id for v in list_model_versions(session)) or "none"
        raise UnknownModelError(
            f"unknown model {requested!r}: not a registered version (registered: {known}), and no such "
            "file or directory; a Hugging Face id is written owner/name"
        )
    return requested
