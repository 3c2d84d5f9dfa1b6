#!/usr/bin/env bash
# Sets up the service and starts it on its embedded defaults (SQLite, embedded broker, default model).
#   ./scripts/serve.sh [--host H] [--port N] [--data-dir DIR]
# A thin wrapper: scripts/quickstart.py does the work (.venv, pip install -e ., enhancer serve), the same
# script Windows runs (py -3.12 scripts\quickstart.py serve). PYTHON picks the interpreter (3.11 or 3.12).
set -euo pipefail
cd "$(dirname "$0")/.."

exec "${PYTHON:-python3}" scripts/quickstart.py serve "$@"
