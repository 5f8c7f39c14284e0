"""The columnar reference for the backfill's speed (issue 21, point 1): per-user 1-minute window
features and their 16-window rolling means over a simulation's events, in Polars.

    python benches/polars_reference.py EVENTS_DIR [--out FILE.parquet]

Reads every Parquet file under EVENTS_DIR (Hive-partitioned, as `personaflow simulate` writes
them), computes for each user and 1-minute window: events, requests per second, bytes in and
out per second, mean and maximum latency, error rate (status >= 400), span of the events over
the window, mean gap, distinct sessions, bytes per event; then, per user over its windows in
time order, the rolling mean of each over the last 16 windows. Prints one JSON line: rows in,
windows out, seconds. It does less than the backfill (no sequences, models, segments, personas,
drift or policies): it is the floor the backfill's model-free path is measured against, not an
equal.
"""

import argparse
import json
import pathlib
import time

import polars as pl

WINDOW = "1m"
WINDOW_SECONDS = 60.0
ROLLING = 16


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("events", type=pathlib.Path)
    ap.add_argument("--out", type=pathlib.Path)
    args = ap.parse_args()
    started = time.perf_counter()
    events = pl.scan_parquet(str(args.events / "**" / "*.parquet"), hive_partitioning=True)
    windows = (
        events.with_columns(pl.col("ts").dt.truncate(WINDOW).alias("window"))
        .group_by("user_id", "window")
        .agg(
            pl.len().alias("events"),
            (pl.len() / WINDOW_SECONDS).alias("request_rate"),
            (pl.col("bytes_in").sum() / WINDOW_SECONDS).alias("bytes_in_rate"),
            (pl.col("bytes_out").sum() / WINDOW_SECONDS).alias("bytes_out_rate"),
            pl.col("latency_ms").mean().alias("latency_mean"),
            pl.col("latency_ms").max().alias("latency_max"),
            (pl.col("status") >= 400).mean().alias("error_rate"),
            ((pl.col("ts").max() - pl.col("ts").min()).dt.total_milliseconds()
             / (WINDOW_SECONDS * 1000.0)).alias("session_span"),
            ((pl.col("ts").max() - pl.col("ts").min()).dt.total_milliseconds()
             / pl.len().clip(lower_bound=2).sub(1)).alias("mean_gap"),
            pl.col("session_id").n_unique().alias("sessions"),
            ((pl.col("bytes_in").sum() + pl.col("bytes_out").sum()) / pl.len()).alias(
                "bytes_per_event"),
        )
        .sort("user_id", "window")
    )
    features = [c for c in windows.collect_schema().names() if c not in ("user_id", "window")]
    rolled = windows.with_columns(
        pl.col(c).cast(pl.Float64).rolling_mean(ROLLING, min_samples=1).over("user_id")
        .alias(f"{c}_mean{ROLLING}")
        for c in features
    )
    out = rolled.collect()
    seconds = time.perf_counter() - started
    if args.out:
        out.write_parquet(args.out)
    rows = pl.scan_parquet(str(args.events / "**" / "*.parquet")).select(pl.len()).collect().item()
    print(json.dumps({"events": rows, "windows": out.height, "seconds": round(seconds, 3)}))


if __name__ == "__main__":
    main()
