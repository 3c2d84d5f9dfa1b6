#!/usr/bin/env bash
# Static checks, all offline: ruff (lint + format), mypy ([tool.mypy] in pyproject.toml), the import
# layers (import-linter, [tool.importlinter] in pyproject.toml), hadolint on the
# Dockerfile, docker-compose.yml against the Compose Specification schema (vendored by check-jsonschema),
# and Debian's `docker-compose config` as well when it is installed.
#   ./scripts/lint.sh        -> runs every check, reports each, exits 1 if any failed
# Tools come from the dev extras: pip install -e '.[dev]'
set -uo pipefail
cd "$(dirname "$0")/.."

if [ -x .venv/bin/python ]; then
    export PATH="$PWD/.venv/bin:$PATH"
fi

PYTHON_DIRS=(app worker training tests migrations scripts bench)
failed=()

check() {
    local name="$1"
    shift
    echo "== ${name}: $*"
    if "$@"; then
        echo "   ok"
    else
        echo "   FAILED: ${name}"
        failed+=("${name}")
    fi
}

check "ruff check" ruff check "${PYTHON_DIRS[@]}"
check "ruff format" ruff format --check "${PYTHON_DIRS[@]}"
check "mypy" mypy
check "import layers" lint-imports
check "hadolint" hadolint Dockerfile
check "compose schema" check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml
if command -v docker-compose >/dev/null 2>&1; then
    check "docker-compose config" docker-compose -f docker-compose.yml config -q
else
    echo "== docker-compose config: not installed (optional: apt-get install docker-compose); schema check above"
fi

if [ "${#failed[@]}" -gt 0 ]; then
    echo "lint: ${#failed[@]} check(s) failed: ${failed[*]}"
    exit 1
fi
echo "lint: all checks passed"
