"""One resolver for every model argument, with one clear error for a name that is nothing."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    from app.core.config import get_settings
    from app.core.db import reset_caches, session_scope
    from app.core.migrate import upgrade_database
    from app.registry import register_version_dir, write_manifest

    monkeypatch.setenv("ENHANCER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("ENHANCER_MODEL", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    reset_caches()
    settings = get_settings()
    settings.ensure_dirs()
    upgrade_database(settings.sqlalchemy_url)
    version_dir = settings.models_dir / "tuned-v1"
    (version_dir / "hf").mkdir(parents=True)
    write_manifest(version_dir, {"version_id": "tuned-v1", "base_model": "tiny"})
    with session_scope() as session:
        register_version_dir(session, version_id="tuned-v1", version_dir=version_dir)
    yield settings
    reset_caches()


def test_every_kind_of_argument_resolves(registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    from app.registry import resolve_model

    version_dir = str(registry.models_dir / "tuned-v1")
    assert resolve_model(registry, None) == version_dir  # the active version
    assert resolve_model(registry, "tuned-v1") == version_dir
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert resolve_model(registry, str(gguf)) == str(gguf.resolve())
    assert resolve_model(registry, "meta-llama/Llama-3.2-1B") == "meta-llama/Llama-3.2-1B"
    monkeypatch.setenv("ENHANCER_MODEL", "owner/from-env")
    from app.core.config import get_settings
    from app.core.db import reset_caches

    reset_caches()
    assert resolve_model(get_settings(), None) == "owner/from-env"


@pytest.mark.parametrize("name", ["tuned-v2", "./missing-dir", "missing.gguf", "~/nothing"])
def test_a_name_that_is_nothing_says_so(registry, name: str) -> None:  # type: ignore[no-untyped-def]
    from app.registry import UnknownModelError, resolve_model

    with pytest.raises(UnknownModelError, match="not a registered version \\(registered: tuned-v1\\)"):
        resolve_model(registry, name)


def test_eval_with_an_unknown_model_prints_one_line(registry, capsys: pytest.CaptureFixture) -> None:  # type: ignore[no-untyped-def]
    from app.cli import main
    from tests.fixtures import LABELLED

    assert main(["eval", "--model", "tuned-v2", "--data", str(LABELLED), "--limit", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown model 'tuned-v2'") and "Traceback" not in err


def test_an_unreachable_hub_id_is_a_clear_model_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker.runtime.loading import ModelSourceError, load_runtime

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # what a machine without the hub sees, without waiting
    with pytest.raises(
        ModelSourceError, match="cannot load 'nobody/no-such-model' as a Hugging Face model id"
    ):
        load_runtime("nobody/no-such-model", backend="torch", cache_dir=tmp_path)
