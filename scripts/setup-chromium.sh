#!/usr/bin/env bash
# Installs Chromium from Debian once (the dashboard's test opens the page in it, headless, on
# 127.0.0.1; nothing is fetched from the internet by the page), then prints its path. Without
# root this script only reports what is missing.
set -euo pipefail
find_chromium() { command -v chromium || command -v chromium-browser || true; }
if [ -z "$(find_chromium)" ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup-chromium: not root: cannot install chromium" >&2
        exit 0
    fi
    echo "== installing chromium (apt-get)" >&2
    export DEBIAN_FRONTEND=noninteractive
    install() { apt-get install -y --no-install-recommends chromium fonts-dejavu-core >&2; }
    install || { apt-get update >&2 && install; }
fi
find_chromium
