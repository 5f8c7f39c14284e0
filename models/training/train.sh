#!/usr/bin/env bash
# Retrains and re-exports every personaflow model (one command):
#   models/training/train.sh [--epochs N] [--hidden N] [--forecast-hidden N] [--keep-forecaster]
# (--keep-forecaster retrains the VAE only, as the committed models were made; see
# models/README.md, "Retraining").
# Sets up .venv-train from models/training/requirements.txt (PyTorch from PyPI, ~3 GB, once),
# builds the release binary (the training data comes from `personaflow simulate` and
# `personaflow backfill`), then runs train.py, which writes models/onnx/*.onnx,
# models/onnx/training_report.json and models/tests/fixtures/. Seeded (data, splits,
# initialisation, batches); bit-for-bit equality across machines or thread counts is not
# promised. About 5 minutes on 2 cores once the venv exists, no GPU needed.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=".venv-train"
stamp="$venv/.requirements.txt"
if [ ! -x "$venv/bin/python" ] || ! cmp -s models/training/requirements.txt "$stamp"; then
    echo "== setting up $venv (models/training/requirements.txt)"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        -r models/training/requirements.txt
    cp models/training/requirements.txt "$stamp"
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/personaflow/target}"
cargo build --release --quiet
"$venv/bin/python" models/training/train.py \
    --work "$HOME/.cache/personaflow/model-training" "$@"
# The step decoder synthetic users decode with: the new decoder's weights, one step a call.
"$venv/bin/python" models/training/export_decoder_step.py
# The mean-only encoder the windows views embed with: the new encoder's graph up to `mu`.
"$venv/bin/python" models/training/export_encoder_mean.py
