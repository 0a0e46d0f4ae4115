#!/usr/bin/env python
"""How fast the dashboard answers on a big store: 1,000 tasks, 1,000,000 runs.

    python benchmarks/dashboard.py                 # builds the store (about a minute)
    python benchmarks/dashboard.py --quick         # 200 tasks, 100,000 runs
    python benchmarks/dashboard.py --keep big.db   # build once (or reuse) and keep it

The store is built as benchmarks/store_queries.py builds it (runs written
oldest first; one task runs every 12 s and holds a tenth of the runs, the
others every 20 minutes), with the newest runs due just before now, so the
pages' windows (the last hour, day, week) hold what they would in use. Each
page is rendered through the WSGI app, in this process (best and median of
several calls after a warm-up), and once more over HTTP from a real server
on 127.0.0.1. As a baseline measured in the same run, the store reads the
tasks page needs alone (every task and its latest runs). Figures only;
nothing is asserted.
"""
from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

HERE = Path(__file__).resolve().parent
for folder in (HERE, HERE.parent):
    if str(folder) not in sys.path:
        sys.path.append(str(folder))

import store_queries  # noqa: E402
from pysched_lightning.dashboard import app, serve  # noqa: E402
from pysched_lightning.durability.stores import SQLiteStore  # noqa: E402
from pysched_lightning.durability.stores.schema import INDEXES  # noqa: E402


def build(path: str, tasks: int, runs: int) -> float:
    """The store at *path*, its newest runs due just before now; returns the
    'now' it was built for."""
    now = time.time()
    store_queries.NOW = now  # the builder reads its clock from there
    store_queries.build(path, tasks, runs)
    with SQLiteStore(path) as store:  # the builder drops the indexes to write fast
        store_queries.use_indexes(store, INDEXES)
    return now


def call(application: Any, path: str) -> Tuple[int, int]:
    """Render *path* through the WSGI app: (status, bytes)."""
    route, _, query = path.partition("?")
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": route, "QUERY_STRING": query,
               "SCRIPT_NAME": "", "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80",
               "HTTP_HOST": "127.0.0.1", "wsgi.url_scheme": "http",
               "wsgi.input": io.BytesIO(b""), "wsgi.errors": sys.stderr}
    answer: List[str] = []
    body = b"".join(application(environ, lambda status, headers: answer.append(status)))
    return int(answer[0].split()[0]), len(body)


def timed(fn: Callable[[], Any], repeat: int) -> Tuple[float, float, Any]:
    """(best, median) milliseconds of *repeat* calls after one warm-up, and a result."""
    result = fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return min(times), statistics.median(times), result


def pages(store: SQLiteStore, tasks: int, runs: int, now: float) -> Dict[str, str]:
    """The pages measured, by what they show."""
    task = store_queries._task_id(tasks // 2)
    per_task = (runs - runs // 10) // (tasks - 1)
    deep = now - (per_task * 4 // 5) * store_queries.PERIOD
    newest = store.runs(task, 1)[0]
    run = (f"/tasks/{task}/run?at={newest['scheduled']!r}&attempt=1"
           f"&slot={newest['slot']}")
    return {
        "tasks page (1,000 tasks, 200 shown)": "/tasks",
        "tasks page, failing only": "/tasks?status=failing",
        "tasks page, sorted by duration": "/tasks?sort=duration&order=desc",
        "one task: definition, next 10, 50 newest runs": f"/tasks/{task}",
        "the busy task (a tenth of all runs)": "/tasks/hot",
        "a history page 80% back (before=)": f"/tasks/{task}?before={deep!r}",
        "one run": run,
        "timeline, last hour (50 rows)": "/timeline",
        "timeline, last day": "/timeline?window=24h",
        "timeline, last week": "/timeline?window=7d",
        "/api/tasks (1,000 tasks)": "/api/tasks",
        "/api/tasks/<id>/runs?limit=50": f"/api/tasks/{task}/runs?limit=50",
        "/api/timeline?since=<1 h ago> (1,000 runs max)":
            f"/api/timeline?since={now - 3600!r}",
        "/api/summary": "/api/summary",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="200 tasks, 100,000 runs")
    parser.add_argument("--keep", metavar="PATH", help="build the store here (or reuse it)")
    parser.add_argument("--repeat", type=int, default=7, help="timed calls per page")
    args = parser.parse_args()
    if args.quick:
        args.tasks, args.runs = 200, 100_000
    tmp = None
    if args.keep:
        path = os.path.abspath(args.keep)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="dashboard-bench-")
        path = os.path.join(tmp.name, "big.db")
    try:
        if not os.path.exists(path):
            start = time.perf_counter()
            now = build(path, args.tasks, args.runs)
            print(f"built {path}: {args.tasks:,} tasks, {args.runs:,} runs in "
                  f"{time.perf_counter() - start:.0f} s")
        else:
            with SQLiteStore(path, read_only=True) as store:
                now = max(run["scheduled"] for run in store.runs(limit=1)) + 1
            print(f"reusing {path}")
        measure(path, args, now)
    finally:
        if tmp is not None:
            tmp.cleanup()


def measure(path: str, args: argparse.Namespace, now: float) -> None:
    application = app(path, clock=lambda: now)
    store = SQLiteStore(path, read_only=True)
    try:
        rows: List[Tuple[str, float, float, str]] = []
        source = application.source
        best, median, tasks = timed(source.tasks, args.repeat)
        rows.append(("baseline: the store reads of the tasks page alone", best, median,
                     f"{len(tasks):,} tasks"))
        for label, url in pages(store, args.tasks, args.runs, now).items():
            best, median, (status, size) = timed(lambda: call(application, url), args.repeat)
            if status != 200:
                raise SystemExit(f"{url} answered {status}")
            rows.append((label, best, median, f"{size / 1024:,.0f} KiB"))
        with serve(application, "127.0.0.1", 0) as server:
            start = time.perf_counter()
            with urllib.request.urlopen(server.url + "tasks", timeout=60) as answer:
                size = len(answer.read())
            http = (time.perf_counter() - start) * 1000
        rows.append(("tasks page over HTTP (one request, 127.0.0.1)", http, http,
                     f"{size / 1024:,.0f} KiB"))
    finally:
        store.close()
        application.close()
    print(f"\n{args.tasks:,} tasks, {args.runs:,} runs; ms, best and median of "
          f"{args.repeat} after a warm-up\n")
    print("| page | best ms | median ms | size |\n|---|---:|---:|---:|")
    for label, best, median, size in rows:
        print(f"| {label} | {best:.1f} | {median:.1f} | {size} |")


if __name__ == "__main__":
    main()
