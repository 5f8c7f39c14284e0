"""Reads a running `personaflow serve`'s table downloads with pyarrow, Polars and DuckDB.

Usage: check_downloads.py BASE_URL TOKEN USER EXPECTED_ROWS

Downloads `resonance` rows of USER in each format and checks that every reader sees
EXPECTED_ROWS rows of that user: pyarrow reads the Arrow IPC stream straight off the socket,
batch by batch as it arrives; Polars reads the CSV and NDJSON; DuckDB and pyarrow read the
Parquet file.
"""

import io
import sys
import tempfile
import urllib.request

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq


def get(url, token):
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    return urllib.request.urlopen(req, timeout=120)


def main():
    base, token, user, expected = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    url = f"{base}/v1/tables/resonance?user={user}&format="
    counts = {}

    # pyarrow: the IPC stream, batch by batch off the socket.
    with get(url + "arrow", token) as resp:
        reader = pa.ipc.open_stream(resp)
        rows, users = 0, set()
        for batch in reader:
            rows += batch.num_rows
            users.update(batch.column("user_id").to_pylist())
        counts["pyarrow (arrow stream)"] = rows
        assert users <= {user}, users

    with get(url + "parquet", token) as resp:
        data = resp.read()
    counts["pyarrow (parquet)"] = pq.read_table(io.BytesIO(data)).num_rows
    with tempfile.NamedTemporaryFile(suffix=".parquet") as f:
        f.write(data)
        f.flush()
        counts["duckdb (parquet)"] = duckdb.sql(
            f"select count(*) from read_parquet('{f.name}') where user_id = '{user}'"
        ).fetchall()[0][0]

    with get(url + "csv", token) as resp:
        counts["polars (csv)"] = pl.read_csv(resp.read()).height
    with get(url + "ndjson", token) as resp:
        counts["polars (ndjson)"] = pl.read_ndjson(io.BytesIO(resp.read())).height

    for reader, n in counts.items():
        print(f"{reader}: {n} rows")
        assert n == expected, f"{reader}: {n} rows, expected {expected}"
    print("downloads agree")


if __name__ == "__main__":
    main()
