#!/usr/bin/env bash
# Installs what the network tests need from Debian: nftables (the `nft` tool) and iproute2
# (`ip`, `tc`), once; then prints the path of `nft`. The tests that use them create their own
# network namespaces and need root; without root this script only reports what is missing.
set -euo pipefail
missing=()
command -v nft >/dev/null 2>&1 || missing+=(nftables)
command -v tc >/dev/null 2>&1 || missing+=(iproute2)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup-netfilter: not root: cannot install ${missing[*]}" >&2
        exit 0
    fi
    echo "== installing ${missing[*]} (apt-get)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends "${missing[@]}" >&2 \
        || { apt-get update >&2 && apt-get install -y --no-install-recommends "${missing[@]}" >&2; }
fi
command -v nft
