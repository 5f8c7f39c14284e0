#!/usr/bin/env bash
# Installs what personaflow needs at run time into .venv: the onnxruntime==1.31.1 wheel, whose
# libonnxruntime.so.1.31.1 the models crate finds there (or set ORT_DYLIB_PATH instead).
# Idempotent: does nothing when .venv already matches requirements-runtime.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=".venv"
stamp="$venv/.requirements-runtime.txt"
if [ ! -x "$venv/bin/python" ] || ! cmp -s requirements-runtime.txt "$stamp"; then
    echo "== setting up $venv (requirements-runtime.txt: onnxruntime)" >&2
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements-runtime.txt
    cp requirements-runtime.txt "$stamp"
fi
