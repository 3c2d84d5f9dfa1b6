"""Never evaluate a model on items it was trained on.

A registry version trained by `enhancer train` records its data file and sha256 in manifest.json
(`data.path`, `data_sha256`) and its split settings (`training.config`). From those we rebuild the
exact training split with training.data.split.split_examples and refuse any evaluation item that is
in it, matched by item identity, by normalised headline or by URL (the test file formats headlines
differently). A manifest whose data cannot be re-read unchanged is refused too: an unverifiable
model is not evaluated unless the caller names the training file itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.core.hashing import file_sha256
from training.data.loading import load_examples
from training.data.split import split_examples
from training.errors import TrainingError
from training.evaluation.items import EvalItem, url_key
from training.seed_data import seed_dir
from worker.runtime.loading import MANIFEST_FILE


class TrainTestOverlapError(TrainingError):
    """Evaluation items overlap the model's training items."""


class UnverifiableTrainingDataError(TrainingError):
    """The model was trained, but its training data cannot be re-read to check for overlap."""


@dataclass(frozen=True)
class TrainedItems:
    keys: frozenset[str]
    headlines: frozenset[str]
    urls: frozenset[str]
    source: str

    def contains(self, item: EvalItem) -> bool:
        return (
            item.key in self.keys
            or item.headline_key in self.headlines
            or (item.url_key is not None and item.url_key in self.urls)
        )


def read_registry_manifest(model_source: str | Path) -> dict[str, Any] | None:
    path = Path(model_source).expanduser()
    manifest = path / MANIFEST_FILE
    if path.is_dir() and manifest.is_file():
        return json.loads(manifest.read_text(encoding="utf-8"))
    return None


def trained_items_from_file(
    data_path: Path, *, validation_fraction: float = 0.0, seed: int = 0
) -> TrainedItems:
    examples = load_examples(data_path).examples
    trained, _validation = split_examples(examples, validation_fraction=validation_fraction, seed=seed)
    return TrainedItems(
        keys=frozenset(e.key for e in trained),
        headlines=frozenset(EvalItem(key=e.key, prompt=e.item).headline_key for e in trained),
        urls=frozenset(u for e in trained if (u := url_key(e.item.url))),
        source=str(data_path),
    )


def trained_items(model_source: str | Path, *, trained_on: Path | None = None) -> TrainedItems | None:
    """The items a model was trained on; None for a model this project did not train (base)."""
    manifest = read_registry_manifest(model_source)
    training = (manifest or {}).get("training")
    if not training:
        if trained_on is not None:
            return trained_items_from_file(trained_on)
        return None
    config = training.get("config") or {}
    validation_fraction = float(config.get("validation_fraction", 0.0))
    seed = int(config.get("seed", 0))
    data = (manifest or {}).get("data") or {}
    recorded_sha = (manifest or {}).get("data_sha256") or data.get("sha256")
    candidates = [trained_on] if trained_on is not None else []
    # `enhancer train` records the file's path; a shipped adapter (training/adapters) only its name,
    # a seed file: look for it where the seed data is.
    recorded_path = data.get("path") or (str(seed_dir() / data["file"]) if data.get("file") else None)
    if recorded_path:
        candidates.append(Path(recorded_path))
    for candidate in candidates:
        if candidate.is_file() and (recorded_sha is None or file_sha256(candidate) == recorded_sha):
            return trained_items_from_file(candidate, validation_fraction=validation_fraction, seed=seed)
    raise UnverifiableTrainingDataError(
        f"{model_source} was trained on {recorded_path or 'an unrecorded file'} (sha256 {recorded_sha}), "
        "which is missing or changed: pass the training file with --trained-on so overlap can be checked"
    )


def check_no_overlap(items: list[EvalItem], trained: TrainedItems | None, *, model: str) -> None:
    if trained is None:
        return
    overlap = [item for item in items if trained.contains(item)]
    if overlap:
        shown = ", ".join(f"line {i.line}" for i in overlap[:10])
        raise TrainTestOverlapError(
            f"{len(overlap)} of {len(items)} evaluation items were in the training data of {model} "
            f"({trained.source}): {shown}{' ...' if len(overlap) > 10 else ''}. Evaluate on held-out items "
            "(`enhancer eval --compare` cross-validates)"
        )


def held_out(items: list[EvalItem], trained: TrainedItems | None) -> tuple[list[EvalItem], int]:
    """(items the model was not trained on, how many were removed)."""
    if trained is None:
        return list(items), 0
    kept = [item for item in items if not trained.contains(item)]
    return kept, len(items) - len(kept)
