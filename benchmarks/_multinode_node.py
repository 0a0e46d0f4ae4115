"""One node (or the loader) of the multi-node benchmark, run as its own process.

    python _multinode_node.py CONTENDER load  URL [--hits N] [--beat S] [--sleeper S]
    python _multinode_node.py CONTENDER serve URL [--workers 4] [--add N --every S]

``load`` puts jobs into the store without running them and prints one JSON
line (``{"seconds": ...}``). ``serve`` builds a node, prints ``ready``, starts
it when a ``go`` line arrives on stdin and stops it at ``stop`` (or end of
input); with ``--add`` it also adds N due-now jobs, one every S seconds,
writing ``ADD job_id time`` lines to its output file just before each add.

Contenders: ``psl`` (pysched_lightning, public API), ``apscheduler4``
(APScheduler 4 with SQLAlchemyDataStore and PsycopgEventBroker) and
``procrastinate`` (its PsycopgConnector and an in-process worker). The peers
are imported from the folder the benchmark puts on this process's PYTHONPATH.
The jobs are in ``_multinode_tasks`` (next to this file, so importable by name).
"""
import argparse
import json
import os
import sys
import threading
import time

import _multinode_tasks as tasks

NODE = os.environ.get("PSL_BENCH_NODE", "?")


def _note(text):
    """The adder's record: same file as the executions, so one reader sees all."""
    tasks._line(text)


def _adds(add, n, every):
    """Call add(job_id) n times, one every *every* seconds, on a fixed grid."""
    t0 = time.monotonic()
    for i in range(n):
        pause = t0 + i * every - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        jid = f"a{i}"
        _note(f"ADD {jid} {time.time():.6f}\n")
        add(jid)


def _wait_line(word):
    """Block until *word* arrives on stdin: True; False at end of input (the
    benchmark is gone, so this node must not start, or must stop)."""
    for line in sys.stdin:
        if line.strip() == word:
            return True
    return False


# --------------------------------------------------------------------------- psl

def psl_load(url, a):
    import pysched_lightning as psl
    s = psl.Scheduler(store=url)  # never started: the tasks go to the store only
    for i in range(a.hits):
        s.delay("once", 0, 1, tasks.hit, args=(f"j{i}",), task_id=f"j{i}")
    if a.beat:
        s.delay("recur", a.beat, 1, tasks.hit, args=("beat",), task_id="beat")
    if a.sleeper:
        s.delay("once", 0, 1, tasks.sleeper, args=("sleeper", a.sleeper), task_id="sleeper")
    s.shutdown()


def psl_serve(url, a):
    import pysched_lightning as psl
    s = psl.Scheduler(store=url, executor=psl.ThreadPoolExecutor(a.workers))
    print("ready", flush=True)
    if not _wait_line("go"):
        return
    s.start()
    if a.add:
        threading.Thread(target=_adds, daemon=True, args=(
            lambda jid: s.delay("once", 0, 1, tasks.hit, args=(jid,), task_id=jid),
            a.add, a.every)).start()
    _wait_line("stop")
    s.shutdown(wait=True)


# ------------------------------------------------------------------ apscheduler 4

def _aps(url, a):
    from datetime import timedelta
    from apscheduler import Scheduler
    from apscheduler.datastores.sqlalchemy import SQLAlchemyDataStore
    from apscheduler.eventbrokers.psycopg import PsycopgEventBroker
    from sqlalchemy.ext.asyncio import create_async_engine
    engine = create_async_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    # max_concurrent_jobs = the others' worker count; the lease as psl's (10 s)
    return Scheduler(SQLAlchemyDataStore(engine), PsycopgEventBroker(url), identity=NODE,
                     max_concurrent_jobs=a.workers, lease_duration=timedelta(seconds=a.lease))


def aps_load(url, a):
    from apscheduler.triggers.interval import IntervalTrigger
    with _aps(url, a) as s:
        for i in range(a.hits):
            s.add_job(tasks.hit, args=(f"j{i}",))
        if a.beat:
            s.add_schedule(tasks.hit, IntervalTrigger(seconds=a.beat), args=("beat",), id="beat")
        if a.sleeper:
            s.add_job(tasks.sleeper, args=("sleeper", a.sleeper))


def aps_serve(url, a):
    import logging
    logging.basicConfig(level=logging.WARNING)
    s = _aps(url, a)
    with s:  # data store and event broker up before "ready"
        print("ready", flush=True)
        if not _wait_line("go"):
            return
        s.start_in_background()
        if a.add:
            threading.Thread(target=_adds, daemon=True, args=(
                lambda jid: s.add_job(tasks.hit, args=(jid,)), a.add, a.every)).start()
        _wait_line("stop")
        s.stop()
        s.wait_until_stopped()


# ------------------------------------------------------------------ procrastinate

def _proc_app(url):
    import procrastinate
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url))
    app.task(name="hit")(tasks.hit)          # procrastinate passes keyword arguments
    app.task(name="sleeper")(tasks.sleeper)
    return app


def proc_load(url, a):
    app = _proc_app(url)
    with app.open():
        app.schema_manager.apply_schema()
        hit = app.tasks["hit"]
        chunk = 1000
        for i in range(0, a.hits, chunk):
            hit.batch_defer(*({"job_id": f"j{k}"} for k in range(i, min(i + chunk, a.hits))))
        if a.sleeper:
            app.tasks["sleeper"].defer(job_id="sleeper", seconds=a.sleeper)
        if a.beat:
            raise SystemExit("procrastinate: periodic tasks are per minute at best")


def proc_serve(url, a):
    import asyncio
    import logging
    logging.basicConfig(level=logging.WARNING)
    app = _proc_app(url)

    async def main():
        async with app.open_async():
            print("ready", flush=True)
            loop = asyncio.get_running_loop()
            if not await loop.run_in_executor(None, _wait_line, "go"):
                return
            worker = asyncio.create_task(app.run_worker_async(
                concurrency=a.workers, install_signal_handlers=False))
            adder = None
            if a.add:
                hit = app.tasks["hit"]

                async def adds():
                    t0 = loop.time()
                    for i in range(a.add):
                        await asyncio.sleep(max(0.0, t0 + i * a.every - loop.time()))
                        jid = f"a{i}"
                        _note(f"ADD {jid} {time.time():.6f}\n")
                        await hit.defer_async(job_id=jid)
                adder = asyncio.create_task(adds())
            await loop.run_in_executor(None, _wait_line, "stop")
            if adder is not None:
                adder.cancel()
            worker.cancel()
            try:
                await asyncio.wait_for(worker, 10)
            except (asyncio.CancelledError, asyncio.TimeoutError):
                pass

    asyncio.run(main())


CONTENDERS = {
    "psl": (psl_load, psl_serve),
    "apscheduler4": (aps_load, aps_serve),
    "procrastinate": (proc_load, proc_serve),
}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("contender", choices=sorted(CONTENDERS))
    ap.add_argument("mode", choices=["load", "serve"])
    ap.add_argument("url")
    ap.add_argument("--hits", type=int, default=0)
    ap.add_argument("--beat", type=float, default=0.0)
    ap.add_argument("--sleeper", type=float, default=0.0)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--lease", type=float, default=10.0)
    ap.add_argument("--add", type=int, default=0)
    ap.add_argument("--every", type=float, default=0.02)
    a = ap.parse_args(argv)
    load, serve = CONTENDERS[a.contender]
    if a.mode == "load":
        t = time.perf_counter()
        load(a.url, a)
        print(json.dumps({"seconds": time.perf_counter() - t}), flush=True)
    else:
        serve(a.url, a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
