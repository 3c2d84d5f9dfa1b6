"""Evaluation scores go into the model version's manifest.json (`evaluation.<data set>`)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from app.registry import read_manifest, update_manifest
from training.evaluation.overlap import read_registry_manifest

log = logging.getLogger(__name__)


def store_scores(model_source: str | Path, name: str, scores: dict[str, Any]) -> bool:
    """Merge `scores` under evaluation[name] of a registry version; False when it is not one."""
    if read_registry_manifest(model_source) is None:
        return False
    version_dir = Path(model_source)
    evaluation = dict(read_manifest(version_dir).get("evaluation") or {})
    evaluation[name] = {"evaluated_at": datetime.now(UTC).isoformat(timespec="seconds"), **scores}
    update_manifest(version_dir, evaluation=evaluation)
    log.info("stored evaluation %r in %s", name, version_dir / "manifest.json")
    return True
