#!/usr/bin/env bash
# Sets up the service and starts it on its embedded defaults (SQLite, embedded broker, default model).
#   ./scripts/serve.sh [--host H] [--port N] [--data-dir DIR]
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e .

exec .venv/bin/enhancer serve "$@"
