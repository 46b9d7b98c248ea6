#!/usr/bin/env bash
# Install Debian's Chromium for the browser tests, when /usr/bin/chromium is missing.
# Idempotent: does nothing when it is already there. Playwright's own browser download
# does not work on our machines, so the tests launch this binary instead.
set -euo pipefail

CHROMIUM=/usr/bin/chromium

if [ -x "$CHROMIUM" ]; then
    echo "install_chromium: $CHROMIUM is already installed ($("$CHROMIUM" --version 2>/dev/null || echo 'version unknown'))."
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "install_chromium: not root and no sudo; install the 'chromium' package by hand." >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
# apt runs its download and signature checks as the unprivileged _apt user, which cannot
# write to a /tmp that is not world-writable (seen on our machines: mode 1700). Give it
# a temp folder of its own, outside /tmp.
APT_TMP="$(mktemp -d /var/tmp/install-chromium.XXXXXX)"
trap 'rm -rf "$APT_TMP"' EXIT
chmod 1777 "$APT_TMP"
$SUDO env TMPDIR="$APT_TMP" apt-get update
$SUDO env TMPDIR="$APT_TMP" apt-get install -y chromium

if [ ! -x "$CHROMIUM" ]; then
    echo "install_chromium: apt-get finished but $CHROMIUM is still missing." >&2
    exit 1
fi
echo "install_chromium: installed $("$CHROMIUM" --version 2>/dev/null || echo chromium)."
