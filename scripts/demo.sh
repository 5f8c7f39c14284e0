#!/usr/bin/env bash
# The main job on built-in sample data: sets up onnxruntime in .venv (once), then runs
# `personaflow demo` (simulated users, backfill with the RNN-VAE embedder and the LSTM demand
# forecaster, evaluation). Extra arguments go to `personaflow demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-onnxruntime.sh
exec cargo run --release -- demo "$@"
