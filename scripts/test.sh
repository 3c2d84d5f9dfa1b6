#!/usr/bin/env bash
# Sets up everything the tests need on a fresh Debian machine, then runs them.
#   ./scripts/test.sh            -> the whole suite
#   ./scripts/test.sh -k api     -> arguments go to pytest
# A thin wrapper: scripts/quickstart.py does the work (.venv, pip install -e '.[dev]' (torch is pinned:
# pip, not uv/poetry), scripts/install-system-deps.sh, pytest), the same script Windows runs
# (py -3.12 scripts\quickstart.py test). PYTHON picks the interpreter (3.11 or 3.12).
set -euo pipefail
cd "$(dirname "$0")/.."

exec "${PYTHON:-python3}" scripts/quickstart.py test "$@"
