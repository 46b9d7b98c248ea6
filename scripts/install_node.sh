#!/usr/bin/env bash
# Install Node.js (>= 18) from Debian's packages when it is missing: building the JupyterLab
# extension from a clone needs it (an installed wheel does not). Idempotent.
set -euo pipefail
if command -v node >/dev/null 2>&1 && [ "$(node -p 'process.versions.node.split(".")[0]')" -ge 18 ]; then
    echo "install_node: node $(node --version) is already installed."
    exit 0
fi
bash "$(dirname "$0")/apt_install.sh" nodejs npm
echo "install_node: installed node $(node --version)."
