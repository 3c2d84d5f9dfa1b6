"""CLI commands print their own output, not Alembic's INFO lines (shown with --verbose)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def _migrate(tmp_path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "ENHANCER_LOG_FORMAT")}
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *flags, "migrate", "--data-dir", str(tmp_path / "data")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )


def test_migration_logs_are_quiet_unless_verbose(tmp_path: Path) -> None:
    quiet = _migrate(tmp_path)
    assert "database is at the latest migration" in quiet.stdout
    assert "alembic" not in quiet.stderr, quiet.stderr
    verbose = _migrate(tmp_path / "again", "--verbose")
    assert "alembic.runtime.migration" in verbose.stderr
