#!/usr/bin/env bash
# System packages the project needs beyond Python:
#   - Debian's chromium for the review-page browser test (Playwright drives it through
#     executable_path; it never downloads a browser);
#   - dovecot-imapd (brings dovecot-core) and openssl for the real IMAP server the tests start
#     (tests/imap_server.py: an unprivileged Dovecot with a self-signed certificate made by the
#     openssl CLI).
# Idempotent: each group is checked on its own and installed only when missing. Needs root (or
# sudo) and Debian's apt.
set -euo pipefail

CHROMIUM=/usr/bin/chromium
# /usr/sbin is not on every non-root PATH, so the binaries are checked by path.
DOVECOT=/usr/sbin/dovecot
DOVECOT_IMAP=/usr/lib/dovecot/imap

# The Debian packages of every group whose check fails, installed in one apt-get run.
PACKAGES=()

if [ -x "$CHROMIUM" ]; then
    echo "install-system-deps: $CHROMIUM present"
else
    PACKAGES+=(chromium fonts-dejavu-core)
fi

if [ -x "$DOVECOT" ] && [ -x "$DOVECOT_IMAP" ]; then
    echo "install-system-deps: dovecot $($DOVECOT --version 2>/dev/null || echo '?') present ($DOVECOT_IMAP)"
else
    PACKAGES+=(dovecot-imapd)
fi

if command -v openssl >/dev/null 2>&1; then
    echo "install-system-deps: $(openssl version) present"
else
    PACKAGES+=(openssl)
fi

if [ "${#PACKAGES[@]}" -eq 0 ]; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-system-deps: apt-get not found; install by hand: ${PACKAGES[*]}" >&2
    exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends "${PACKAGES[@]}"
echo "install-system-deps: installed ${PACKAGES[*]}"
case " ${PACKAGES[*]} " in
    *" chromium "*) echo "install-system-deps: $($CHROMIUM --version 2>/dev/null || echo chromium)" ;;
esac
case " ${PACKAGES[*]} " in
    *" dovecot-imapd "*) echo "install-system-deps: dovecot $($DOVECOT --version 2>/dev/null || echo '?')" ;;
esac
