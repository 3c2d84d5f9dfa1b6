"""Real processes for fault tests: a private redis-server, the API under uvicorn, and the invariants.

The private Redis (its own port, no persistence) can be killed and restarted without disturbing the
shared Redis other tests use. The API runs as `uvicorn app.main:create_app --factory`, so it can be
SIGKILLed mid-request and started again on the same port and data.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.conftest import API_HEADERS, REPO_ROOT

# Short timers so faults heal within seconds (see docs/reliability.md).
FAST_RECOVERY_ENV = {
    "ENHANCER_JOB_LEASE_SECONDS": "5",
    "ENHANCER_REQUEUE_AFTER_SECONDS": "2",
    "ENHANCER_RECONCILE_SECONDS": "1",
    "ENHANCER_HEARTBEAT_SECONDS": "0.5",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """`redis-server` on a free port, without persistence: a restart loses every queued message."""

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"redis-server on {self.port} did not start")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def queued_messages(self) -> int:
        import redis

        return int(redis.Redis.from_url(self.url).llen("enhance"))


class ApiServer:
    """The API as a real uvicorn process on a fixed port (so a restart keeps the address)."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.port = free_port()
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> ApiServer:
        log = self.log_path.open("ab")
        command = [sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory"]
        command += ["--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"]
        self.process = subprocess.Popen(
            command, cwd=REPO_ROOT, env={**os.environ, **self.env}, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"API exited with {self.process.returncode}:\n{self.output()}")
            try:
                if httpx.get(f"{self.base_url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise TimeoutError(f"API not up:\n{self.output()}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=20)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:] if self.log_path.exists() else ""

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, headers=API_HEADERS, **kwargs)  # type: ignore[arg-type]


@dataclass
class Ledger:
    """What the database says about every job, read directly (not through the API)."""

    statuses: Counter[str]
    records_per_job: dict[str, int]
    jobs_per_item: dict[str, int]
    attempts: dict[str, int]
    job_status: dict[str, str]
    errors: dict[str, str | None]
    claimed_by: dict[str, str]  # job id -> pid of the worker of its last claim


def read_ledger() -> Ledger:
    from sqlalchemy import func, select

    from app.core.db import session_scope
    from app.models import Job, Record

    with session_scope() as session:
        jobs = session.execute(
            select(Job.id, Job.item_id, Job.status, Job.attempts, Job.error, Job.worker)
        ).all()
        records = dict(session.execute(select(Record.job_id, func.count()).group_by(Record.job_id)).all())
    return Ledger(
        statuses=Counter(job.status for job in jobs),
        records_per_job={job.id: int(records.get(job.id, 0)) for job in jobs},
        jobs_per_item=dict(Counter(job.item_id for job in jobs)),
        attempts={job.id: job.attempts for job in jobs},
        job_status={job.id: job.status for job in jobs},
        errors={job.id: job.error for job in jobs},
        claimed_by={
            job.id: job.worker.split(":")[1] for job in jobs if job.worker and job.worker.count(":") >= 2
        },
    )


def wait_until_settled(expected_jobs: int, timeout: float) -> Ledger:
    """Until every job is succeeded or failed (none queued or running), or fail with the ledger."""
    deadline = time.monotonic() + timeout
    while True:
        ledger = read_ledger()
        total = sum(ledger.statuses.values())
        if total >= expected_jobs and ledger.statuses["queued"] == ledger.statuses["running"] == 0:
            return ledger
        if time.monotonic() > deadline:
            raise TimeoutError(f"jobs not settled after {timeout} s: {dict(ledger.statuses)}")
        time.sleep(0.25)


def assert_nothing_lost_or_duplicated(ledger: Ledger, expected_jobs: int) -> None:
    """Every job ended; one record per succeeded job, none for failed ones; one job per item."""
    assert sum(ledger.statuses.values()) == expected_jobs, dict(ledger.statuses)
    assert set(ledger.statuses) <= {"succeeded", "failed"}, dict(ledger.statuses)
    for job_id, status in ledger.job_status.items():
        expected = 1 if status == "succeeded" else 0
        assert ledger.records_per_job[job_id] == expected, (job_id, status, ledger.records_per_job[job_id])
    assert set(ledger.jobs_per_item.values()) == {1}, "an item got more than one job"


def running_jobs() -> dict[str, str]:
    """Running job id -> pid of the worker holding its claim (claim token = host:pid:nonce)."""
    from sqlalchemy import select

    from app.core.db import session_scope
    from app.models import Job

    with session_scope() as session:
        rows = session.execute(select(Job.id, Job.worker).where(Job.status == "running")).all()
    return {job_id: token.split(":")[1] for job_id, token in rows if token and token.count(":") >= 2}
