#!/usr/bin/env bash
# System packages the project needs beyond Python: Debian's chromium for the review-page
# browser test (Playwright drives it through executable_path; it never downloads a browser).
# Idempotent: installs only what is missing. Needs root (or sudo) and Debian's apt.
set -euo pipefail

CHROMIUM=/usr/bin/chromium

if [ -x "$CHROMIUM" ]; then
    echo "install-system-deps: $CHROMIUM present"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-system-deps: apt-get not found; install Chromium by hand so that $CHROMIUM exists" >&2
    exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends chromium fonts-dejavu-core
echo "install-system-deps: installed $($CHROMIUM --version 2>/dev/null || echo chromium)"
