#!/usr/bin/env bash
# Install Debian's Chromium for the browser tests, when /usr/bin/chromium is missing.
# Idempotent. Playwright's own browser download does not work on our machines, so the tests
# launch this binary instead.
set -euo pipefail
CHROMIUM=/usr/bin/chromium
if [ -x "$CHROMIUM" ]; then
    echo "install_chromium: $CHROMIUM is already installed ($("$CHROMIUM" --version 2>/dev/null || echo 'version unknown'))."
    exit 0
fi
bash "$(dirname "$0")/apt_install.sh" chromium
if [ ! -x "$CHROMIUM" ]; then
    echo "install_chromium: apt-get finished but $CHROMIUM is still missing." >&2
    exit 1
fi
echo "install_chromium: installed $("$CHROMIUM" --version 2>/dev/null || echo chromium)."
