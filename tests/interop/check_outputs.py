"""Checks that a personaflow backfill output opens as it is in DuckDB, Polars and pyarrow,
with Hive partitions, and that the three agree with each other and with run.json.

Usage: python tests/interop/check_outputs.py OUTPUT_DIR
"""

import json
import sys
from pathlib import Path

import duckdb
import polars as pl
import pyarrow.dataset as ds

TABLES = [
    "features", "profiles", "segment_profiles", "resonance", "forecasts", "forecast_error",
    "personas", "persona_assignments", "drift", "scaling"]


def main(out: Path) -> None:
    run = json.loads((out / "run.json").read_text())
    for table in TABLES:
        expected = run["rows_written"][table]
        arrow = ds.dataset(out / table, format="parquet", partitioning="hive").to_table()
        assert "date" in arrow.column_names, f"{table}: pyarrow sees no hive partition column"
        n_duck = duckdb.sql(
            f"SELECT count(*) FROM read_parquet('{out}/{table}/*/*.parquet', hive_partitioning = true)"
        ).fetchall()[0][0]
        n_polars = (
            pl.scan_parquet(f"{out}/{table}/**/*.parquet", hive_partitioning=True)
            .select(pl.len())
            .collect()
            .item()
        )
        assert arrow.num_rows == n_duck == n_polars == expected, (
            table, arrow.num_rows, n_duck, n_polars, expected)
        print(f"{table:<17} {expected:>9} rows: pyarrow, duckdb and polars agree")
    # Resonance is a distribution: probabilities of each user-window sum to 1.
    worst = duckdb.sql(
        f"""SELECT max(abs(s - 1)) FROM (
              SELECT sum(probability) AS s
              FROM read_parquet('{out}/resonance/*/*.parquet', hive_partitioning = true)
              GROUP BY window_end, user_id)"""
    ).fetchall()[0][0] or 0.0  # no resonance rows: nothing to sum
    assert worst < 1e-4, f"probabilities do not sum to 1 (off by {worst})"
    rejects = pl.read_parquet(f"{out}/rejects/*.parquet")
    assert rejects.height == run["rejects"], (rejects.height, run["rejects"])
    print(f"rejects           {rejects.height:>9} rows; probabilities sum to 1 (max error {worst:.2e})")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
