#!/usr/bin/env bash
# Installs `tansu`, an independent Kafka-compatible broker, for the real-broker tests and the
# streaming benchmark: `cargo install` into a cache outside the clone (once; about 15 minutes on
# 2 cores), then prints the binary's path. Set TANSU_ROOT to install elsewhere.
set -euo pipefail
root="${TANSU_ROOT:-$HOME/.cache/personaflow/tools}"
version="${TANSU_VERSION:-0.6.0}"
bin="$root/bin/tansu"
if [ ! -x "$bin" ] || ! "$bin" --version 2>/dev/null | grep -q "$version"; then
    echo "== installing tansu into $root (cargo install, about 15 minutes on 2 cores)" >&2
    args=(install tansu --locked --features dynostore --root "$root")
    if [ -n "$version" ]; then args+=(--version "$version"); fi
    cargo "${args[@]}" >&2
fi
echo "$bin"
