#!/usr/bin/env python
"""How the SQLite store answers a dashboard's queries on a big file, and what
its indexes cost every commit.

    python benchmarks/store_queries.py                # 1,000 tasks, 1,000,000 runs
    python benchmarks/store_queries.py --quick        # 200 tasks, 100,000 runs
    python benchmarks/store_queries.py --keep big.db  # reuse (or build and keep) the file

The file is built once (runs written oldest first, as a scheduler writes them:
every task every 20 minutes, so the last hour holds ~3 runs per task), then
measured under each index set in turn, on the same file: the query times
(best and median of several, after one warm-up) and the write throughput of
the scheduler's pattern (a claim, then a finish, each its own commit; and
the same grouped 20 runs per commit). The figures are printed; nothing is
asserted. Run it on an idle machine: other work on the cores moves them.
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.append(str(HERE.parent))

from pysched_lightning.records.protocols import (CANCELED, COMPLETED, ERROR, MISSED,
                                                 RUN_FIELDS, TIMEOUT, TaskRecord)
from pysched_lightning.durability.stores import SQLiteStore  # noqa: E402
from pysched_lightning.durability.stores.schema import INDEXES  # noqa: E402

PERIOD = 1200.0  # most tasks run every 20 minutes
HOT_PERIOD = 12.0  # and one every 12 seconds
NOW = 1_764_500_000.0
HOUR, DAY = 3600.0, 86400.0

#: The index sets compared, besides the UNIQUE claim key that every set has.
VARIANTS: Dict[str, Tuple[str, ...]] = {
    "claim key only": (),
    "+ (task_id, scheduled)": INDEXES[:1],
    "+ (task_id, scheduled), (scheduled) [schema 2]": INDEXES,
    "+ (task_id, scheduled), (scheduled, status)": (
        INDEXES[0], "CREATE INDEX runs_scheduled_status ON runs (scheduled, status)"),
    "schema 2 + partial (status) WHERE status = 3": INDEXES + (
        "CREATE INDEX runs_running ON runs (status) WHERE status = 3",),
}


def build(path: str, tasks: int, runs: int) -> None:
    """A store with *tasks* tasks and *runs* runs, the newest due just before
    NOW: one hot task (a tenth of the runs, every HOT_PERIOD seconds), the
    others every PERIOD seconds, written oldest first."""
    rng = random.Random(7)
    per_task = (runs - runs // 10) // (tasks - 1)
    hot = runs - per_task * (tasks - 1)
    with SQLiteStore(path) as store:
        _drop_indexes(store)
        with store.batch():
            for i in range(tasks):
                count = hot if i == 0 else per_task
                store.save_task(TaskRecord(
                    _task_id(i), f"reports.job_{i}", "recur", "1200", i % 5, f"jobs:job_{i}",
                    None, b"\x80\x04)\x94.", b"\x80\x04}\x94.", b"\x80\x04N.", b"s" * 120,
                    NOW + PERIOD, runs=count, status=COMPLETED, created=NOW - count * PERIOD,
                    updated=NOW, info='{"call": "reports.job()", "schedule": "every 1200 s"}'))
        times = [(round(NOW - k * HOT_PERIOD, 3), 0, hot - k + 1) for k in range(hot, 0, -1)]
        times += [(round(NOW - k * PERIOD + i * PERIOD / tasks, 3), i, per_task - k + 1)
                  for k in range(per_task, 0, -1) for i in range(1, tasks)]
        times.sort()
        rows = [_run_row(rng, _task_id(i), number, scheduled) for scheduled, i, number in times]
        columns = ", ".join(RUN_FIELDS)
        sql = f"INSERT INTO runs ({columns}) VALUES ({', '.join('?' * len(RUN_FIELDS))})"
        with store.batch():
            store._conn.executemany(sql, rows)


def _task_id(i: int) -> str:
    return "hot" if i == 0 else f"task-{i:04d}"


def _run_row(rng: random.Random, task_id: str, number: int, scheduled: float) -> Tuple[Any, ...]:
    roll = rng.random()
    status = (COMPLETED if roll < 0.93 else ERROR if roll < 0.97 else TIMEOUT if roll < 0.98
              else MISSED if roll < 0.99 else CANCELED)
    ran = status in (COMPLETED, ERROR, TIMEOUT)
    started = finished = duration = None
    if ran:
        started = scheduled + rng.random() * 0.01
        duration = rng.expovariate(2.0)
        finished = started + duration
    return (task_id, task_id, number, 1, f"{scheduled:.3f}", status, scheduled, started,
            finished, duration,
            0 if status == COMPLETED else None, "'ok'" if status == COMPLETED else None,
            "ValueError: bad input" if status == ERROR else None,
            "Traceback (most recent call last):\n" + "  ...\n" * 120 if status == ERROR else None,
            "x" * 300 if rng.random() < 0.2 else None, None,
            "the scheduler was down" if status == MISSED else None, 1, None)


def _drop_indexes(store: SQLiteStore) -> None:
    names = [row[0] for row in store._conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'runs' "
        "AND sql IS NOT NULL")]
    for name in names:
        store._conn.execute(f"DROP INDEX {name}")


def use_indexes(store: SQLiteStore, statements: Tuple[str, ...]) -> float:
    """Replace the runs table's indexes (not the claim key); return seconds taken."""
    start = time.perf_counter()
    _drop_indexes(store)
    for statement in statements:
        store._conn.execute(statement)
    store._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return time.perf_counter() - start


def timed(fn: Callable[[], Any], repeat: int) -> Tuple[float, float, Any]:
    """(best, median) milliseconds of *repeat* calls after one warm-up, and a result."""
    result = fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return min(times), statistics.median(times), result


def queries(store: SQLiteStore, tasks: int, runs: int) -> Dict[str, Callable[[], Any]]:
    task = _task_id(tasks // 2)
    per_task = (runs - runs // 10) // (tasks - 1)
    deep = NOW - (per_task * 4 // 5) * PERIOD  # a page 80% of the way back in its history
    deep_hot = NOW - ((runs - per_task * (tasks - 1)) * 4 // 5) * HOT_PERIOD
    return {
        "50 newest runs of one task": lambda: store.runs(task, 50),
        "a page before= deep in a task's history": lambda: store.runs(task, 50, before=deep),
        "50 newest runs of the hot task": lambda: store.runs("hot", 50),
        "a page before= deep in the hot task's history":
            lambda: store.runs("hot", 50, before=deep_hot),
        "all runs of the last hour": lambda: store.runs(since=NOW - HOUR),
        "count_runs(since=24 h ago, statuses=(1, 5))":
            lambda: store.count_runs(since=NOW - DAY, statuses=(ERROR, TIMEOUT)),
        "load_tasks()": store.load_tasks,
        "50 newest errors of every task": lambda: store.runs(limit=50, statuses=(ERROR,)),
        "count_runs(task)": lambda: store.count_runs(task),
        "mark_interrupted() (nothing running)": store.mark_interrupted,
    }


def throughput(store: SQLiteStore, tasks: int, runs: int, group: int, tag: str) -> float:
    """Runs per second written as a scheduler does: claims committed, then finishes."""
    start = time.perf_counter()
    for first in range(0, runs, group):
        keys = [(_task_id((first + j) % tasks), f"{tag}:{first + j}")
                for j in range(min(group, runs - first))]
        when = NOW + 10 * HOUR + first
        with store.batch():
            for task_id, slot in keys:
                store.claim_run(task_id, slot, 1, run=1, name=task_id, scheduled=when,
                                started=when)
        with store.batch():
            for task_id, slot in keys:
                store.finish_run({"task_id": task_id, "slot": slot, "attempt": 1,
                                  "status": COMPLETED, "scheduled": when,
                                  "finished": when + 0.5, "duration": 0.5, "result": "'ok'"})
    elapsed = time.perf_counter() - start
    with store.batch():
        store._conn.execute("DELETE FROM runs WHERE slot LIKE ?", (f"{tag}:%",))
    return runs / elapsed


def write_table(store: SQLiteStore, args: argparse.Namespace) -> None:
    """Write throughput under each index set, in interleaved rounds; each
    figure's ratio is to the claim key alone measured in the same round."""
    figures: Dict[str, List[Tuple[float, float]]] = {name: [] for name in VARIANTS}
    for _ in range(args.rounds):
        for name, statements in VARIANTS.items():
            use_indexes(store, statements)
            figures[name].append((
                throughput(store, args.tasks, args.writes, 1, "single"),
                throughput(store, args.tasks, args.writes * 5, 20, "grouped")))
    base = figures["claim key only"]
    print(f"writes, {args.rounds} interleaved rounds (runs/s best; ratio to the claim key "
          "alone, median of the rounds):")
    print("| indexes | 1 run per commit | ratio | 20 runs per commit | ratio |\n"
          "|---|---:|---:|---:|---:|")
    for name, rounds in figures.items():
        cells = []
        for k in (0, 1):
            ratio = statistics.median(r[k] / b[k] for r, b in zip(rounds, base))
            cells.append(f"{max(r[k] for r in rounds):,.0f} | {ratio:.2f}")
        print(f"| {name} | {' | '.join(cells)} |")
    print()


def plan(store: SQLiteStore, sql: str, params: Tuple[Any, ...]) -> str:
    rows = store._conn.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()
    return "; ".join(row[-1] for row in rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true", help="200 tasks, 100,000 runs")
    ap.add_argument("--keep", metavar="PATH", help="build the file here (or reuse it) and keep it")
    ap.add_argument("--repeat", type=int, default=7, help="timed calls per query")
    ap.add_argument("--writes", type=int, default=2000, help="runs written per throughput figure")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds of write figures")
    args = ap.parse_args()
    if args.quick:
        args.tasks, args.runs, args.writes = 200, 100_000, 500
    tmp = None
    if args.keep:
        path = os.path.abspath(args.keep)
    else:
        tmp = tempfile.TemporaryDirectory()
        path = os.path.join(tmp.name, "big.db")
    try:
        if not os.path.exists(path):
            start = time.perf_counter()
            build(path, args.tasks, args.runs)
            print(f"built {path}: {args.tasks:,} tasks, {args.runs:,} runs in "
                  f"{time.perf_counter() - start:.1f} s")
        print(f"file: {os.path.getsize(path) / 1e6:.0f} MB; Python {sys.version.split()[0]}, "
              f"SQLite {__import__('sqlite3').sqlite_version}, {os.cpu_count()} cores\n")
        with SQLiteStore(path) as store:
            for name, statements in VARIANTS.items():
                made = use_indexes(store, statements)
                print(f"## {name}  (indexes made in {made:.1f} s)")
                print("| query | best ms | median ms | rows |\n|---|---:|---:|---:|")
                for label, query in queries(store, args.tasks, args.runs).items():
                    best, median, result = timed(query, args.repeat)
                    rows = len(result) if isinstance(result, list) else result
                    print(f"| {label} | {best:.2f} | {median:.2f} | {rows:,} |")
                print()
            write_table(store, args)
            task = _task_id(args.tasks // 2)
            print("query plans (schema 2 indexes):")
            use_indexes(store, INDEXES)
            columns = ", ".join(RUN_FIELDS)
            for label, sql, params in [
                    ("one task", f"SELECT {columns} FROM runs WHERE task_id = ? "
                     "ORDER BY scheduled DESC, id DESC LIMIT ?", (task, 50)),
                    ("page", f"SELECT {columns} FROM runs WHERE task_id = ? AND scheduled < ? "
                     "ORDER BY scheduled DESC, id DESC LIMIT ?", (task, NOW - DAY, 50)),
                    ("since", f"SELECT {columns} FROM runs WHERE scheduled >= ? "
                     "ORDER BY scheduled DESC, id DESC LIMIT ?", (NOW - HOUR, -1)),
                    ("count", "SELECT count(*) FROM runs WHERE scheduled >= ? "
                     "AND status IN (?, ?)", (NOW - DAY, ERROR, TIMEOUT))]:
                print(f"  {label}: {plan(store, sql, params)}")
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    main()
