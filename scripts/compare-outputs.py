#!/usr/bin/env python3
"""Compares two personaflow output directories table by table, row by row.

    .venv/bin/python scripts/compare-outputs.py OUT_A OUT_B

Every table directory (features, profiles, ..., rejects) present in either output is read with
its Hive partitions, its rows sorted, and compared exactly (floats bit for bit, lists element
by element). Prints one line per table and exits 1 when any table differs, is missing on one
side, or has another schema. Row order inside files and the file layout may differ; `run.json`
(timings) is not compared. Uses pyarrow (requirements-dev.txt).
"""

import math
import struct
import sys
from pathlib import Path

import pyarrow.dataset as ds


def tables(out: Path) -> set[str]:
    return {
        d.name
        for d in out.iterdir()
        if d.is_dir() and not d.name.startswith((".", "_")) and any(d.rglob("*.parquet"))
    }


def canonical(value):
    """A sortable, exact form of a cell: floats by their bits (NaN included)."""
    if isinstance(value, float):
        return ("f", struct.pack(">d", value).hex() if not math.isnan(value) else "nan")
    if isinstance(value, list):
        return ("l", tuple(canonical(v) for v in value))
    if isinstance(value, dict):
        return ("d", tuple(sorted((k, canonical(v)) for k, v in value.items())))
    if value is None:
        return ("n",)
    return (type(value).__name__, str(value))


def read(out: Path, table: str):
    files = sorted(str(p) for p in (out / table).rglob("*.parquet") if not p.name.startswith("."))
    data = ds.dataset(
        files, format="parquet", partitioning="hive", partition_base_dir=str(out / table)
    ).to_table()
    names = sorted(data.column_names)
    rows = sorted(
        tuple(canonical(row[n]) for n in names) for row in data.select(names).to_pylist()
    )
    fields = sorted((f.name, str(f.type), f.nullable) for f in data.schema)
    return fields, rows


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    a, b = Path(sys.argv[1]), Path(sys.argv[2])
    for out in (a, b):
        if not out.is_dir():
            print(f"{out}: not a directory", file=sys.stderr)
            return 2
    differ = 0
    for table in sorted(tables(a) | tables(b)):
        if not (a / table).is_dir() or not (b / table).is_dir():
            side = b if not (b / table).is_dir() else a
            print(f"{table:<20} missing in {side}")
            differ += 1
            continue
        fa, ra = read(a, table)
        fb, rb = read(b, table)
        if fa != fb:
            print(f"{table:<20} schemas differ: {fa} / {fb}")
            differ += 1
        elif ra != rb:
            only_a = len(set(ra) - set(rb))
            only_b = len(set(rb) - set(ra))
            print(f"{table:<20} DIFFER: {len(ra)} / {len(rb)} rows, {only_a} only in A, {only_b} only in B")
            differ += 1
        else:
            print(f"{table:<20} identical ({len(ra):,} rows)")
    print("all tables row-identical" if differ == 0 else f"{differ} table(s) differ")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
