#!/usr/bin/env python3
"""Set up the project's virtual environment, then start the service or run the tests.

The one bootstrap for every platform (standard library only, Python 3.11 or 3.12):

    python scripts/quickstart.py serve [--host H] [--port N] [--data-dir DIR]   -> enhancer serve
    python scripts/quickstart.py test [pytest args...]                          -> pytest
    python scripts/quickstart.py --dry-run test -q      -> print the steps, run nothing
    python scripts/quickstart.py --reinstall serve      -> pip install even if nothing changed

On Windows: `py -3.12 scripts\\quickstart.py serve`. On Linux/macOS scripts/serve.sh and
scripts/test.sh call this file.

Steps: create <repo>/.venv (venv module, with pip) when missing; pip install the project into it
(`-e .` for serve, `-e .[dev]` for test), skipped when .venv/quickstart-stamp.json says the same
pyproject.toml was already installed with those extras; test: on Linux
`bash scripts/install-system-deps.sh` (Debian's chromium for the browser test); then hand over to
`enhancer serve` / pytest in the venv. On POSIX the hand-over is os.execv, so Ctrl-C and SIGTERM
reach the service directly and its exit code is this script's.
"""

# No 3.10+ syntax at run time: an older interpreter must get as far as the version message.
from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
STAMP_NAME = "quickstart-stamp.json"
COMMANDS = {"serve": (), "test": ("dev",)}  # subcommand -> the project's extras it installs
USAGE = (
    "usage: python scripts/quickstart.py [--dry-run] [--reinstall] serve [enhancer serve args...]\n"
    "       python scripts/quickstart.py [--dry-run] [--reinstall] test [pytest args...]"
)


class QuickstartError(Exception):
    """A failure reported as one line, with the exit code this script ends with."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Step:
    name: str
    argv: list[str]
    stamp: dict | None = None  # written to the stamp file once this step succeeds
    remove_on_failure: Path | None = None  # a half-made venv, so the next run starts over
    final: bool = False  # the hand-over: exec (POSIX) or run and forward the exit code (Windows)


# ---------------------------------------------------------------------------------------------
# Pure logic (unit-tested in tests/test_quickstart.py, platform passed in)


def parse_requires_python(pyproject_text: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """(lowest supported, first unsupported) from `requires-python = ">=3.11,<3.13"`."""
    match = re.search(r'^requires-python\s*=\s*"([^"]*)"', pyproject_text, re.MULTILINE)
    bounds = dict(re.findall(r"(>=|<)\s*(\d+\.\d+)\b", match.group(1))) if match else {}
    if ">=" not in bounds or "<" not in bounds:
        raise QuickstartError("cannot read requires-python ('>=X.Y,<X.Y') from pyproject.toml")
    lower, upper = (tuple(int(part) for part in bounds[key].split(".")) for key in (">=", "<"))
    return lower, upper  # type: ignore[return-value]


def version_error(
    version: tuple[int, ...], lower: tuple[int, int], upper: tuple[int, int], os_name: str, executable: str
) -> str | None:
    """The message for an interpreter outside [lower, upper), else None."""
    if lower <= tuple(version[:2]) < upper:
        return None
    spec = f">={lower[0]}.{lower[1]},<{upper[0]}.{upper[1]}"
    same_major = upper[0] == lower[0] and upper[1] > lower[1]
    newest = f"{upper[0]}.{upper[1] - 1}" if same_major else f"{lower[0]}.{lower[1]}"
    hint = (
        f"py -{newest} scripts\\quickstart.py ..."
        if os_name == "nt"
        else f"python{newest} scripts/quickstart.py ..."
    )
    running = ".".join(str(part) for part in version[:3])
    return (
        f"this is Python {running} ({executable}); newsletter-enhancer needs Python {spec} "
        f"(requires-python in pyproject.toml): run this script with a supported one, e.g. {hint}"
    )


def venv_python(venv_dir: Path, os_name: str) -> Path:
    """The venv's interpreter: Scripts\\python.exe on Windows ('nt'), bin/python elsewhere."""
    return venv_dir / "Scripts" / "python.exe" if os_name == "nt" else venv_dir / "bin" / "python"


def pyvenv_version(pyvenv_cfg_text: str) -> tuple[int, ...] | None:
    """The Python version a venv was made with, from its pyvenv.cfg (None when it does not say)."""
    match = re.search(r"^version(?:_info)?\s*=\s*(\d+)\.(\d+)(?:\.(\d+))?", pyvenv_cfg_text, re.MULTILINE)
    return tuple(int(part) for part in match.groups() if part is not None) if match else None


CONSTRAINTS_NAME = "constraints.txt"


def install_target(extras: tuple[str, ...] | list[str]) -> str:
    return f".[{','.join(sorted(extras))}]" if extras else "."


def pyproject_digest(pyproject_bytes: bytes) -> str:
    return hashlib.sha256(pyproject_bytes).hexdigest()


def read_stamp(stamp_path: Path) -> dict | None:
    try:
        stamp = json.loads(stamp_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return stamp if isinstance(stamp, dict) else None


def needs_install(stamp: dict | None, digest: str, extras: tuple[str, ...] | list[str]) -> bool:
    """True unless the stamp records this pyproject.toml installed with (at least) these extras."""
    if not stamp or stamp.get("pyproject_sha256") != digest:
        return True
    return not set(extras) <= set(stamp.get("extras") or [])


def new_stamp(stamp: dict | None, digest: str, extras: tuple[str, ...] | list[str]) -> dict:
    """The stamp after installing `extras`: extras installed earlier from the same pyproject still count."""
    kept = set(stamp.get("extras") or []) if stamp and stamp.get("pyproject_sha256") == digest else set()
    return {"pyproject_sha256": digest, "extras": sorted(kept | set(extras))}


def system_deps_step(platform: str) -> Step | None:
    """Linux: Debian's chromium for the browser test. Elsewhere (no apt): None, install it by hand."""
    if platform.startswith("linux"):
        return Step("install system packages", ["bash", "scripts/install-system-deps.sh"])
    return None


def format_command(argv: list[str], os_name: str) -> str:
    return subprocess.list2cmdline(argv) if os_name == "nt" else shlex.join(argv)


def plan(
    command: str,
    args: list[str],
    *,
    repo: Path,
    os_name: str,
    platform: str,
    python: str,
    reinstall: bool = False,
) -> tuple[list[Step], list[str]]:
    """The steps for `command` (and notes to print), from the state of repo/.venv. Runs nothing."""
    extras = COMMANDS[command]
    venv_dir = repo / ".venv"
    vpython = venv_python(venv_dir, os_name)
    steps: list[Step] = []
    notes: list[str] = []
    if not venv_dir.exists():
        create = [python, "-m", "venv", str(venv_dir)]
        steps.append(Step("create the virtual environment", create, remove_on_failure=venv_dir))
        stamp = None
    elif not vpython.exists():
        raise QuickstartError(
            f"{venv_dir} exists but has no {vpython.relative_to(venv_dir)} (made on another OS, or broken): "
            "delete it and run again"
        )
    else:
        stamp = read_stamp(venv_dir / STAMP_NAME)
    constraints = repo / CONSTRAINTS_NAME
    pinned = constraints.read_bytes() if constraints.exists() else b""
    digest = pyproject_digest((repo / "pyproject.toml").read_bytes() + pinned)
    if reinstall or needs_install(stamp, digest, extras):
        pip = [str(vpython), "-m", "pip", "install", "--quiet"]
        # The versions the suite passed with (constraints.txt): a fresh machine gets what CI tested.
        pinned_args = ["-c", CONSTRAINTS_NAME] if constraints.exists() else []
        steps.append(Step("upgrade pip", [*pip, "--upgrade", "pip"]))
        # torch is pinned in pyproject.toml (2.13.0, CPU build); install with pip, not uv/poetry.
        steps.append(
            Step(
                f"install the project (pip install -e {install_target(extras)})",
                [*pip, *pinned_args, "-e", install_target(extras)],
                stamp=new_stamp(stamp, digest, extras),
            )
        )
    else:
        notes.append(
            f"pip install skipped: .venv already has -e {install_target(extras)} from this pyproject.toml "
            f"(.venv/{STAMP_NAME}; --reinstall forces it)"
        )
    if command == "serve":
        steps.append(
            Step("start the service (enhancer serve)", [str(vpython), "-m", "app.cli", "serve", *args])
        )
    else:
        deps = system_deps_step(platform)
        if deps is not None:
            steps.append(deps)
        else:
            notes.append(
                "skipping scripts/install-system-deps.sh (Debian/apt only): for the review-page browser test "
                "install Chromium or Chrome by hand and set ENHANCER_CHROMIUM to its executable"
            )
        steps.append(Step("run the tests (pytest)", [str(vpython), "-m", "pytest", *args]))
    steps[-1].final = True
    return steps, notes


# ---------------------------------------------------------------------------------------------
# Execution


def _say(message: str) -> None:
    print(f"quickstart: {message}", flush=True)


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode  # killed by signal N -> 128+N


def _run(step: Step) -> int:
    try:
        return subprocess.call(step.argv)
    except OSError as error:
        raise QuickstartError(f"step '{step.name}' could not start {step.argv[0]}: {error}") from None


def _hand_over(step: Step, os_name: str) -> int:
    if os_name != "nt":
        # The service/pytest replaces this process: signals reach it directly, its exit code is ours.
        try:
            os.execv(step.argv[0], step.argv)
        except OSError as error:
            raise QuickstartError(f"step '{step.name}' could not start {step.argv[0]}: {error}") from None
    # Windows has no exec that keeps the console: run it as a child and wait. Ctrl-C goes to the
    # whole console group, so the child gets it itself; this process only keeps waiting for it.
    try:
        child = subprocess.Popen(step.argv)
    except OSError as error:
        raise QuickstartError(f"step '{step.name}' could not start {step.argv[0]}: {error}") from None
    while True:
        try:
            return _exit_code(child.wait())
        except KeyboardInterrupt:
            continue


def execute(steps: list[Step], notes: list[str], *, repo: Path, os_name: str, dry_run: bool) -> int:
    for note in notes:
        _say(note)
    stamp_path = repo / ".venv" / STAMP_NAME
    for step in steps:
        _say(f"{'[dry-run] ' if dry_run else ''}{step.name}: {format_command(step.argv, os_name)}")
        if dry_run:
            continue
        if step.final:
            return _hand_over(step, os_name)
        if step.stamp is not None:
            stamp_path.unlink(missing_ok=True)  # a failed install must not leave an old stamp saying "done"
        code = _exit_code(_run(step))
        if code != 0:
            if step.remove_on_failure is not None:
                shutil.rmtree(step.remove_on_failure, ignore_errors=True)
            raise QuickstartError(f"step '{step.name}' failed with exit code {code}", code)
        if step.stamp is not None:
            stamp_path.write_text(json.dumps(step.stamp, indent=2) + "\n", encoding="utf-8")
    return 0


def check_versions(repo: Path, os_name: str) -> None:
    try:
        pyproject_text = (repo / "pyproject.toml").read_text(encoding="utf-8")
    except OSError as error:
        raise QuickstartError(f"cannot read {repo / 'pyproject.toml'}: {error}") from None
    lower, upper = parse_requires_python(pyproject_text)
    message = version_error(sys.version_info, lower, upper, os_name, sys.executable)
    if message:
        raise QuickstartError(message)
    try:
        made_with = pyvenv_version((repo / ".venv" / "pyvenv.cfg").read_text(encoding="utf-8"))
    except OSError:
        return
    if made_with is not None and not lower <= made_with[:2] < upper:
        raise QuickstartError(
            f"{repo / '.venv'} was made with Python {'.'.join(map(str, made_with))}, outside "
            f">={lower[0]}.{lower[1]},<{upper[0]}.{upper[1]}: delete it and run again"
        )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    options = set()
    while argv and argv[0].startswith("-"):  # options before the subcommand; the rest goes through untouched
        options.add(argv.pop(0))
    if options & {"-h", "--help"}:
        print(USAGE)
        return 0
    unknown = options - {"--dry-run", "--reinstall"}
    if unknown or not argv or argv[0] not in COMMANDS:
        reason = f"unknown option {sorted(unknown)[0]}" if unknown else "no subcommand" if not argv else ""
        print(f"quickstart: {reason or f'unknown subcommand {argv[0]!r}'}\n{USAGE}", file=sys.stderr)
        return 2
    command, args = argv[0], argv[1:]
    try:
        check_versions(REPO_ROOT, os.name)
        steps, notes = plan(
            command,
            args,
            repo=REPO_ROOT,
            os_name=os.name,
            platform=sys.platform,
            python=sys.executable,
            reinstall="--reinstall" in options,
        )
        os.chdir(REPO_ROOT)  # relative paths (., scripts/, ./data) are the repo's, as in the old scripts
        return execute(steps, notes, repo=REPO_ROOT, os_name=os.name, dry_run="--dry-run" in options)
    except QuickstartError as error:
        print(f"quickstart: error: {error}", file=sys.stderr, flush=True)
        return error.code
    except KeyboardInterrupt:
        print("quickstart: interrupted", file=sys.stderr, flush=True)
        return 130


if __name__ == "__main__":
    sys.exit(main())
