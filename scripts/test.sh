#!/usr/bin/env bash
# The whole test suite: sets up .venv (onnxruntime for the models, and the Python packages of
# the interop checks; once), installs the tansu Kafka broker for the real-broker test (once,
# into ~/.cache/personaflow/tools; about 15 minutes on 2 cores the first time), then runs
# every Rust test (unit, doc, oracle, parity, CLI integration, interop, Kafka, and the
# rendered policies applied in a network namespace, with nftables installed from Debian by
# scripts/setup-netfilter.sh; the Redis sink against a real redis-server, from Debian by
# scripts/setup-redis.sh; the HTTP API fuzzed by schemathesis; the dashboard opened in headless
# Chromium, from Debian by scripts/setup-chromium.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=".venv"
stamp="$venv/.requirements-dev.txt"
if [ ! -x "$venv/bin/python" ] || ! cmp -s requirements-dev.txt "$stamp" \
    || ! cmp -s requirements-runtime.txt "$venv/.requirements-runtime.txt"; then
    echo "== setting up $venv (requirements-dev.txt)"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
    cp requirements-dev.txt "$stamp"
    cp requirements-runtime.txt "$venv/.requirements-runtime.txt"
fi
export PERSONAFLOW_PYTHON="$PWD/$venv/bin/python"
PERSONAFLOW_TANSU="$(scripts/setup-tansu.sh)"
export PERSONAFLOW_TANSU
# nftables for the network-namespace test of rendered policies (Debian package, once).
scripts/setup-netfilter.sh >/dev/null
# redis-server for the Redis sink's test, which starts its own on 127.0.0.1 (Debian, once).
PERSONAFLOW_REDIS_SERVER="$(scripts/setup-redis.sh)"
export PERSONAFLOW_REDIS_SERVER
# Chromium for the dashboard's test, which opens the page headless (Debian, once).
PERSONAFLOW_CHROMIUM="$(scripts/setup-chromium.sh)"
export PERSONAFLOW_CHROMIUM

cargo test --workspace "$@"
