"""`enhancer eval --compare`: base model vs cross-validated local LoRA vs Tinker versions.

Never on training items:
- the base model was trained on none of the items: it is scored on all of them;
- the local LoRA is k-fold cross-validated: for each fold, `training.train.train` fits an adapter on
  the other k-1 folds (written to a scratch file, registered in a scratch data directory so the real
  registry is untouched), the fold's version is scored on its held-out fold, and the predictions of
  all folds are pooled into one score over every item;
- a registered Tinker version is scored on the items outside its manifest's training split.
The composite test set (unannotated_test.jsonl minus training items) is split across the folds too:
each test item is scored once, by one fold's model.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.core.hashing import file_sha256
from training.evaluation.composite import composite_items, composite_scores
from training.evaluation.items import EvalItem, load_eval_items, story_groups
from training.evaluation.overlap import (
    UnverifiableTrainingDataError,
    held_out,
    read_registry_manifest,
    trained_items,
)
from training.evaluation.registry_scores import store_scores
from training.evaluation.runner import Prediction, evaluate, load_eval_runtime, score

if TYPE_CHECKING:
    from training.config import TrainConfig
    from training.train import TrainResult

log = logging.getLogger(__name__)

DEFAULT_FOLDS = 4


@dataclass
class CompareOptions:
    data: Path
    base_model: str
    reports_dir: Path = Path("reports")
    folds: int = DEFAULT_FOLDS
    epochs: int | None = None
    limit: int | None = None
    repeats: int = 2
    consistency_items: int | None = 20
    batch_size: int | None = None
    test_data: Path | None = None
    composite_limit: int | None = None
    composite: bool = True
    base_limit: int | None = None  # score the base model on the first N items only (it is slow)
    skip_base: bool = False  # only the cross-validated LoRA (score the base with `enhancer eval`)
    fresh: bool = False  # re-run the base model even when its manifest has scores for this data
    seed: int = 0


@dataclass
class ModelResult:
    name: str
    kind: str  # base | local-lora-cv | tinker
    source: str
    scores: dict[str, Any]
    composite: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class CompareResult:
    report_path: Path
    results: list[ModelResult]
    options: dict[str, Any]
    composite_counts: dict[str, int]
    label_agreement: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "report": str(self.report_path),
            "options": self.options,
            "composite_test_set": self.composite_counts,
            "label_agreement": self.label_agreement,
            "models": [
                {
                    "name": r.name,
                    "kind": r.kind,
                    "source": r.source,
                    **r.scores,
                    **r.composite,
                    "notes": r.notes,
                }
                for r in self.results
            ],
        }


def assign_folds(items: list[EvalItem], folds: int, seed: int = 0) -> list[list[EvalItem]]:
    """Deterministic folds of whole stories: groups in seeded-hash order, each to the smallest fold."""
    if folds < 2:
        raise ValueError("cross-validation needs at least 2 folds")
    groups = story_groups(items)
    if len(groups) < folds:
        raise ValueError(f"{len(groups)} distinct stories cannot fill {folds} folds")
    ranked = sorted(groups, key=lambda g: hashlib.sha256(f"{seed}:{g[0].key}".encode()).hexdigest())
    assigned: list[list[EvalItem]] = [[] for _ in range(folds)]
    for group in ranked:
        min(assigned, key=len).extend(group)
    return [sorted(fold, key=lambda item: item.line) for fold in assigned]


def write_subset(data: Path, items: list[EvalItem], target: Path) -> Path:
    """The original lines of `items` (training parses them exactly as it parses the full file)."""
    lines = data.read_text(encoding="utf-8").splitlines()
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("\n".join(lines[item.line - 1] for item in sorted(items, key=lambda i: i.line)) + "\n",
                      encoding="utf-8")  # fmt: skip
    return target


@contextmanager
def scratch_data_dir(path: Path) -> Iterator[None]:
    """Fold versions are registered under a scratch data dir with its own SQLite registry."""
    from app.core.db import reset_caches

    saved = {name: os.environ.get(name) for name in ("ENHANCER_DATA_DIR", "DATABASE_URL", "ENHANCER_MODEL")}
    os.environ["ENHANCER_DATA_DIR"] = str(path)
    os.environ.pop("DATABASE_URL", None)
    os.environ.pop("ENHANCER_MODEL", None)
    reset_caches()
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        reset_caches()


def _evaluate_with_composite(
    name: str,
    kind: str,
    source: str,
    items: list[EvalItem],
    test_items: list[EvalItem],
    options: CompareOptions,
    *,
    stored_scores: dict[str, Any] | None = None,
) -> ModelResult:
    started = time.perf_counter()
    runtime = load_eval_runtime(source)
    if stored_scores is not None:
        result = ModelResult(
            name, kind, source, stored_scores, notes=["label scores reused from its manifest"]
        )
    else:
        report = evaluate(
            source,
            items,
            repeats=options.repeats,
            consistency_items=options.consistency_items,
            batch_size=options.batch_size,
            runtime=runtime,
        )
        result = ModelResult(name, kind, source, report.to_json())
    if test_items:
        test_report = evaluate(source, test_items, repeats=1, batch_size=options.batch_size, runtime=runtime)
        result.composite = {k: v for k, v in test_report.metrics.items() if k.startswith("composite")}
        result.composite["composite_schema_valid_rate"] = test_report.metrics["schema_valid_rate"]
    result.seconds = round(time.perf_counter() - started, 1)
    return result


def _stored_base_scores(options: CompareOptions, items: list[EvalItem]) -> dict[str, Any] | None:
    """Scores `enhancer eval` already stored for this exact data file and item count, if any."""
    manifest = read_registry_manifest(options.base_model) or {}
    stored = (manifest.get("evaluation") or {}).get(options.data.stem)
    if (
        isinstance(stored, dict)
        and stored.get("data_sha256") == file_sha256(options.data)
        and stored.get("n_items") == len(items)
    ):
        return stored
    return None


def evaluate_base(options: CompareOptions, items: list[EvalItem], test_items: list[EvalItem]) -> ModelResult:
    stored = None if options.fresh else _stored_base_scores(options, items)
    result = _evaluate_with_composite(
        "base", "base", options.base_model, items, test_items, options, stored_scores=stored
    )
    result.notes.append(f"scored on {len(items)} items (it was trained on none of them)")
    return result


def train_fold(
    data: Path,
    folds: list[list[EvalItem]],
    index: int,
    fold_dir: Path,
    *,
    base_model: str,
    seed: int,
    overrides: dict[str, Any] | None = None,
) -> tuple[TrainConfig, TrainResult, list[EvalItem]]:
    """Fold `index`'s version, trained on the other folds' stories and registered under fold_dir."""
    from training.config import TrainConfig
    from training.train import train

    training_items = [item for j, fold in enumerate(folds) if j != index for item in fold]
    config = TrainConfig(
        data=write_subset(data, training_items, fold_dir / "train.jsonl"),
        base_model=base_model,
        validation_fraction=0.0,
        seed=seed,
        version_id=f"cv-fold-{index}",
        output_dir=fold_dir / "run",
        **(overrides or {}),
    )
    log.info(
        "fold %d/%d: %d training items, %d held out",
        index + 1,
        len(folds),
        len(training_items),
        len(folds[index]),
    )
    # Training reports progress on stdout; keep stdout for `--json`.
    with scratch_data_dir(fold_dir / "data"), contextlib.redirect_stdout(sys.stderr):
        trained = train(config)
    return config, trained, training_items


def cross_validate_local(
    options: CompareOptions, items: list[EvalItem], test_items: list[EvalItem], scratch: Path
) -> ModelResult:
    started = time.perf_counter()
    folds = assign_folds(items, options.folds, options.seed)
    test_folds = [test_items[i :: options.folds] for i in range(options.folds)]
    pooled_items: list[EvalItem] = []
    pooled_first: list[Prediction] = []
    pooled_test: list[EvalItem] = []
    pooled_test_predictions: list[Prediction] = []
    consistency: list[tuple[float, int]] = []
    notes = []
    epochs_used = None
    for index, held in enumerate(folds):
        fold_started = time.perf_counter()
        config, trained, training_items = train_fold(
            options.data,
            folds,
            index,
            scratch / f"fold-{index}",
            base_model=options.base_model,
            seed=options.seed,
            overrides={"epochs": options.epochs} if options.epochs else None,
        )
        epochs_used = config.epochs
        train_seconds = time.perf_counter() - fold_started
        version = str(trained.version_dir)
        runtime = load_eval_runtime(version)
        # evaluate() re-reads the fold version's manifest and refuses any item it was trained on.
        report = evaluate(
            version,
            held,
            repeats=options.repeats,
            consistency_items=options.consistency_items,
            batch_size=options.batch_size,
            runtime=runtime,
        )
        store_scores(version, f"{options.data.stem}-heldout-fold-{index}", report.to_json())
        pooled_items += held
        pooled_first += report.predictions
        if report.metrics.get("consistency_n_items"):
            consistency.append((report.metrics["consistency"], report.metrics["consistency_n_items"]))
        if test_folds[index]:
            test_report = evaluate(
                version, test_folds[index], repeats=1, batch_size=options.batch_size, runtime=runtime
            )
            pooled_test += test_folds[index]
            pooled_test_predictions += test_report.predictions
        notes.append(
            f"fold {index}: trained on {len(training_items)} items in {train_seconds:.0f} s "
            f"(loss {_losses(trained.epochs)}), scored on {len(held)} held-out items"
        )
    scores = score(pooled_items, [pooled_first])
    if consistency:
        total = sum(n for _, n in consistency)
        scores["consistency"] = round(sum(c * n for c, n in consistency) / total, 4)
        scores["consistency_n_items"] = total
    result = ModelResult(
        f"local LoRA ({options.folds}-fold CV)",
        "local-lora-cv",
        f"{options.folds} fold versions under {scratch}",
        scores,
        notes=[f"{options.folds}-fold cross-validation by story, {epochs_used} epoch(s) per fold", *notes],
    )
    if pooled_test:
        result.composite = composite_scores(pooled_test, pooled_test_predictions)
        result.composite["composite_schema_valid_rate"] = round(
            sum(p.metadata is not None for p in pooled_test_predictions) / len(pooled_test_predictions), 4
        )
    result.seconds = round(time.perf_counter() - started, 1)
    return result


def _losses(epochs: list[dict[str, Any]]) -> str:
    losses = [e.get("train_loss") for e in epochs if e.get("train_loss") is not None]
    return " -> ".join(f"{x:.3f}" for x in losses) if losses else "n/a"


def tinker_versions(models_dir: Path) -> list[Path]:
    found = []
    for manifest in sorted(models_dir.glob("*/manifest.json")):
        data = read_registry_manifest(manifest.parent) or {}
        if ((data.get("training") or {}).get("backend")) == "tinker":
            found.append(manifest.parent)
    return found


def evaluate_tinker(
    version_dir: Path, options: CompareOptions, items: list[EvalItem], test_items: list[EvalItem]
) -> ModelResult | None:
    try:
        trained = trained_items(version_dir)
    except UnverifiableTrainingDataError as error:
        log.warning("skipping %s: %s", version_dir.name, error)
        return None
    held, removed = held_out(items, trained)
    test_held, test_removed = held_out(test_items, trained)
    if not held:
        log.warning("skipping %s: it was trained on every evaluation item", version_dir.name)
        return None
    result = _evaluate_with_composite(
        f"Tinker LoRA ({version_dir.name})", "tinker", str(version_dir), held, test_held, options
    )
    result.notes.append(
        f"{removed} training items left out; scored on {len(held)} ({test_removed} test items left out)"
    )
    return result


def _store_cv_scores(models_dir: Path, data: Path, result: ModelResult) -> list[str]:
    """The CV estimate describes the recipe on this data: record it on local versions trained on it."""
    sha = file_sha256(data)
    stored = []
    for manifest in sorted(models_dir.glob("*/manifest.json")):
        info = read_registry_manifest(manifest.parent) or {}
        if info.get("data_sha256") == sha and (info.get("training") or {}).get("backend") == "local":
            scores = {**result.scores, **result.composite, "notes": result.notes}
            store_scores(manifest.parent, f"{data.stem}-cross-validated", scores)
            stored.append(manifest.parent.name)
    return stored


def run_compare(options: CompareOptions) -> CompareResult:
    from app.core.config import get_settings
    from training.evaluation.agreement import label_agreement

    models_dir = get_settings().models_dir
    items = load_eval_items(options.data)
    if options.limit:
        items = items[: options.limit]
    test_items: list[EvalItem] = []
    counts: dict[str, int] = {}
    test_path = options.test_data or options.data.parent / "unannotated_test.jsonl"
    if options.composite and test_path.is_file():
        test_items, counts = composite_items(test_path, [options.data])
        if options.composite_limit:
            test_items = test_items[: options.composite_limit]
            counts["scored"] = len(test_items)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out_dir = options.reports_dir / f"eval-{stamp}"
    scratch = out_dir / "cv"
    option_values = {
        "data": str(options.data),
        "base_model": options.base_model,
        "folds": options.folds,
        "epochs": options.epochs,
        "limit": options.limit,
        "repeats": options.repeats,
        "consistency_items": options.consistency_items,
        "test_data": str(test_path) if test_items else None,
        "composite_limit": options.composite_limit,
        "base_limit": options.base_limit,
    }

    agreement = label_agreement(options.data)

    def checkpoint(results: list[ModelResult]) -> Path:
        # Rewritten after every model: a long run that is stopped still leaves a report.
        from training.evaluation.report import write_report

        return write_report(out_dir, results, option_values, counts, agreement=agreement)

    # Cross-validation first: the tuned models are what the targets are about.
    local = cross_validate_local(options, items, test_items, scratch)
    stored = _store_cv_scores(models_dir, options.data, local)
    if stored:
        local.notes.append(f"CV scores stored in the manifests of {', '.join(stored)}")
    checkpoint([local])
    if options.skip_base:
        return CompareResult(checkpoint([local]), [local], option_values, counts, agreement)
    base_items = items[: options.base_limit] if options.base_limit else items
    base = evaluate_base(options, base_items, test_items)
    if len(base_items) == len(items):
        base_scores = {**base.scores, "data_sha256": file_sha256(options.data)}
        store_scores(options.base_model, options.data.stem, base_scores)
    if base.composite:
        store_scores(options.base_model, f"composite-{test_path.stem}", base.composite)
    results = [base, local]
    checkpoint(results)
    for version_dir in tinker_versions(models_dir):
        tinker = evaluate_tinker(version_dir, options, items, test_items)
        if tinker is not None:
            store_scores(version_dir, f"{options.data.stem}-heldout", tinker.scores)
            results.append(tinker)
    report_path = checkpoint(results)
    return CompareResult(report_path, results, option_values, counts, agreement)
