"""`kill -TERM` of `enhancer serve` (systemd, supervisors, docker stop) stops the API *and* its worker.

uvicorn re-raises the signal after its own shutdown; with Python's default handler that killed
`serve` before it could stop the worker, which was left running with the model loaded. Real
processes here: `enhancer serve` with the tiny model, its Celery worker, a real HTTP request.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import API_HEADERS

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the worker process through /proc")
def test_sigterm_stops_serve_and_its_worker_and_loses_no_job(
    service_env: dict[str, str], seed_items: list[dict], tmp_path: Path
) -> None:
    port = _free_port()
    log = (tmp_path / "serve.log").open("wb")
    serve = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
        env={**os.environ, **service_env},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                ready = httpx.get(f"{base}/readyz", timeout=2)
                if ready.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert serve.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, "serve never became ready"
            time.sleep(0.5)
        workers = _children(serve.pid)
        assert workers, "serve started no worker"
        posted = [
            httpx.post(f"{base}/v1/enhance", json=item, headers=API_HEADERS, timeout=10).json()["jobs"][0][
                "id"
            ]
            for item in seed_items[:2]
        ]

        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=90) == 128 + signal.SIGTERM
        for pid in workers:
            assert not _alive(pid), f"worker {pid} still running after serve stopped"
    finally:
        if serve.poll() is None:
            serve.kill()
        log.close()

    from app.core.db import read_session_scope, reset_caches
    from app.models import Job

    reset_caches()
    with read_session_scope() as session:
        statuses = {job_id: session.get(Job, job_id).status for job_id in posted}  # type: ignore[union-attr]
    # Finished by the warm shutdown, or still queued for the next start: never stuck or lost.
    assert set(statuses.values()) <= {"succeeded", "queued"}, statuses
