"""Pools: a worker runs its tasks in its own process (solo or threads); prefork is refused, clearly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.cli import build_parser
from worker.pools import PREFORK_REFUSED

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_a_celery_worker_started_with_the_prefork_pool_exits_saying_why(tmp_path: Path) -> None:
    env = {**os.environ, "ENHANCER_DATA_DIR": str(tmp_path)}
    env.pop("BROKER_URL", None)
    command = [sys.executable, "-m", "celery", "-A", "worker.celery_app:celery_app", "worker",
               "--pool=prefork", "--concurrency=2", "-Q", "enhance"]  # fmt: skip
    done = subprocess.run(command, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert PREFORK_REFUSED in done.stderr
    assert "ForkPoolWorker" not in done.stderr + done.stdout  # refused before any child started


def test_enhancer_worker_offers_only_the_in_process_pools(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    assert parser.parse_args(["worker", "--pool", "threads"]).pool == "threads"
    assert parser.parse_args(["worker"]).pool == "solo"
    with pytest.raises(SystemExit) as exited:
        parser.parse_args(["worker", "--pool", "prefork"])
    assert exited.value.code == 2
    assert "invalid choice: 'prefork'" in capsys.readouterr().err
