#!/usr/bin/env bash
# Sets up everything the tests need on a fresh Debian machine, then runs them.
#   ./scripts/test.sh            -> the whole suite
#   ./scripts/test.sh -k api     -> arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# torch is pinned in pyproject.toml (2.13.0, CPU build); install with pip, not uv/poetry.
.venv/bin/python -m pip install --quiet -e '.[dev]'
bash scripts/install-system-deps.sh

.venv/bin/python -m pytest "$@"
