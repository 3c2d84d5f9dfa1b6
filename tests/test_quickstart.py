"""scripts/quickstart.py, the cross-platform bootstrap behind scripts/serve.sh and scripts/test.sh.

The path, version and stamp logic are pure functions taking the platform, so the Windows branch is
checked here too; the end-to-end runs use a tmp copy of the script with a fake venv interpreter
(a shell script) so that they exercise the real subprocess/exec path without pip installing anything.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "scripts" / "quickstart.py"

_spec = importlib.util.spec_from_file_location("quickstart", SCRIPT)
assert _spec is not None and _spec.loader is not None
qs = importlib.util.module_from_spec(_spec)
sys.modules["quickstart"] = qs  # dataclasses resolve the module by name
_spec.loader.exec_module(qs)

posix_only = pytest.mark.skipif(os.name != "posix", reason="the fake venv interpreter is a shell script")


# --- pure logic ---------------------------------------------------------------------------------


def test_venv_python_windows_and_posix(tmp_path: Path) -> None:
    venv = tmp_path / ".venv"
    assert qs.venv_python(venv, "nt") == venv / "Scripts" / "python.exe"
    assert qs.venv_python(venv, "posix") == venv / "bin" / "python"


def test_requires_python_is_read_from_pyproject() -> None:
    lower, upper = qs.parse_requires_python((REPO_ROOT / "pyproject.toml").read_text())
    assert (lower, upper) == ((3, 11), (3, 13))
    with pytest.raises(qs.QuickstartError, match="requires-python"):
        qs.parse_requires_python('[project]\nname = "x"\n')


@pytest.mark.parametrize("version", [(3, 11, 0), (3, 11, 7), (3, 12, 9)])
def test_supported_versions_pass(version: tuple[int, int, int]) -> None:
    assert qs.version_error(version, (3, 11), (3, 13), "posix", "/usr/bin/python3") is None


@pytest.mark.parametrize("version", [(3, 10, 12), (3, 13, 1), (2, 7, 18), (4, 0, 0)])
def test_unsupported_versions_get_one_clear_line(version: tuple[int, int, int]) -> None:
    posix = qs.version_error(version, (3, 11), (3, 13), "posix", "/usr/bin/python3")
    windows = qs.version_error(version, (3, 11), (3, 13), "nt", r"C:\Python313\python.exe")
    shown = ".".join(map(str, version))
    assert posix is not None and windows is not None
    for message in (posix, windows):
        assert "\n" not in message
        assert f"this is Python {shown}" in message
        assert "needs Python >=3.11,<3.13" in message
    assert "python3.12 scripts/quickstart.py" in posix
    assert r"py -3.12 scripts\quickstart.py" in windows
    assert r"C:\Python313\python.exe" in windows


def test_pyvenv_version() -> None:
    assert qs.pyvenv_version("home = /usr/bin\nversion = 3.11.7\n") == (3, 11, 7)
    assert qs.pyvenv_version("home = C:\\Python312\nversion_info = 3.12.4.final.0\n") == (3, 12, 4)
    assert qs.pyvenv_version("home = /usr/bin\n") is None


def test_install_target() -> None:
    assert qs.install_target(()) == "."
    assert qs.install_target(("dev",)) == ".[dev]"


def test_stamp_skips_only_when_pyproject_and_extras_match(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "x"\ndependencies = ["torch==2.13.0"]\n')
    digest = qs.pyproject_digest(pyproject.read_bytes())
    assert qs.needs_install(None, digest, ("dev",))

    stamp = qs.new_stamp(None, digest, ("dev",))
    assert not qs.needs_install(stamp, digest, ("dev",))
    assert not qs.needs_install(stamp, digest, ())  # serve after test: dev already includes the base

    pyproject.write_text('[project]\nname = "x"\ndependencies = ["torch==2.13.0", "httpx"]\n')
    changed = qs.pyproject_digest(pyproject.read_bytes())
    assert changed != digest
    assert qs.needs_install(stamp, changed, ())
    assert qs.needs_install(stamp, changed, ("dev",))

    base_only = qs.new_stamp(None, digest, ())
    assert qs.needs_install(base_only, digest, ("dev",))  # test after serve: dev extras missing
    assert qs.new_stamp(stamp, digest, ())["extras"] == ["dev"]  # same pyproject: dev still counts
    assert qs.new_stamp(stamp, changed, ())["extras"] == []  # changed pyproject: it does not


def test_read_stamp_tolerates_missing_or_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "stamp.json"
    assert qs.read_stamp(path) is None
    path.write_text("{not json")
    assert qs.read_stamp(path) is None
    path.write_text("[1, 2]")
    assert qs.read_stamp(path) is None
    path.write_text(json.dumps({"pyproject_sha256": "ab", "extras": ["dev"]}))
    assert qs.read_stamp(path) == {"pyproject_sha256": "ab", "extras": ["dev"]}


def test_system_deps_only_on_linux() -> None:
    step = qs.system_deps_step("linux")
    assert step is not None and step.argv == ["bash", "scripts/install-system-deps.sh"]
    assert qs.system_deps_step("win32") is None
    assert qs.system_deps_step("darwin") is None


def _repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(SCRIPT, repo / "scripts" / "quickstart.py")
    shutil.copy(REPO_ROOT / "pyproject.toml", repo / "pyproject.toml")
    return repo


def test_the_install_uses_the_tested_versions_and_a_new_pin_reinstalls(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    shutil.copy(REPO_ROOT / "constraints.txt", repo / "constraints.txt")
    steps, _ = qs.plan("test", [], repo=repo, os_name="posix", platform="linux", python="python3")
    install = next(step for step in steps if "install the project" in step.name)
    assert install.argv[-4:] == ["-c", "constraints.txt", "-e", ".[dev]"]
    (repo / ".venv" / "bin").mkdir(parents=True)
    (repo / ".venv" / "bin" / "python").touch()
    (repo / ".venv" / qs.STAMP_NAME).write_text(json.dumps(install.stamp))
    steps, notes = qs.plan("test", [], repo=repo, os_name="posix", platform="linux", python="python3")
    assert not any("install the project" in step.name for step in steps) and notes  # installed already
    with (repo / "constraints.txt").open("a") as pins:
        pins.write("rapidfuzz==3.0.0\n")
    steps, _ = qs.plan("test", [], repo=repo, os_name="posix", platform="linux", python="python3")
    assert any("install the project" in step.name for step in steps)  # a changed pin: install again


def test_the_constraints_pin_what_pyproject_asks_for() -> None:
    """constraints.txt holds every direct dependency, at a version its pyproject bound allows."""
    import re
    import tomllib

    from packaging.requirements import Requirement

    pinned = dict(
        line.split("==", 1) for line in (REPO_ROOT / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )  # fmt: skip
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    for spec in [*project["dependencies"], *project["optional-dependencies"]["dev"]]:
        requirement = Requirement(spec)
        if requirement.name == "torch":  # pinned in pyproject itself (a local +cpu build here)
            continue
        names = {k.lower().replace("_", "-"): v for k, v in pinned.items()}
        version = names.get(re.sub(r"[_.]", "-", requirement.name.lower()))
        assert version is not None, f"{requirement.name} is not in constraints.txt"
        assert requirement.specifier.contains(version), f"{requirement.name}=={version} breaks {requirement}"


def test_plan_on_windows(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    steps, notes = qs.plan(
        "test", ["-k", "api"], repo=repo, os_name="nt", platform="win32", python=r"C:\Py312\python.exe"
    )
    vpython = str(repo / ".venv" / "Scripts" / "python.exe")
    assert [step.argv for step in steps] == [
        [r"C:\Py312\python.exe", "-m", "venv", str(repo / ".venv")],
        [vpython, "-m", "pip", "install", "--quiet", "--upgrade", "pip"],
        [vpython, "-m", "pip", "install", "--quiet", "-e", ".[dev]"],
        [vpython, "-m", "pytest", "-k", "api"],
    ]
    assert [step.final for step in steps] == [False, False, False, True]
    assert any("install-system-deps.sh" in note and "ENHANCER_CHROMIUM" in note for note in notes)
    serve, _ = qs.plan("serve", ["--port", "9"], repo=repo, os_name="nt", platform="win32", python="py")
    assert serve[-1].argv == [vpython, "-m", "app.cli", "serve", "--port", "9"]
    assert serve[2].argv[-2:] == ["-e", "."]


def test_plan_refuses_a_venv_without_its_interpreter(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    (repo / ".venv" / "bin").mkdir(parents=True)  # e.g. a Linux venv, seen from Windows
    (repo / ".venv" / "bin" / "python").write_text("")
    qs.plan("serve", [], repo=repo, os_name="posix", platform="linux", python="python3")
    with pytest.raises(qs.QuickstartError, match=r"has no Scripts.python\.exe.*delete it"):
        qs.plan("serve", [], repo=repo, os_name="nt", platform="win32", python="py")


def test_venv_made_with_an_unsupported_python_is_refused(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    (repo / ".venv").mkdir()
    (repo / ".venv" / "pyvenv.cfg").write_text("home = /usr/bin\nversion = 3.13.1\n")
    with pytest.raises(qs.QuickstartError, match=r"made with Python 3\.13\.1.*delete it"):
        qs.check_versions(repo, "posix")
    (repo / ".venv" / "pyvenv.cfg").write_text("home = /usr/bin\nversion = 3.12.3\n")
    qs.check_versions(repo, "posix")


def test_failed_step_removes_the_stamp_and_reports_the_code(tmp_path: Path) -> None:
    (tmp_path / ".venv").mkdir()
    stamp_path = tmp_path / ".venv" / qs.STAMP_NAME
    stamp_path.write_text(json.dumps({"pyproject_sha256": "old", "extras": []}))
    failing = qs.Step("install the project", [sys.executable, "-c", "raise SystemExit(3)"], stamp={"x": 1})
    expected = r"^step 'install the project' failed with exit code 3$"
    with pytest.raises(qs.QuickstartError, match=expected) as info:
        qs.execute([failing], [], repo=tmp_path, os_name=os.name, dry_run=False)
    assert info.value.code == 3
    assert not stamp_path.exists()


def test_failed_venv_creation_leaves_no_half_made_venv(tmp_path: Path) -> None:
    venv = tmp_path / ".venv"
    make_then_fail = f"import os; os.makedirs({str(venv / 'bin')!r}); raise SystemExit(1)"
    step = qs.Step(
        "create the virtual environment", [sys.executable, "-c", make_then_fail], remove_on_failure=venv
    )
    with pytest.raises(qs.QuickstartError, match="'create the virtual environment' failed with exit code 1"):
        qs.execute([step], [], repo=tmp_path, os_name=os.name, dry_run=False)
    assert not venv.exists()  # the next run creates it again instead of tripping over it


# --- the script itself, on a tmp copy -------------------------------------------------------------


def _quickstart(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != "PYTHON"}
    return subprocess.run(
        [sys.executable, str(repo / "scripts" / "quickstart.py"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def _steps(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("quickstart: ")]


def test_dry_run_prints_the_steps_and_runs_nothing(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    result = _quickstart(repo, "--dry-run", "test", "-q", "-k", "api")
    assert result.returncode == 0, result.stderr
    venv, vpython = repo / ".venv", repo / ".venv" / "bin" / "python"
    lines = _steps(result.stdout)
    if sys.platform.startswith("linux"):
        assert lines == [
            f"quickstart: [dry-run] create the virtual environment: {sys.executable} -m venv {venv}",
            f"quickstart: [dry-run] upgrade pip: {vpython} -m pip install --quiet --upgrade pip",
            f"quickstart: [dry-run] install the project (pip install -e .[dev]): "
            f"{vpython} -m pip install --quiet -e '.[dev]'",
            "quickstart: [dry-run] install system packages: bash scripts/install-system-deps.sh",
            f"quickstart: [dry-run] run the tests (pytest): {vpython} -m pytest -q -k api",
        ]
    assert not venv.exists()


def _fake_venv(repo: Path, exit_codes: str) -> Path:
    """A venv whose python logs its arguments and exits with $FAKE_RC_<what> (pip / pytest / serve)."""
    bindir = repo / ".venv" / "bin"
    bindir.mkdir(parents=True)
    log = repo / "calls.log"
    python = bindir / "python"
    python.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> "{log}"\n'
        f"{exit_codes}\n"
        'case "$*" in *"-m pip "*) exit "${FAKE_RC_PIP:-0}";; esac\n'
        'echo "fake python ran: $*"\n'
        'echo "fake python pid=$$"\n'
        'exit "${FAKE_RC_FINAL:-0}"\n'
    )
    python.chmod(0o755)
    deps = repo / "scripts" / "install-system-deps.sh"
    deps.write_text(f'echo "system deps" >> "{log}"\n')
    return log


@posix_only
def test_end_to_end_installs_once_then_skips_pip_and_forwards_the_exit_code(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    log = _fake_venv(repo, "FAKE_RC_FINAL=7")
    first = _quickstart(repo, "test", "-q", "tests/test_x.py")
    assert first.returncode == 7, first.stderr  # pytest's exit code, through exec
    assert "fake python ran: -m pytest -q tests/test_x.py" in first.stdout
    assert log.read_text().splitlines() == [
        "-m pip install --quiet --upgrade pip",
        "-m pip install --quiet -e .[dev]",
        "system deps",
        "-m pytest -q tests/test_x.py",
    ]
    stamp = json.loads((repo / ".venv" / qs.STAMP_NAME).read_text())
    assert stamp["extras"] == ["dev"]

    log.write_text("")
    second = _quickstart(repo, "serve", "--port", "9")
    assert second.returncode == 7
    assert "pip install skipped" in second.stdout
    assert log.read_text().splitlines() == ["-m app.cli serve --port 9"]

    with (repo / "pyproject.toml").open("a") as handle:
        handle.write("\n# changed\n")
    log.write_text("")
    third = _quickstart(repo, "serve")
    assert "pip install skipped" not in third.stdout
    assert log.read_text().splitlines() == [
        "-m pip install --quiet --upgrade pip",
        "-m pip install --quiet -e .",
        "-m app.cli serve",
    ]


@posix_only
def test_serve_replaces_the_quickstart_process(tmp_path: Path) -> None:
    """os.execv: the service has quickstart's PID, so Ctrl-C/SIGTERM sent to it reach the service."""
    repo = _repo(tmp_path)
    _fake_venv(repo, "")
    digest = qs.pyproject_digest((repo / "pyproject.toml").read_bytes())
    (repo / ".venv" / qs.STAMP_NAME).write_text(json.dumps(qs.new_stamp(None, digest, ())))
    process = subprocess.Popen(
        [sys.executable, str(repo / "scripts" / "quickstart.py"), "serve"], stdout=subprocess.PIPE, text=True
    )
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 0
    assert f"fake python pid={process.pid}" in output


@posix_only
def test_end_to_end_failed_step_is_one_line_without_traceback(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    _fake_venv(repo, "FAKE_RC_PIP=5")
    result = _quickstart(repo, "test")
    assert result.returncode == 5
    assert result.stderr.strip() == "quickstart: error: step 'upgrade pip' failed with exit code 5"
    assert "Traceback" not in result.stdout + result.stderr
    assert not (repo / ".venv" / qs.STAMP_NAME).exists()


def test_usage_errors(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    assert _quickstart(repo).returncode == 2
    unknown = _quickstart(repo, "deploy")
    assert unknown.returncode == 2 and "unknown subcommand 'deploy'" in unknown.stderr
    assert _quickstart(repo, "--help").returncode == 0


def test_wrappers_call_quickstart() -> None:
    for name, command in (("serve.sh", "serve"), ("test.sh", "test")):
        text = (REPO_ROOT / "scripts" / name).read_text()
        assert f'exec "${{PYTHON:-python3}}" scripts/quickstart.py {command} "$@"' in text
        assert "pip install" not in text.split("set -euo pipefail", 1)[1]
