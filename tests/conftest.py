"""Shared fixtures: isolated data dirs, real SQLite/PostgreSQL, a tiny real model, real workers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures import LABELLED
from tests.imap_server import ImapServer
from tests.tiny_model import build_tiny_llama

REPO_ROOT = Path(__file__).resolve().parents[1]


def _in_process_clients_are_local() -> None:
    """Starlette's TestClient names its client "testclient", an address no server reports; give it
    the one a client on this host has, so app/api/exposure.py's rules treat it as any local client.
    Tests of other addresses pass `client=` (tests/test_security.py's LAN client)."""
    from starlette.testclient import TestClient

    init = TestClient.__init__

    def __init__(self, *args, client=("127.0.0.1", 50000), **kwargs):  # type: ignore[no-untyped-def]
        init(self, *args, client=client, **kwargs)

    TestClient.__init__ = __init__  # type: ignore[method-assign]


_in_process_clients_are_local()
POSTGRES_ADMIN_URL = os.environ.get("ENHANCER_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("ENHANCER_TEST_REDIS", "redis://127.0.0.1:6379")
# Every /v1 route needs an API key: service_env configures this one; clients send API_HEADERS,
# e.g. TestClient(create_app(), headers=API_HEADERS).
TEST_API_KEY = "test-key-" + uuid.uuid4().hex
API_HEADERS = {"X-API-Key": TEST_API_KEY}


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture
def imap_server() -> Iterator[ImapServer]:
    """A real Dovecot for one test (tests/imap_server.py): user `reader`, an empty mailbox, IMAPS on
    `imaps_port` and STARTTLS on `imap_port` at 127.0.0.1, its certificate in `cafile`.

    Starts in ~0.15 s; stopping takes ~1.2 s (Dovecot 2.3's master waits a fixed second on shutdown).
    """
    with ImapServer("reader", "reader-" + uuid.uuid4().hex[:12]) as server:
        yield server


@pytest.fixture(scope="session")
def seed_items() -> list[dict]:
    """The lines of tests/data/newsletter_items.jsonl as /v1/enhance bodies (28, one per line)."""
    from training.seed_data import load_seed_requests

    return load_seed_requests(LABELLED)


def _create_pg_database() -> tuple[str, str]:
    import psycopg

    name = f"enhancer_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
    return name, f"{base}/{name}"


def _drop_pg_database(name: str) -> None:
    import psycopg

    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """None means the embedded SQLite default in the data dir."""
    if request.param == "sqlite":
        yield None
        return
    name, url = _create_pg_database()
    try:
        yield url
    finally:
        _drop_pg_database(name)


@pytest.fixture
def service_env(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, str]]:
    """Environment for an isolated service: its own data dir, the tiny model, fast timers.

    Tests that want PostgreSQL or Redis add DATABASE_URL / BROKER_URL before starting things.
    """
    from app.core.db import reset_caches

    env = {
        "ENHANCER_DATA_DIR": str(tmp_path / "data"),
        "ENHANCER_MODEL": str(tiny_model_dir),
        "ENHANCER_BACKEND": "torch",
        "ENHANCER_HEARTBEAT_SECONDS": "0.5",
        "ENHANCER_RECONCILE_SECONDS": "1",
        "ENHANCER_API_KEYS": TEST_API_KEY,
    }
    for key in ("DATABASE_URL", "BROKER_URL"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    reset_caches()
    yield env
    reset_caches()


def apply_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], **extra: str | None) -> None:
    from app.core.db import reset_caches

    for key, value in extra.items():
        if value is None:
            env.pop(key, None)
            monkeypatch.delenv(key, raising=False)
        else:
            env[key] = value
            monkeypatch.setenv(key, value)
    reset_caches()


class WorkerProcess:
    """A real `celery worker` subprocess (solo pool), as `enhancer worker` runs it."""

    def __init__(self, env: dict[str, str], log_path: Path, name: str = "w1") -> None:
        from app.cli import worker_command

        command = worker_command(pool="solo", loglevel="INFO")
        command[command.index("-n") + 1] = f"{name}-{uuid.uuid4().hex[:6]}@%h"
        self.log_path = log_path
        self.log = log_path.open("wb")
        self.process = subprocess.Popen(
            command, cwd=REPO_ROOT, env={**os.environ, **env}, stdout=self.log, stderr=subprocess.STDOUT
        )

    def wait_ready(self, timeout: float = 60) -> None:
        """Until the worker's heartbeat is in the database."""
        from app.core.db import session_scope
        from app.crud import live_workers

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited with {self.process.returncode}:\n{self.output()}")
            try:
                with session_scope() as session:
                    if any(
                        str(self.process.pid) in w.hostname for w in live_workers(session, within_seconds=5)
                    ):
                        return
            except Exception:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"worker not ready:\n{self.output()}")

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")[-6000:]

    def stop(self, sig: int = 15) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


@pytest.fixture
def app_env(service_env, monkeypatch):  # type: ignore[no-untyped-def]
    """app_env(NAME=value, ...): more settings for this test's service (None unsets one)."""

    def configure(**extra: str | None) -> None:
        apply_env(monkeypatch, service_env, **extra)

    return configure


@pytest.fixture
def client(service_env) -> Iterator:  # type: ignore[no-untyped-def]
    """The app in-process, without an API key (tests send theirs); modules with their own `client`
    fixture override this one."""
    from fastapi.testclient import TestClient

    from app.main import create_app

    with TestClient(create_app(), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator:
    workers: list[WorkerProcess] = []

    def start(env: dict[str, str], name: str = "w1", ready: bool = True) -> WorkerProcess:
        from app.core.config import get_settings
        from app.core.migrate import upgrade_database

        get_settings().ensure_dirs()
        upgrade_database(get_settings().sqlalchemy_url)
        worker = WorkerProcess(env, tmp_path / f"{name}.log", name)
        workers.append(worker)
        if ready:
            worker.wait_ready()
        return worker

    yield start
    for worker in workers:
        worker.stop()


def wait_for_jobs(
    client, job_ids: list[str], timeout: float = 120, headers: dict | None = None
) -> list[dict]:  # type: ignore[no-untyped-def]
    """Poll GET /v1/jobs/{id} until every job is succeeded or failed."""
    deadline = time.monotonic() + timeout
    while True:
        jobs = [client.get(f"/v1/jobs/{job_id}", headers=headers or {}).json() for job_id in job_ids]
        if all(job["status"] in ("succeeded", "failed") for job in jobs):
            return jobs
        if time.monotonic() > deadline:
            raise TimeoutError(f"jobs not finished: {[(j['id'], j['status']) for j in jobs]}")
        time.sleep(0.3)


@pytest.fixture
def python() -> str:
    return sys.executable
