"""TrainConfig: every knob of a training run, from a JSON/TOML file and/or command-line flags."""

from __future__ import annotations

import json
import re
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from training.errors import ConfigError

ALL_LINEAR: Final = "all-linear"


class TrainConfig(BaseModel):
    """One training run. Defaults are the ones measured on SmolLM2-135M (docs/training.md)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # What to train on and from
    data: Path = Field(description="JSONL training data: seed rows or record rows (docs/training.md).")
    backend: Literal["local", "tinker"] = "local"
    base_model: str | None = Field(
        default=None,
        description="HF model id, HF directory, .gguf file or registry version directory; "
        "default: the registry's smollm2-135m-instruct (from `enhancer model pull`).",
    )
    tinker_base_model: str | None = Field(
        default=None, description="Name Tinker knows the base model by; default: base_model."
    )
    tinker_base_url: str | None = Field(
        default=None, description="Tinker service URL; default: $TINKER_BASE_URL."
    )

    # LoRA
    rank: int = Field(default=16, ge=1, le=512)
    alpha: float = Field(default=32.0, gt=0)
    dropout: float = Field(default=0.05, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = ALL_LINEAR

    # Optimisation
    learning_rate: float = Field(default=1e-3, gt=0, le=1)
    lr_schedule: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_ratio: float = Field(default=0.05, ge=0, lt=1)
    weight_decay: float = Field(default=0.0, ge=0)
    epochs: int = Field(default=6, ge=1, le=1000)
    batch_size: int = Field(default=4, ge=1, le=1024)
    field_weights: dict[str, float] = Field(
        default_factory=lambda: {"entities": 3.0, "key_topics": 2.0},
        description="Loss weight of the tokens inside a labelled field's value, by GeneratedMetadata "
        "field name (others 1.0): weight the fields the labels are about over JSON the grammar forces.",
    )
    silver_summaries: bool = Field(
        default=True,
        description="Items without a gold summary learn their own first sentence that the field guards "
        "accept (most seed items have no gold summary); off: a zero-weight placeholder.",
    )
    field_labels: Path | None = Field(
        default=None,
        description="JSONL of labels by story key for fields the data leaves unlabelled (categories, "
        "sentiment, urgency_level; `enhancer label-fields` writes it); they train with field_weights.",
    )
    max_length: int = Field(default=1024, ge=16, description="Longer examples are left out (and reported).")
    max_steps: int | None = Field(default=None, ge=1, description="Stop after this many optimiser steps.")
    seed: int = 0
    validation_fraction: float = Field(default=0.1, ge=0, lt=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    cpu_threads: int | None = Field(
        default=None, ge=1, le=1024, description="torch CPU threads; default: torch's choice (one per core)."
    )

    # Outputs
    output_dir: Path | None = Field(
        default=None,
        description="Checkpoints, adapter and metrics; default: <data dir>/training/<version id>.",
    )
    version_id: str | None = Field(
        default=None, description="Model version id; default: <base>-lora-<UTC time>."
    )
    precision: Literal["int8", "int4", "fp16", "fp32"] = Field(
        default="int8", description="Weight precision of the exported OpenVINO IR."
    )
    resume: bool = Field(default=False, description="Continue from the last checkpoint in output_dir.")
    activate: bool = Field(default=False, description="Serve the new version from the next job on.")

    @field_validator("target_modules", mode="before")
    @classmethod
    def _split_modules(cls, value: Any) -> Any:
        if isinstance(value, str) and value != ALL_LINEAR:
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("field_weights", mode="before")
    @classmethod
    def _parse_field_weights(cls, value: Any) -> Any:
        if isinstance(value, str):  # the command line: "entities=3,key_topics=2"
            pairs = [part.split("=", 1) for part in value.split(",") if part.strip()]
            if any(len(pair) != 2 for pair in pairs):
                raise ValueError("use NAME=WEIGHT pairs separated by commas, e.g. entities=3,key_topics=2")
            return {name.strip(): weight.strip() for name, weight in pairs}
        return value

    @field_validator("field_weights")
    @classmethod
    def _known_fields(cls, value: dict[str, float]) -> dict[str, float]:
        from app.contract import GeneratedMetadata

        unknown = sorted(set(value) - set(GeneratedMetadata.model_fields))
        if unknown:
            raise ValueError(
                f"unknown field(s) {', '.join(unknown)}; "
                f"expected some of {', '.join(GeneratedMetadata.model_fields)}"
            )
        negative = sorted(name for name, weight in value.items() if weight < 0)
        if negative:
            raise ValueError(f"weights must be >= 0 ({', '.join(negative)})")
        return value

    @field_validator("version_id")
    @classmethod
    def _safe_version_id(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", value):
            raise ValueError("use 1-64 letters, digits, '.', '_' or '-' (it names a directory)")
        return value

    @model_validator(mode="after")
    def _resume_needs_output_dir(self) -> TrainConfig:
        if self.resume and self.output_dir is None:
            raise ValueError("resume needs output_dir (the directory of the run to continue)")
        return self

    def fingerprint(self) -> dict[str, Any]:
        """The settings a checkpoint must share with the run that resumes it."""
        keep = {"base_model", "rank", "alpha", "dropout", "target_modules", "learning_rate", "lr_schedule",
                "warmup_ratio", "weight_decay", "epochs", "batch_size", "field_weights", "silver_summaries",
                "field_labels", "max_length", "max_steps", "seed", "validation_fraction"}  # fmt: skip
        return self.model_dump(mode="json", include=keep)


def default_version_id(base_name: str, now: datetime | None = None) -> str:
    stem = re.sub(
        r"[^A-Za-z0-9]+", "-", Path(base_name).stem if "/" not in base_name else base_name.split("/")[-1]
    )
    stem = stem.strip("-").lower()[:32] or "model"
    return f"{stem}-lora-{(now or datetime.now(UTC)):%Y%m%d-%H%M%S}"


def read_config_file(path: Path) -> dict[str, Any]:
    """A JSON or TOML file with TrainConfig fields (TOML may nest them under [train])."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{path}: cannot read config file ({error.strerror})") from error
    try:
        data = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(
            f"{path}: not valid {'TOML' if path.suffix.lower() == '.toml' else 'JSON'}: {error}"
        ) from error
    if isinstance(data, dict) and isinstance(data.get("train"), dict):
        data = data["train"]
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected an object of training settings")
    # Relative paths in a config file are relative to the file, not to where the command runs.
    for key in ("data", "output_dir"):
        if isinstance(data.get(key), str) and not Path(data[key]).expanduser().is_absolute():
            data[key] = str((path.parent / data[key]).resolve())
    return data


def load_config(path: Path | None = None, **overrides: Any) -> TrainConfig:
    """File values, then every override that is not None (command-line flags win)."""
    values = read_config_file(path) if path is not None else {}
    values.update({key: value for key, value in overrides.items() if value is not None})
    try:
        return TrainConfig.model_validate(values)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            where = ".".join(str(p) for p in item["loc"]) or "config"
            problems.append(f"{where}: {item['msg']}")
        raise ConfigError("invalid training config: " + "; ".join(problems)) from error
