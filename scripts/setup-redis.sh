#!/usr/bin/env bash
# Installs redis-server from Debian once (the Redis sink's integration test starts its own on
# 127.0.0.1 and stops it), then prints its path. Services are not started by the install
# (a policy-rc.d that says no, for the install's duration). Without root this script only
# reports what is missing.
set -euo pipefail
if ! command -v redis-server >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup-redis: not root: cannot install redis-server" >&2
        exit 0
    fi
    echo "== installing redis-server (apt-get)" >&2
    export DEBIAN_FRONTEND=noninteractive
    policy=/usr/sbin/policy-rc.d
    own_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy"
        chmod +x "$policy"
        own_policy=1
    fi
    install() { apt-get install -y --no-install-recommends redis-server >&2; }
    install || { apt-get update >&2 && install; } || status=$?
    if [ "$own_policy" -eq 1 ]; then rm -f "$policy"; fi
    if [ "${status:-0}" -ne 0 ]; then exit "$status"; fi
fi
command -v redis-server
