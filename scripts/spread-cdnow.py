#!/usr/bin/env python3
"""Writes the CDNOW purchase log with each purchase at a seeded random second of its day.

    python3 scripts/spread-cdnow.py ../shared/data/cdnow/CDNOW_master.txt OUT.csv [--seed 7]

CDNOW dates its 69,659 purchases by day only, so with 1-minute windows they all fall in the
546 midnight windows. Spread over their days they make a real sparse log: about 65,000 active
one-minute windows among 785,000, one purchase in most, as an event log of infrequent users
is. The output is canonical CSV in time order (`ts,user_id,action,category,bytes_in,
bytes_out`: the number of CDs and the amount in cents, as `data/mappings/cdnow.toml` maps
them) for `personaflow backfill --input OUT.csv`; BENCHMARKS.md ("Sparse events") backfills
it with 1-minute and 1-day windows. Standard library only.
"""

import argparse
import datetime
import random


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cdnow", help="CDNOW_master.txt")
    parser.add_argument("out", help="the CSV to write")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    rows = []
    with open(args.cdnow) as f:
        for number, line in enumerate(f, 1):
            fields = line.split()
            if not fields or (number == 1 and fields[0] == "customer_id"):
                continue
            if len(fields) != 4 or not fields[1].isdigit():
                raise SystemExit(f"{args.cdnow}:{number}: not `customer date cds dollars`: {line!r}")
            customer, date, cds, dollars = fields
            day = datetime.datetime.strptime(date, "%Y%m%d").replace(tzinfo=datetime.timezone.utc)
            ts = day + datetime.timedelta(seconds=rng.randrange(86_400))
            rows.append((ts, customer, int(cds), round(float(dollars) * 100)))
    rows.sort()
    with open(args.out, "w") as out:
        out.write("ts,user_id,action,category,bytes_in,bytes_out\n")
        for ts, customer, cds, cents in rows:
            out.write(f"{ts:%Y-%m-%dT%H:%M:%SZ},{customer},purchase,music,{cds},{cents}\n")
    print(f"{len(rows)} purchases -> {args.out}")


if __name__ == "__main__":
    main()
