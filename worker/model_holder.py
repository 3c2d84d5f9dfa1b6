"""One model per worker process, swapped when a different version is activated."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from app.core.config import Settings
from app.core.db import session_scope
from app.crud import active_model_version
from worker.runtime import ModelRuntime, load_runtime

log = logging.getLogger(__name__)


class NoModelError(RuntimeError):
    pass


@dataclass
class LoadedModel:
    version_id: str
    runtime: ModelRuntime


class ModelHolder:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._loaded: LoadedModel | None = None
        self._lock = threading.Lock()

    def _wanted(self) -> tuple[str, str]:
        """(version id, source) the worker should serve now."""
        if self.settings.model_source:
            return f"env:{self.settings.model_source}", self.settings.model_source
        with session_scope() as session:
            version = active_model_version(session)
            if version is None:
                raise NoModelError("no active model: run `enhancer model pull` or `enhancer model activate`")
            return version.id, version.path

    def get(self) -> LoadedModel:
        version_id, source = self._wanted()
        with self._lock:
            if self._loaded is None or self._loaded.version_id != version_id:
                started = time.perf_counter()
                log.info("loading model %s from %s", version_id, source)
                runtime = load_runtime(
                    source,
                    backend=self.settings.model_backend,
                    device=self.settings.model_device,
                    precision=self.settings.weight_precision,
                    cache_dir=self.settings.models_dir / "cache",
                )
                self._loaded = LoadedModel(version_id, runtime)
                log.info("model %s ready in %.1f s", version_id, time.perf_counter() - started)
            return self._loaded

    def abandon(self, loaded: LoadedModel) -> None:
        """Forget `loaded` (its generate call hung and still holds it): the next get() loads afresh."""
        with self._lock:
            if self._loaded is loaded:
                self._loaded = None

    @property
    def current_version(self) -> str | None:
        return self._loaded.version_id if self._loaded else None
