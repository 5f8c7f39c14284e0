#!/usr/bin/env bash
# Tomorrow's users: do synthetic users shifted along a detected drift come closer to the real
# users after it than unshifted ones? (EVALUATION.md, "Synthetic users".)
#
# Simulates 1000 users over half a day whose gamers' bytes rise 4x from 6 h in (the
# `gamer-bytes-x4` scenario of `evaluate scenarios`), backfills it, fits the
# gamers' latent distribution on the profiles before the drift's onset, synthesises gamers
# from it twice (--magnitude 0: unshifted; 1: shifted along the detected drift), and compares
# each with the real gamers after the detection (`evaluate synthetic --real-from
# --real-segment`). Prints both reports and the MMD ratio, for each scenario seed of SEEDS
# (default 3), and the ratios' summary.
#
# Usage: [SEEDS="3 4 5"] scripts/eval-synthetic-drift.sh [WORK_DIR]
#        (PERSONAFLOW_BIN: the binary to use)
set -euo pipefail
cd "$(dirname "$0")/.."
work="${1:-$(mktemp -d)}"
scripts/setup-onnxruntime.sh >/dev/null
if [ -z "${PERSONAFLOW_BIN:-}" ]; then
    cargo build --release --quiet
    PERSONAFLOW_BIN=target/release/personaflow
fi
pf() { "$PERSONAFLOW_BIN" "$@"; }
rm -f "$work/ratios.txt"
for seed in ${SEEDS:-3}; do
w="$work/seed-$seed"
mkdir -p "$w"
pf simulate -q --users 1000 --days 0.5 --seed "$seed" --drift gamer@6h:bytes=4 --out "$w/sim" --overwrite
pf backfill -q --input "$w/sim/events" --output "$w/out" --overwrite
onset= detected=
read -r onset detected < <(.venv/bin/python - "$w/out/drift" "$w/sim/events" <<'PY'
import sys, pyarrow.compute as pc, pyarrow.dataset as ds
# The injected drift's detection: the first gamer drift whose onset is at or after 6 h in
# (an earlier detection is another change, or a false alarm, and says nothing of this one).
start = pc.min(ds.dataset(sys.argv[2], format="parquet", partitioning="hive").to_table(columns=["ts"])["ts"]).as_py()
injected = start.timestamp() * 1000 + 6 * 3600 * 1000
t = ds.dataset(sys.argv[1], format="parquet", partitioning="hive").to_table().to_pylist()
g = [r for r in t if r["scope"] == "segment" and r["scope_id"] == "gamer"
     and r["onset_window_end"].timestamp() * 1000 >= injected]
if g:
    r = min(g, key=lambda r: r["window_end"])
    print(int(r["onset_window_end"].timestamp() * 1000), int(r["window_end"].timestamp() * 1000))
PY
) || true
if [ -z "${onset:-}" ]; then
    echo "seed $seed: the gamers' drift from 6 h was not detected; no comparison"
    echo "$seed undetected" >> "$work/ratios.txt"
    continue
fi
echo "seed $seed: gamer drift: onset $onset, detected $detected (epoch ms)"
for k in 0 1; do
    pf synth -q --profiles "$w/out" --segment gamer --profiles-until "$onset" \
        --users 300 --duration 6h --start "$detected" --seed 5 \
        --shift-along-drift "segment:gamer@$detected" --magnitude "$k" --out "$w/synth-k$k" --overwrite
    pf evaluate synthetic -q --real "$w/sim" --synthetic "$w/synth-k$k" \
        --real-from "$detected" --real-segment gamer --json "$w/k$k.json" > "$w/k$k.txt"
    echo "== magnitude $k"; tail -3 "$w/k$k.txt"
done
.venv/bin/python - "$w" "$seed" <<'PY'
import json, sys
k0 = json.load(open(f"{sys.argv[1]}/k0.json"))["mmd2"]
k1 = json.load(open(f"{sys.argv[1]}/k1.json"))["mmd2"]
print(f"MMD^2 to the real gamers after the drift: unshifted {k0:.4f}, shifted {k1:.4f}; "
      f"shifted is {100 * (1 - k1 / k0):.0f}% closer (goal: at least 30%)")
with open(f"{sys.argv[1]}/../ratios.txt", "a") as f:
    f.write(f"{sys.argv[2]} {k0} {k1} {1 - k1 / k0}\n")
PY
done
.venv/bin/python - "$work/ratios.txt" <<'PY'
import sys
lines = [l.split() for l in open(sys.argv[1])]
rows = [r for r in lines if len(r) == 4]
missed = [r[0] for r in lines if len(r) != 4]
if missed:
    print("drift not detected with seeds " + ", ".join(missed))
if not rows:
    sys.exit("no seed to compare")
closer = [float(r[3]) for r in rows]
print("seeds " + ", ".join(r[0] for r in rows) + ": shifted closer by "
      + ", ".join(f"{100 * c:.0f}%" for c in closer)
      + f"; mean {100 * sum(closer) / len(closer):.0f}%, at least 30% in {sum(c >= 0.3 for c in closer)} of {len(closer)}")
PY
