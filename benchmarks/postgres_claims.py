#!/usr/bin/env python
"""Claims and finishes per second on the PostgreSQL store, for one process.

    python benchmarks/postgres_claims.py                    # 20,000 runs
    python benchmarks/postgres_claims.py --runs 50000 --admin postgresql://postgres@host/postgres

A scratch database is made on the server (and dropped after); one node
acquires a lease, then claims runs with ``claim_runs`` in batches of 64 and
finishes each batch's runs with ``finish_run`` inside one ``batch()``: the
pattern of a scheduler's journal. The figure printed is runs per second, a
run being one claim plus one finish. Nothing is asserted.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.append(str(HERE.parent))

import psycopg  # noqa: E402

from pysched_lightning.durability.stores.postgres import PostgresStore  # noqa: E402
from pysched_lightning.records.protocols import COMPLETED  # noqa: E402

BATCH = 64


def measure(url: str, runs: int) -> float:
    store = PostgresStore(url, lease=3600.0)  # (no heartbeat here)
    try:
        store.acquire(f"bench-{os.getpid()}")
        start = time.perf_counter()
        for at in range(0, runs, BATCH):
            keys = range(at, min(at + BATCH, runs))
            claims = [("bench", f"{k}.000", 1, k, "bench", float(k), float(k)) for k in keys]
            granted = store.claim_runs(claims)
            assert all(granted), (at, sum(granted), store.lost_lease)
            with store.batch():
                for k in keys:
                    store.finish_run({"task_id": "bench", "slot": f"{k}.000", "attempt": 1,
                                      "status": COMPLETED, "scheduled": float(k),
                                      "finished": k + 0.5, "duration": 0.5,
                                      "result": "None"})
        return runs / (time.perf_counter() - start)
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20_000)
    parser.add_argument("--admin", default="postgresql://postgres@127.0.0.1:5432/postgres",
                        help="a URL of the server's maintenance database")
    args = parser.parse_args()
    name = f"psl_bench_{os.getpid()}"
    base = args.admin.rpartition("/")[0]
    with psycopg.connect(args.admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        rate = measure(f"{base}/{name}", args.runs)
        print(f"{args.runs} runs (claim_runs by {BATCH}, finish_run in batch()): "
              f"{rate:,.0f} claims+finishes per second")
    finally:
        with psycopg.connect(args.admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
