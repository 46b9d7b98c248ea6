#!/usr/bin/env bash
# Install Node.js (>= 18) from Debian's packages when it is missing: building the JupyterLab
# extension from a clone needs it (an installed wheel does not). Idempotent.
set -euo pipefail

if command -v node >/dev/null 2>&1; then
    major="$(node -p 'process.versions.node.split(".")[0]')"
    if [ "$major" -ge 18 ]; then
        echo "install_node: node $(node --version) is already installed."
        exit 0
    fi
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "install_node: Node.js >= 18 is needed to build the JupyterLab extension; install it by hand." >&2
        exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
# apt's unprivileged downloader cannot use a /tmp that is not world-writable (seen here).
APT_TMP="$(mktemp -d /var/tmp/install-node.XXXXXX)"
trap 'rm -rf "$APT_TMP"' EXIT
chmod 1777 "$APT_TMP"
$SUDO env TMPDIR="$APT_TMP" apt-get update
$SUDO env TMPDIR="$APT_TMP" apt-get install -y nodejs npm
echo "install_node: installed node $(node --version)."
