"""One Settings object; every knob comes from the environment (or a .env file)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.contract.request import MAX_BATCH_ITEMS, MAX_CONTENT_CHARS

# NotebookLM's limits: sources per notebook on each plan, and words per source.
NOTEBOOKLM_SOURCE_LIMITS = (50, 100, 300, 600)
NOTEBOOKLM_MAX_SOURCES = 50
NOTEBOOKLM_MAX_WORDS = 500_000


def _default_data_dir() -> Path:
    return Path.cwd() / "data"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    data_dir: Path = Field(default_factory=_default_data_dir, validation_alias="ENHANCER_DATA_DIR")
    database_url: str | None = Field(default=None, validation_alias="DATABASE_URL")
    # SQLite durability (docs/reliability.md "A 202 survives a power cut"): FULL syncs the WAL at every
    # commit, so an acknowledged submission survives an OS crash or power cut; NORMAL may lose the
    # last commits then (never on a process crash).
    sqlite_synchronous: Literal["FULL", "NORMAL"] = Field(
        default="FULL", validation_alias="ENHANCER_SQLITE_SYNCHRONOUS"
    )
    # How long a write waits for SQLite's lock before it gives up (then: 503 + Retry-After).
    sqlite_busy_timeout_seconds: float = Field(
        default=30.0, gt=0, le=600, validation_alias="ENHANCER_SQLITE_BUSY_TIMEOUT_SECONDS"
    )
    broker_url: str | None = Field(default=None, validation_alias="BROKER_URL")

    # Model runtime
    model_backend: Literal["openvino", "openvino-genai", "torch"] = Field(
        # openvino-genai: 8.1x torch fp32 and 1.7x optimum-intel at int8, 600 MB RSS (docs/performance.md)
        default="openvino-genai",
        validation_alias="ENHANCER_BACKEND",
    )
    model_device: str = Field(default="CPU", validation_alias="ENHANCER_DEVICE")
    model_source: str | None = Field(
        default=None,
        validation_alias="ENHANCER_MODEL",
        description="HF id, local HF directory or .gguf file; the registry's active model when unset.",
    )
    weight_precision: Literal["fp32", "fp16", "int8", "int4"] = Field(
        default="int8", validation_alias="ENHANCER_PRECISION"
    )
    # 8 rows per call: 1.4-1.7x the items/s of 4 on 2 cores, records identical (docs/performance.md).
    max_batch_size: int = Field(default=8, ge=1, le=64, validation_alias="ENHANCER_MAX_BATCH")

    # Jobs
    job_lease_seconds: int = Field(default=600, ge=5, validation_alias="ENHANCER_JOB_LEASE_SECONDS")
    job_max_attempts: int = Field(default=3, ge=1, validation_alias="ENHANCER_JOB_MAX_ATTEMPTS")
    # A job queued this long was probably never delivered (broker down at submit, Redis restarted).
    requeue_after_seconds: int = Field(default=60, ge=1, validation_alias="ENHANCER_REQUEUE_AFTER_SECONDS")
    reconcile_interval_seconds: float = Field(
        default=15.0, gt=0, validation_alias="ENHANCER_RECONCILE_SECONDS"
    )
    worker_heartbeat_seconds: float = Field(default=5.0, gt=0, validation_alias="ENHANCER_HEARTBEAT_SECONDS")
    # A batch that generates slower than this (every row at its full token budget) is given up as hung.
    # A quarter of the slowest measured configuration (torch fp32 eager on 2 CPU cores, 17.9 tokens/s).
    generation_min_tokens_per_second: float = Field(
        default=4.0, gt=0, validation_alias="ENHANCER_MIN_TOKENS_PER_SECOND"
    )
    generation_overhead_seconds: float = Field(
        default=30.0, ge=0, validation_alias="ENHANCER_GENERATION_OVERHEAD_SECONDS"
    )

    # API
    api_page_max: int = 200
    # Comma-separated keys; when unset, the key in <data dir>/api_key (`enhancer serve` creates it).
    api_keys: str | None = Field(default=None, validation_alias="ENHANCER_API_KEYS")
    # Limits (docs/reliability.md). Item limits can only tighten the contract's own bounds.
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024, validation_alias="ENHANCER_MAX_BODY_BYTES")
    # A raw e-mail (POST /v1/emails, `enhancer ingest`): newsletters are 20-200 KB, a few MB with images.
    max_email_bytes: int = Field(
        default=10 * 1024 * 1024, ge=1024, validation_alias="ENHANCER_MAX_EMAIL_BYTES"
    )
    max_batch_items: int = Field(
        default=MAX_BATCH_ITEMS, ge=1, le=MAX_BATCH_ITEMS, validation_alias="ENHANCER_MAX_BATCH_ITEMS"
    )
    max_item_chars: int = Field(
        default=MAX_CONTENT_CHARS, ge=1, le=MAX_CONTENT_CHARS, validation_alias="ENHANCER_MAX_ITEM_CHARS"
    )
    # Reverse proxies (comma-separated IPs) whose X-Forwarded-Host (the review page's origin check) and
    # X-Forwarded-For (who is a loopback client, below) the app believes.
    trusted_proxies: str = Field(default="", validation_alias="ENHANCER_TRUSTED_PROXIES")
    # Who may read /metrics, /docs, /redoc, /openapi.json and /readyz's details (app/api/exposure.py):
    # loopback clients only; loopback clients and requests with an API key; or everyone.
    docs_and_metrics: Literal["loopback", "key", "open"] = Field(
        default="loopback", validation_alias="ENHANCER_DOCS_AND_METRICS"
    )
    # The review page's sign-in lasts this long (a server-side session; sign out ends it at once).
    review_session_hours: float = Field(default=168.0, gt=0, validation_alias="ENHANCER_REVIEW_SESSION_HOURS")
    max_queued_jobs: int = Field(default=10_000, ge=1, validation_alias="ENHANCER_MAX_QUEUED_JOBS")
    queue_full_retry_after_seconds: int = Field(
        default=30, ge=1, validation_alias="ENHANCER_QUEUE_RETRY_AFTER"
    )
    idempotency_ttl_hours: float = Field(
        default=24.0, gt=0, validation_alias="ENHANCER_IDEMPOTENCY_TTL_HOURS"
    )
    # Per-API-key rate limit (app/api/rate_limit.py): a token bucket per key on /v1 and /enhance, in
    # each API process's memory (N uvicorn workers: N buckets per key). 0 in either turns it off.
    rate_limit_per_second: float = Field(
        default=50.0, ge=0, validation_alias="ENHANCER_RATE_LIMIT_PER_SECOND"
    )
    rate_limit_burst: int = Field(default=200, ge=0, validation_alias="ENHANCER_RATE_LIMIT_BURST")
    # Webhooks (app/knowledge/webhooks.py, docs/api.md#webhooks): a failed delivery is tried again
    # after base * 2^(attempt-1) seconds (capped, +-10% jitter), until it has had max_attempts tries.
    webhook_max_attempts: int = Field(
        default=8, ge=1, le=100, validation_alias="ENHANCER_WEBHOOK_MAX_ATTEMPTS"
    )
    webhook_retry_base_seconds: float = Field(
        default=5.0, gt=0, validation_alias="ENHANCER_WEBHOOK_RETRY_SECONDS"
    )
    webhook_retry_max_seconds: float = Field(
        default=3600.0, gt=0, validation_alias="ENHANCER_WEBHOOK_RETRY_MAX_SECONDS"
    )
    webhook_timeout_seconds: float = Field(
        default=10.0, gt=0, le=300, validation_alias="ENHANCER_WEBHOOK_TIMEOUT_SECONDS"
    )
    # NotebookLM exports (app/export/notebooklm.py, docs/export.md): sources per notebook (the index
    # file included; NotebookLM's plans allow 50, 100, 300 or 600) and words per source.
    notebooklm_max_sources: int = Field(
        default=NOTEBOOKLM_MAX_SOURCES, validation_alias="ENHANCER_NOTEBOOKLM_MAX_SOURCES"
    )
    notebooklm_max_words: int = Field(
        default=NOTEBOOKLM_MAX_WORDS, ge=1000, validation_alias="ENHANCER_NOTEBOOKLM_MAX_WORDS"
    )

    @field_validator("notebooklm_max_sources")
    @classmethod
    def _notebooklm_plan(cls, value: int) -> int:
        if value not in NOTEBOOKLM_SOURCE_LIMITS:
            plans = ", ".join(map(str, NOTEBOOKLM_SOURCE_LIMITS))
            raise ValueError(f"must be one of {plans} (NotebookLM's plans)")
        return value

    @field_validator("data_dir", mode="after")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            url = self.database_url
            # psycopg 3 is the driver we ship.
            if url.startswith("postgresql://") or url.startswith("postgres://"):
                url = "postgresql+psycopg://" + url.split("://", 1)[1]
            return url
        return f"sqlite:///{self.data_dir / 'enhancer.db'}"

    @property
    def celery_broker_url(self) -> str:
        # Embedded default: kombu's SQLAlchemy transport on a SQLite file, so no Redis is needed.
        return self.broker_url or f"sqla+sqlite:///{self.data_dir / 'broker.db'}"

    @property
    def trusted_proxy_hosts(self) -> frozenset[str]:
        return frozenset(part.strip() for part in self.trusted_proxies.split(",") if part.strip())

    @property
    def api_key_file(self) -> Path:
        return self.data_dir / "api_key"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    def ensure_dirs(self) -> None:
        """The data directory and its models directory exist, owner-only (app/core/private_files.py)."""
        from app.core.private_files import private_data_dir

        private_data_dir(self.data_dir, subdirs=(self.models_dir,))


@lru_cache
def get_settings() -> Settings:
    return Settings()
