#!/usr/bin/env bash
# Tomorrow's users: do synthetic users shifted along a detected drift come closer to the real
# users after it than unshifted ones? (EVALUATION.md, "Synthetic users".)
#
# Simulates 1000 users over half a day whose gamers' bytes rise 4x from 6 h in (the
# `gamer-bytes-x4` scenario of `evaluate scenarios`), backfills it, fits the
# gamers' latent distribution on the profiles before the drift's onset, synthesises gamers
# from it twice (--magnitude 0: unshifted; 1: shifted along the detected drift), and compares
# each with the real gamers after the detection (`evaluate synthetic --real-from
# --real-segment`). Prints both reports and the MMD ratio.
#
# Usage: scripts/eval-synthetic-drift.sh [WORK_DIR]   (PERSONAFLOW_BIN: the binary to use)
set -euo pipefail
cd "$(dirname "$0")/.."
work="${1:-$(mktemp -d)}"
scripts/setup-onnxruntime.sh >/dev/null
if [ -z "${PERSONAFLOW_BIN:-}" ]; then
    cargo build --release --quiet
    PERSONAFLOW_BIN=target/release/personaflow
fi
pf() { "$PERSONAFLOW_BIN" "$@"; }
pf simulate -q --users 1000 --days 0.5 --seed 3 --drift gamer@6h:bytes=4 --out "$work/sim" --overwrite
pf backfill -q --input "$work/sim/events" --output "$work/out" --overwrite
read -r onset detected < <(.venv/bin/python - "$work/out/drift" <<'PY'
import sys, pyarrow.dataset as ds
t = ds.dataset(sys.argv[1], format="parquet", partitioning="hive").to_table().to_pylist()
g = [r for r in t if r["scope"] == "segment" and r["scope_id"] == "gamer"]
if not g:
    sys.exit("the gamers' drift was not detected")
r = max(g, key=lambda r: r["window_end"])
print(int(r["onset_window_end"].timestamp() * 1000), int(r["window_end"].timestamp() * 1000))
PY
)
echo "gamer drift: onset $onset, detected $detected (epoch ms)"
for k in 0 1; do
    pf synth -q --profiles "$work/out" --segment gamer --profiles-until "$onset" \
        --users 300 --duration 6h --start "$detected" --seed 5 \
        --shift-along-drift segment:gamer --magnitude "$k" --out "$work/synth-k$k" --overwrite
    pf evaluate synthetic -q --real "$work/sim" --synthetic "$work/synth-k$k" \
        --real-from "$detected" --real-segment gamer --json "$work/k$k.json" > "$work/k$k.txt"
    echo "== magnitude $k"; tail -3 "$work/k$k.txt"
done
.venv/bin/python - "$work" <<'PY'
import json, sys
k0 = json.load(open(f"{sys.argv[1]}/k0.json"))["mmd2"]
k1 = json.load(open(f"{sys.argv[1]}/k1.json"))["mmd2"]
print(f"MMD^2 to the real gamers after the drift: unshifted {k0:.4f}, shifted {k1:.4f}; "
      f"shifted is {100 * (1 - k1 / k0):.0f}% closer (goal: at least 30%)")
PY
