"""MASE of the pipeline's own forecasts on the held-out last 30% of the NAB NYC taxi series.

Reads a backfill output of the series (the `forecast_error` table: the Rust forecaster's
forecasts scored against what happened) and compares with seasonal naive, daily (48 windows)
and weekly (336), built from the `features` table. Reproduces train.py's PyTorch figure through
onnxruntime and the dataflow:

    personaflow backfill --config data/configs/nab_nyc_taxi.toml \
        --input ../shared/data/nab/realKnownCause/nyc_taxi.csv --output /tmp/nyc_taxi
    .venv/bin/python models/training/check_nab_forecasts.py /tmp/nyc_taxi

MASE here = MAE of the model / MAE of seasonal naive, on the same forecasts.
"""
import sys

import duckdb

out = sys.argv[1]
con = duckdb.connect()
con.sql(f"CREATE VIEW f AS SELECT * FROM read_parquet('{out}/features/*/*.parquet', hive_partitioning=true)")
con.sql(f"CREATE VIEW e AS SELECT * FROM read_parquet('{out}/forecast_error/*/*.parquet', hive_partitioning=true)")
lo, hi = con.sql("SELECT min(epoch_ms(window_end)), max(epoch_ms(window_end)) FROM f").fetchall()[0]
split = lo + int((hi - lo) * 0.7)  # train.py's NAB_TRAIN_SHARE
step = 1800_000
for season in (48, 336):
    r = con.sql(f"""
      SELECT count(*), avg(abs(e.predicted_bytes - e.actual_bytes::DOUBLE)),
             avg(abs(coalesce(s.bytes, 0)::DOUBLE - e.actual_bytes::DOUBLE))
      FROM e LEFT JOIN f s ON epoch_ms(s.window_end) = epoch_ms(e.window_end) - {season} * {step}
      WHERE epoch_ms(e.made_at_window_end) > {split}""").fetchall()[0]
    print(f"season {season}: {r[0]} forecasts, MAE model {r[1]:.1f}, seasonal naive {r[2]:.1f}, MASE {r[1]/r[2]:.3f}")
