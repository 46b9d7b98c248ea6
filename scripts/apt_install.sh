#!/usr/bin/env bash
# Install Debian packages as root (or through sudo): scripts/apt_install.sh PACKAGE...
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "apt_install: not root and no sudo; install $* by hand." >&2
        exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
# apt runs its downloads as the unprivileged _apt user, which cannot write to a /tmp that is
# not world-writable (seen on our machines: mode 1700). Give it a temp folder of its own.
APT_TMP="$(mktemp -d /var/tmp/apt-install.XXXXXX)"
trap 'rm -rf "$APT_TMP"' EXIT
chmod 1777 "$APT_TMP"
$SUDO env TMPDIR="$APT_TMP" apt-get update
$SUDO env TMPDIR="$APT_TMP" apt-get install -y "$@"
