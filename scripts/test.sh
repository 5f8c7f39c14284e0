#!/usr/bin/env bash
# The whole test suite: sets up .venv (Python packages for the interop checks, once), then
# runs every Rust test (unit, doc, oracle, CLI integration, interop).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=".venv"
stamp="$venv/.requirements-dev.txt"
if [ ! -x "$venv/bin/python" ] || ! cmp -s requirements-dev.txt "$stamp"; then
    echo "== setting up $venv (requirements-dev.txt)"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
    cp requirements-dev.txt "$stamp"
fi
export PERSONAFLOW_PYTHON="$PWD/$venv/bin/python"

cargo test --workspace "$@"
