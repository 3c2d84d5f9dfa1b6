"""`train(config)`: data -> LoRA (local PEFT or Tinker) -> merge -> OpenVINO -> registered version."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from app.contract import SCHEMA_VERSION
from app.core.config import Settings, get_settings
from app.core.hashing import file_sha256
from app.registry import MANIFEST_FILE, read_manifest
from training.config import TrainConfig, default_version_id
from training.data.loading import LoadedData, load_examples
from training.data.split import split_examples
from training.data.tokens import tokenize_examples
from training.errors import BaseModelError, TrainingError
from training.export import export_version
from training.metrics import METRICS_FILE
from training.types import RunResult, TokenizedExample
from worker.runtime.loading import ModelSourceError, classify_source, ensure_hf_dir

log = logging.getLogger(__name__)

RUN_FILE = "run.json"


@dataclass(frozen=True)
class ResolvedBaseModel:
    requested: str
    location: str  # what from_pretrained loads: a HF directory or a HF id
    kind: str
    description: str


@dataclass
class TrainResult:
    version_id: str
    version_dir: Path
    output_dir: Path
    adapter_dir: Path
    metrics_path: Path
    backend: str
    epochs: list[dict[str, Any]]
    initial_validation_loss: float | None
    train_examples: int
    validation_examples: int
    wall_seconds: float
    activated: bool
    notes: list[str] = field(default_factory=list)


def resolve_base_model(base_model: str | None, settings: Settings) -> ResolvedBaseModel:
    """HF id | HF dir | .gguf | registry dir -> a location transformers loads, or BaseModelError."""
    if base_model is None:
        from worker.presets import BASE_MODEL

        default_dir = settings.models_dir / BASE_MODEL.version_id
        if not (default_dir / MANIFEST_FILE).exists():
            raise BaseModelError(
                f"no base model given and the default ({BASE_MODEL.version_id}) is not in "
                f"{settings.models_dir}: pass --base-model ID|DIR|GGUF or run `enhancer model pull`"
            )
        base_model = str(default_dir)
    try:
        source = classify_source(base_model)
    except ModelSourceError as error:
        raise BaseModelError(f"unknown base model: {error}") from error
    if source.kind == "openvino_ir":
        raise BaseModelError(
            f"base model {base_model} is OpenVINO IR; training needs weights: a HF id, HF directory, .gguf "
            "or registry version directory"
        )
    description = base_model
    if source.kind == "registry":
        registered = read_manifest(Path(source.location))
        description = (
            f"{registered.get('version_id', Path(source.location).name)}: {registered.get('base_model', '')}"
        )
    try:
        location = ensure_hf_dir(source, settings.models_dir / "cache")
        from transformers import AutoConfig

        AutoConfig.from_pretrained(location)
    except Exception as error:
        hint = " (not a local file or directory, and not loadable as a Hugging Face model id)"
        raise BaseModelError(
            f"unknown base model {base_model!r}{hint if source.kind == 'hf_id' else ''}: {error}"
        ) from error
    return ResolvedBaseModel(base_model, location, source.kind, description)


def _run_tinker(
    config: TrainConfig,
    examples: list[TokenizedExample],
    validation: list[TokenizedExample],
    output_dir: Path,
    metrics_path: Path,
) -> RunResult:
    from training.tinker_backend import TinkerTrainingError, train_tinker

    try:
        return train_tinker(
            config,  # Tinker's model: tinker_base_model, else base_model (a HF id; checked in train)
            examples=examples,
            validation=validation,
            output_dir=output_dir,
            metrics_path=metrics_path,
            api_key=None,  # the SDK reads TINKER_API_KEY: keys never go into configs or manifests
        )
    except (TinkerTrainingError, ValueError) as error:
        raise TrainingError(f"tinker: {error}") from error


def _version_id(config: TrainConfig, output_dir: Path | None, base: ResolvedBaseModel) -> str:
    if config.version_id:
        return config.version_id
    if config.resume and output_dir is not None and (output_dir / RUN_FILE).exists():
        return str(json.loads((output_dir / RUN_FILE).read_text(encoding="utf-8"))["version_id"])
    name = Path(base.requested).name if base.kind != "hf_id" else base.requested
    return default_version_id(name)


def _field_labels(config: TrainConfig, loaded: LoadedData) -> dict[str, Any] | None:
    """Merge config.field_labels into loaded.examples; what the manifest records about the file."""
    if config.field_labels is None:
        return None
    from training.field_labels import read_field_labels, with_field_labels

    labels = read_field_labels(config.field_labels)
    loaded.examples, gained = with_field_labels(loaded.examples, labels)
    log.info("field labels: %d of %d examples gained labels from %s", gained, len(loaded.examples),
             config.field_labels)  # fmt: skip
    return {"file": config.field_labels.name, "sha256": file_sha256(config.field_labels),
            "examples_labelled": gained}  # fmt: skip


def train(config: TrainConfig, *, settings: Settings | None = None) -> TrainResult:
    """The whole run. Data problems and an unusable base model fail before anything is trained."""
    from transformers import AutoTokenizer

    started = time.perf_counter()
    settings = settings or get_settings()
    loaded = load_examples(config.data)
    field_labels = _field_labels(config, loaded)
    base = resolve_base_model(config.base_model, settings)
    version_id = _version_id(config, config.output_dir, base)
    if (settings.models_dir / version_id / MANIFEST_FILE).exists():
        raise TrainingError(
            f"model version {version_id!r} already exists in {settings.models_dir}: pick another --version-id"
        )
    if config.backend == "tinker" and base.kind != "hf_id" and not config.tinker_base_model:
        raise TrainingError(
            f"--tinker-base-model is required when the base model is a local path ({base.requested}): "
            "Tinker needs the model's name, e.g. meta-llama/Llama-3.2-1B"
        )
    output_dir = (config.output_dir or settings.data_dir / "training" / version_id).resolve()
    metrics_path = output_dir / METRICS_FILE
    data_sha256 = file_sha256(config.data)

    tokenizer = AutoTokenizer.from_pretrained(base.location)
    train_rows, validation_rows = split_examples(
        loaded.examples, validation_fraction=config.validation_fraction, seed=config.seed
    )
    train_examples, skipped = tokenize_examples(
        train_rows,
        tokenizer,
        max_length=config.max_length,
        field_weights=config.field_weights,
        silver_summaries=config.silver_summaries,
    )
    validation_examples, skipped_validation = tokenize_examples(
        validation_rows,
        tokenizer,
        max_length=config.max_length,
        field_weights=config.field_weights,
        silver_summaries=config.silver_summaries,
    )
    notes = [*loaded.notes, *skipped, *skipped_validation]
    for note in notes:
        log.info("data: %s", note)
    log.info(
        "data: %d lines, %d examples (%d duplicates removed): %d train, %d validation",
        loaded.lines,
        len(loaded.examples),
        loaded.duplicates_removed,
        len(train_examples),
        len(validation_examples),
    )

    output_dir.mkdir(parents=True, exist_ok=True)
    run_info = {
        "version_id": version_id,
        "base_model": base.requested,
        "base_location": base.location,
        "data_sha256": data_sha256,
        "config": config.model_dump(mode="json"),
    }
    (output_dir / RUN_FILE).write_text(json.dumps(run_info, indent=2), encoding="utf-8")

    training_started = time.perf_counter()
    if config.backend == "local":
        from training.local_backend import train_local

        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        run = train_local(
            config,
            examples=train_examples,
            validation=validation_examples,
            base_location=base.location,
            pad_id=int(pad_id),
            output_dir=output_dir,
            metrics_path=metrics_path,
            fingerprint={**config.fingerprint(), "data_sha256": data_sha256},
        )
    else:
        run = _run_tinker(config, train_examples, validation_examples, output_dir, metrics_path)
    epochs = [asdict(e) for e in run.epochs]
    for name, reason in run.not_applied.items():
        log.warning("%s: %s not applied: %s", config.backend, name, reason)
        notes.append(f"{name} not applied: {reason}")
    training_seconds = time.perf_counter() - training_started

    exported = export_version(
        settings=settings,
        version_id=version_id,
        base_location=base.location,
        adapter_dir=run.adapter_dir,
        precision=config.precision,
        activate=config.activate,
        manifest={
            "base_model": base.description,
            "base_model_source": {"requested": base.requested, "kind": base.kind, "location": base.location},
            "schema_version": SCHEMA_VERSION,
            "data_sha256": data_sha256,
            **({"field_labels": field_labels} if field_labels else {}),
            "data": {
                "path": str(config.data.resolve()),
                "lines": loaded.lines,
                "examples": len(loaded.examples),
                "duplicates_removed": loaded.duplicates_removed,
                "formats": loaded.formats,
                "train_examples": len(train_examples),
                "validation_examples": len(validation_examples),
                "left_out": len(skipped) + len(skipped_validation),
            },
            "training": {
                "backend": config.backend,
                "device": run.device,
                "config": config.model_dump(mode="json"),
                # Settings of `config` this backend could not apply, with the reason.
                **({"not_applied": run.not_applied} if run.not_applied else {}),
                "initial_validation_loss": run.initial_validation_loss,
                "epochs": epochs,
                "seconds": round(training_seconds, 1),
            },
            "evaluation": {},
        },
    )
    wall_seconds = time.perf_counter() - started
    log.info(
        "model version %s registered at %s in %.0f s", exported.version_id, exported.version_dir, wall_seconds
    )
    return TrainResult(
        version_id=exported.version_id,
        version_dir=exported.version_dir,
        output_dir=output_dir,
        adapter_dir=run.adapter_dir,
        metrics_path=metrics_path,
        backend=config.backend,
        epochs=epochs,
        initial_validation_loss=run.initial_validation_loss,
        train_examples=len(train_examples),
        validation_examples=len(validation_examples),
        wall_seconds=round(wall_seconds, 1),
        activated=exported.activated,
        notes=notes,
    )
