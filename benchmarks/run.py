#!/usr/bin/env python
"""Benchmark pysched_lightning beside its baselines, all in one process.

    python benchmarks/run.py                 # the full run (about a minute or two)
    python benchmarks/run.py --quick         # smaller counts, a smoke run
    python benchmarks/run.py --only throughput,lateness
    python benchmarks/run.py --only psl,tpe  # scheduler names select contenders
    python benchmarks/run.py --json out.json # default: benchmarks/results.json

Contenders, each with 4 worker threads:

  tpe          a plain concurrent.futures.ThreadPoolExecutor (the limit: no
               scheduling at all, only for "due now" work)
  sched        the stdlib ``sched`` module feeding a ThreadPoolExecutor, run by
               one thread that sleeps on an Event (so adding a task ahead of
               the head wakes it, as a careful hand-rolled loop would)
  apscheduler  APScheduler 3.x BackgroundScheduler with its thread pool
               (skipped with a note when apscheduler is not importable)
  psl          pysched_lightning.Scheduler (public API only)

The remote benchmark (``--only remote``) instead starts two processes on the
same RabbitMQ: ``pysched serve`` (2 worker threads, signed messages, SQLite
store, publisher confirms) and a Celery worker (thread pool of 2, ``rpc://``
results), and times no-op tasks launched from here through each.

The multi-node benchmark (``--only multinode``, benchmarks/multinode.py)
starts node processes on one PostgreSQL server (``--pg``, default
postgresql://postgres@127.0.0.1:5432): pysched_lightning beside APScheduler 4
and procrastinate, which it installs into benchmarks/.peers/ on first use.

Ratios are against the baseline measured in the same run. The table is
markdown, to paste into a README; the same figures go to JSON.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import gc
import json
import os
import platform
import random
import sched as sched_mod
import sys
import statistics
import tempfile
import threading
import time
import tracemalloc
import traceback
from datetime import datetime, timedelta, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORKERS = 4
HOUR = 3600.0

try:
    import psutil
except ImportError:  # pragma: no cover - psutil is in benchmarks/requirements.txt
    psutil = None

# Let `python benchmarks/run.py` find the package in a source checkout that
# was not installed; an installed package still wins (appended, not inserted).
if str(HERE.parent) not in sys.path:
    sys.path.append(str(HERE.parent))

import multinode  # noqa: E402 - next to this script: several nodes on PostgreSQL


# ---------------------------------------------------------------------------
# sizes

FULL = dict(
    tp_n=20_000, tp_repeats=3, tp_turns=5, tp_warmup=2_000,
    late_n=2_000, late_step=0.001,
    add_n=200_000, cancel_n=10_000,
    aps_add_n=20_000, aps_cancel_n=1_000,        # APScheduler is slow: fewer
    sched_cancel_n=200,                          # stdlib sched.cancel is O(n)
    rec_n=200, rec_interval=0.05, rec_duration=3.0,
    idle_s=1.0, wake_tries=7,
    remote_n=1_000, remote_warmup=100, remote_rounds=10, remote_repeats=5,
)
QUICK = dict(
    tp_n=2_000, tp_repeats=3, tp_turns=3, tp_warmup=200,
    late_n=300, late_step=0.001,
    add_n=20_000, cancel_n=1_000,
    aps_add_n=2_000, aps_cancel_n=100,
    sched_cancel_n=50,
    rec_n=40, rec_interval=0.05, rec_duration=1.0,
    idle_s=0.3, wake_tries=3,
    remote_n=200, remote_warmup=20, remote_rounds=4, remote_repeats=2,
)

BENCHES = ["throughput", "lateness", "add_cancel", "recurring", "idle", "sqlite", "hard",
           "remote", "multinode"]
CONTENDERS = ["tpe", "sched", "apscheduler", "psl"]
LABELS = {
    "tpe": "plain ThreadPoolExecutor",
    "sched": "stdlib sched + pool",
    "apscheduler": "APScheduler 3.x",
    "psl": "pysched_lightning",
    "psl-sqlite": "pysched_lightning (sqlite store)",
    "celery": "Celery 5 (rpc://, 2 threads)",
    **multinode.LABELS,
}

# Targets for pysched_lightning.
T_THROUGHPUT_RATIO = 0.70
T_LATE_P99_MS = 2.0
T_MEM_BYTES = 300
T_ADD_RATE = 200_000      # 200,000 added in < 1 s
T_CANCEL_RATE = 200_000
T_REC_P99_MS = 5.0
T_IDLE_CPU = 1.0
T_WAKE_MS = 2.0
T_SQLITE_RATIO = 0.33
# remote: p50 round trip at or below Celery's, throughput at least Celery's


class NotSupported(Exception):
    pass


class _Stop(Exception):
    pass


def noop():
    pass


mono = time.monotonic


# ---------------------------------------------------------------------------
# the library under test, loaded lazily so the baselines run without it

_psl = None
_psl_error = None


def load_psl():
    global _psl, _psl_error
    if _psl is None and _psl_error is None:
        try:
            import pysched_lightning as mod
            mod.Scheduler  # noqa: B018 - the core must be there
            mod.ThreadPoolExecutor  # noqa: B018
            _psl = mod
        except Exception as exc:  # half-written core, missing deps, ...
            _psl_error = f"{type(exc).__name__}: {exc}"
    return _psl


def load_apscheduler():
    try:
        import apscheduler  # noqa: F401
        from apscheduler.schedulers.background import BackgroundScheduler  # noqa: F401
        return True, None
    except Exception as exc:
        return False, f"{type(exc).__name__}: {exc}"


# ---------------------------------------------------------------------------
# adapters: each one does its bulk operations in a tight native loop, so the
# adapter itself adds no per-task overhead to the figures.

class TPEAdapter:
    name = "tpe"

    def __init__(self):
        self.pool = cf.ThreadPoolExecutor(max_workers=WORKERS)

    def submit_now_many(self, n, fn):
        submit = self.pool.submit
        for _ in range(n):
            submit(fn)

    def add_now(self, fn):
        self.pool.submit(fn)

    def add_delayed_many(self, delays, fn):
        raise NotSupported

    def add_later_many(self, n, delay, fn, keep):
        raise NotSupported

    def cancel_many(self, handles):
        raise NotSupported

    def add_recurring_many(self, n, interval, fn):
        raise NotSupported

    def cancel_recurring(self, handles):
        raise NotSupported

    def shutdown(self):
        self.pool.shutdown(wait=True)


class StdlibSchedAdapter:
    """stdlib ``sched`` run by one thread, feeding a ThreadPoolExecutor.

    The delay function sleeps on an Event that an add sets when the new entry
    lands at the head of the queue, so the loop can be woken; sched.run()
    re-reads the queue after every sleep.
    """
    name = "sched"

    def __init__(self):
        self.pool = cf.ThreadPoolExecutor(max_workers=WORKERS)
        self._wake = threading.Event()
        self._stopping = False
        self.s = sched_mod.scheduler(time.monotonic, self._delay)
        self._queue = self.s._queue  # the heap list, only to test "is it the head"
        self._thread = threading.Thread(target=self._loop, name="bench-stdlib-sched", daemon=True)
        self._thread.start()

    def _delay(self, seconds):
        if self._stopping:
            raise _Stop
        if seconds > 0:
            self._wake.wait(seconds)
            self._wake.clear()
            if self._stopping:
                raise _Stop

    def _loop(self):
        try:
            while not self._stopping:
                self.s.run()
                self._wake.wait()
                self._wake.clear()
        except _Stop:
            pass

    def _maybe_wake(self, ev):
        try:
            if self._queue[0] is ev:
                self._wake.set()
        except IndexError:  # already popped by the runner, which is awake
            pass

    def submit_now_many(self, n, fn):
        enter, submit, q, wake = self.s.enter, self.pool.submit, self._queue, self._wake.set
        for _ in range(n):
            ev = enter(0, 1, submit, (fn,))
            try:
                if q[0] is ev:
                    wake()
            except IndexError:
                pass

    def add_now(self, fn):
        self._maybe_wake(self.s.enter(0, 1, self.pool.submit, (fn,)))

    def add_delayed_many(self, delays, fn):
        enter, submit, q, wake = self.s.enter, self.pool.submit, self._queue, self._wake.set
        refs = []
        append = refs.append
        for i, d in enumerate(delays):
            ref = mono()
            ev = enter(d, 1, submit, (fn, i))
            append(ref)
            try:
                if q[0] is ev:
                    wake()
            except IndexError:
                pass
        return refs

    def add_later_many(self, n, delay, fn, keep):
        enter, submit, q, wake = self.s.enter, self.pool.submit, self._queue, self._wake.set
        handles = [] if keep else None
        for _ in range(n):
            ev = enter(delay, 1, submit, (fn,))
            if keep:
                handles.append(ev)
            try:
                if q[0] is ev:
                    wake()
            except IndexError:
                pass
        return handles

    def cancel_many(self, handles):
        cancel = self.s.cancel
        for h in handles:
            cancel(h)

    def add_recurring_many(self, n, interval, fn):
        anchors, handles = [], []
        for j in range(n):
            anchor = mono()
            r = _SchedRecurring(self, anchor, interval, fn, j)
            anchors.append(anchor)
            handles.append(r)
        return anchors, handles

    def cancel_recurring(self, handles):
        for r in handles:
            r.cancel()

    def shutdown(self):
        self._stopping = True
        self._wake.set()
        self._thread.join(10)
        self.pool.shutdown(wait=True)


class _SchedRecurring:
    def __init__(self, ad, anchor, interval, fn, j):
        self.ad, self.anchor, self.interval, self.fn, self.j = ad, anchor, interval, fn, j
        self.canceled = False
        self.ev = ad.s.enterabs(anchor + interval, 1, self.fire, (1,))
        ad._maybe_wake(self.ev)

    def fire(self, k):
        if self.canceled:
            return
        self.ev = self.ad.s.enterabs(self.anchor + (k + 1) * self.interval, 1, self.fire, (k + 1,))
        self.ad.pool.submit(self.fn, self.j)

    def cancel(self):
        self.canceled = True
        try:
            self.ad.s.cancel(self.ev)
        except ValueError:
            pass


class APSAdapter:
    name = "apscheduler"

    def __init__(self):
        import logging
        from apscheduler.executors.pool import ThreadPoolExecutor as APSPool
        from apscheduler.schedulers.background import BackgroundScheduler
        # "missed by" / "maximum number of running instances" warnings would
        # flood stderr; the figures show those effects anyway.
        logging.getLogger("apscheduler").setLevel(logging.ERROR)
        self.s = BackgroundScheduler(
            executors={"default": APSPool(WORKERS)},
            job_defaults={"misfire_grace_time": None, "coalesce": False, "max_instances": 1_000_000},
            timezone=timezone.utc,
        )
        self.s.start()

    def submit_now_many(self, n, fn):
        add = self.s.add_job
        for _ in range(n):
            add(fn)  # trigger None -> a date trigger for "now"

    def add_now(self, fn):
        self.s.add_job(fn)

    def add_delayed_many(self, delays, fn):
        add, now = self.s.add_job, datetime.now
        refs = []
        for i, d in enumerate(delays):
            ref = mono()
            wall = now(timezone.utc)
            add(fn, "date", run_date=wall + timedelta(seconds=d), args=(i,))
            refs.append(ref)
        return refs

    def add_later_many(self, n, delay, fn, keep):
        add = self.s.add_job
        handles = [] if keep else None
        for _ in range(n):
            job = add(fn, "date", run_date=datetime.now(timezone.utc) + timedelta(seconds=delay))
            if keep:
                handles.append(job.id)
        return handles

    def cancel_many(self, handles):
        remove = self.s.remove_job
        for h in handles:
            remove(h)

    def add_recurring_many(self, n, interval, fn):
        anchors, handles = [], []
        for j in range(n):
            anchor = mono()
            wall = datetime.now(timezone.utc)
            job = self.s.add_job(fn, "interval", seconds=interval, args=(j,),
                                 start_date=wall + timedelta(seconds=interval))
            anchors.append(anchor)
            handles.append(job.id)
        return anchors, handles

    def cancel_recurring(self, handles):
        for h in handles:
            try:
                self.s.remove_job(h)
            except Exception:
                pass

    def shutdown(self):
        self.s.shutdown(wait=True)


class PSLAdapter:
    name = "psl"

    def __init__(self, store=None):
        psl = load_psl()
        kwargs = {"executor": psl.ThreadPoolExecutor(max_workers=WORKERS)}
        if store is not None:
            kwargs["store"] = store
        self.s = psl.Scheduler(**kwargs)
        self.s.start()

    def submit_now_many(self, n, fn):
        delay = self.s.delay
        for _ in range(n):
            delay("once", 0, 1, fn)

    def add_now(self, fn):
        self.s.delay("once", 0, 1, fn)

    def add_delayed_many(self, delays, fn):
        delay = self.s.delay
        refs = []
        for i, d in enumerate(delays):
            ref = mono()
            delay("once", d, 1, fn, args=(i,))
            refs.append(ref)
        return refs

    def add_later_many(self, n, later, fn, keep):
        delay = self.s.delay
        if keep:
            return [delay("once", later, 1, fn) for _ in range(n)]
        for _ in range(n):
            delay("once", later, 1, fn)
        return None

    def cancel_many(self, handles):
        cancel = self.s.cancel
        for h in handles:
            cancel(h)

    def add_recurring_many(self, n, interval, fn):
        anchors, handles = [], []
        delay = self.s.delay
        for j in range(n):
            anchor = mono()
            handles.append(delay("recur", interval, 1, fn, args=(j,)))
            anchors.append(anchor)
        return anchors, handles

    def cancel_recurring(self, handles):
        for h in handles:
            self.s.cancel(h)

    def shutdown(self):
        self.s.shutdown(wait=True)


ADAPTERS = {"tpe": TPEAdapter, "sched": StdlibSchedAdapter, "apscheduler": APSAdapter, "psl": PSLAdapter}


def shutdown_with_timeout(adapter, timeout=20.0):
    """Shut an adapter down; a hanging shutdown is reported, not waited out."""
    err = []

    def run():
        try:
            adapter.shutdown()
        except Exception as exc:
            err.append(exc)

    t = threading.Thread(target=run, name="bench-shutdown", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        return f"shutdown did not return within {timeout:.0f} s"
    if err:
        return f"shutdown raised {type(err[0]).__name__}: {err[0]}"
    return None


# ---------------------------------------------------------------------------
# helpers

class Counter:
    """Counts completions; records when the n-th one happened."""

    def __init__(self, n):
        self.n = n
        self.count = 0
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.t_done = None

    def hit(self, *_):
        with self.lock:
            self.count += 1
            if self.count == self.n:
                self.t_done = time.perf_counter()
                self.done.set()


def pct(sorted_vals, p):
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_vals:
        return float("nan")
    k = max(0, min(len(sorted_vals) - 1, int(-(-p * len(sorted_vals) // 100)) - 1))
    return sorted_vals[k]


def cpu_seconds():
    """CPU time of the whole process (all threads), in nanosecond resolution.

    psutil's cpu_times() and os.times() count 10 ms clock ticks, so over a
    1 s window a single tick would read as 1% CPU.
    """
    return time.process_time()


def thread_cpu():
    """{native thread id: CPU seconds} per thread (10 ms ticks), or {}."""
    if psutil is None:
        return {}
    try:
        return {t.id: t.user_time + t.system_time for t in psutil.Process().threads()}
    except Exception:
        return {}


def settle():
    gc.collect()
    time.sleep(0.05)


def fmt_int(x):
    return f"{x:,.0f}"


def fmt_ms(x):
    return f"{x:.2f}"


# ---------------------------------------------------------------------------
# measurements; each returns a dict (JSON-ready) for one contender

def bench_throughput(name, cfg, make=None):
    n = cfg["tp_n"]
    make = make or ADAPTERS[name]
    settle()
    ad = make()
    res = {"n": n, "repeats": cfg["tp_repeats"], "runs_tasks_per_s": []}
    try:
        warm = Counter(cfg["tp_warmup"])
        ad.submit_now_many(warm.n, warm.hit)
        if not warm.done.wait(60):
            raise TimeoutError(f"warm-up: {warm.count}/{warm.n} done after 60 s")
        for _ in range(cfg["tp_repeats"]):
            gc.collect()
            c = Counter(n)
            t0 = time.perf_counter()
            ad.submit_now_many(n, c.hit)
            t_added = time.perf_counter()
            if not c.done.wait(max(60.0, n / 500)):
                raise TimeoutError(f"{c.count}/{n} done after {time.perf_counter() - t0:.0f} s")
            res["runs_tasks_per_s"].append(n / (c.t_done - t0))
            res.setdefault("add_s", []).append(t_added - t0)
        res["tasks_per_s"] = max(res["runs_tasks_per_s"])
    finally:
        err = shutdown_with_timeout(ad)
        if err:
            res["shutdown_error"] = err
    return res


def bench_throughput_in_turns(names, cfg):
    """``tp_n`` no-op tasks due now, tasks/s from the first submit to the
    last completion, best of ``tp_turns`` rounds per contender. The
    contenders take turns, round after round (on a shared machine the speed
    drifts between runs by more than the contenders differ, and taking turns
    exposes them all to the same drift); each round is a fresh scheduler,
    warmed up and shut down alone, so that no contender's heap (a
    scheduler keeps its finished runs) slows another's garbage collections."""
    n, turns = cfg["tp_n"], cfg["tp_turns"]
    settle()
    results = {name: {"n": n, "repeats": turns, "runs_tasks_per_s": []} for name in names}
    for _ in range(turns):
        for name in names:
            if "error" in results[name]:
                continue
            try:
                results[name]["runs_tasks_per_s"].append(_one_throughput_round(name, n, cfg))
            except Exception as exc:  # that contender only
                results[name] = {"error": f"{type(exc).__name__}: {exc}"}
    for result in results.values():
        if "error" not in result:
            result["tasks_per_s"] = max(result["runs_tasks_per_s"])
    return results


def _one_throughput_round(name, n, cfg):
    ad = ADAPTERS[name]()
    try:
        warm = Counter(cfg["tp_warmup"])
        ad.submit_now_many(warm.n, warm.hit)
        if not warm.done.wait(60):
            raise TimeoutError(f"warm-up: {warm.count}/{warm.n} done after 60 s")
        gc.collect()
        c = Counter(n)
        t0 = time.perf_counter()
        ad.submit_now_many(n, c.hit)
        if not c.done.wait(max(60.0, n / 500)):
            raise TimeoutError(f"{c.count}/{n} done after {time.perf_counter() - t0:.0f} s")
        return n / (c.t_done - t0)
    finally:
        err = shutdown_with_timeout(ad)
        if err:
            raise RuntimeError(err)


def bench_lateness(name, cfg):
    n, step = cfg["late_n"], cfg["late_step"]
    settle()
    ad = ADAPTERS[name]()
    starts = [None] * n
    c = Counter(n)

    def fn(i):
        starts[i] = mono()
        c.hit()

    res = {"n": n, "spread_s": n * step}
    try:
        delays = [i * step for i in range(n)]
        refs = ad.add_delayed_many(delays, fn)
        c.done.wait(n * step + 30)
        late = sorted((s - (r + d)) * 1000.0 for s, r, d in zip(starts, refs, delays) if s is not None)
        res.update(completed=len(late), p50_ms=pct(late, 50), p99_ms=pct(late, 99),
                   max_ms=late[-1] if late else float("nan"), min_ms=late[0] if late else float("nan"))
    finally:
        err = shutdown_with_timeout(ad)
        if err:
            res["shutdown_error"] = err
    return res


def bench_add_cancel(name, cfg):
    if name == "apscheduler":
        n, n_cancel = cfg["aps_add_n"], cfg["aps_cancel_n"]
    elif name == "sched":
        n, n_cancel = cfg["add_n"], cfg["sched_cancel_n"]
    else:
        n, n_cancel = cfg["add_n"], cfg["cancel_n"]
    res = {"n": n, "n_cancel": n_cancel}

    # 1. rate of adds (no tracemalloc), then cancels on the same instance
    settle()
    ad = ADAPTERS[name]()
    try:
        t0 = time.perf_counter()
        handles = ad.add_later_many(n, HOUR, noop, keep=True)
        t1 = time.perf_counter()
        res["add_s"] = t1 - t0
        res["add_per_s"] = n / (t1 - t0)
        victims = random.Random(42).sample(handles, n_cancel)
        gc.collect()
        t0 = time.perf_counter()
        ad.cancel_many(victims)
        t1 = time.perf_counter()
        res["cancel_s"] = t1 - t0
        res["cancel_per_s"] = n_cancel / (t1 - t0)
        del handles, victims
    finally:
        err = shutdown_with_timeout(ad)
        if err:
            res["shutdown_error"] = err
    del ad

    # 2. memory per pending task, on a fresh instance, under tracemalloc
    settle()
    ad = ADAPTERS[name]()
    try:
        time.sleep(0.05)
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            ad.add_later_many(n, HOUR, noop, keep=False)
            gc.collect()
            after = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        res["bytes_per_task"] = (after - before) / n
    finally:
        err = shutdown_with_timeout(ad)
        if err:
            res["shutdown_error_mem"] = err
    return res


def bench_recurring(name, cfg):
    n, interval, duration = cfg["rec_n"], cfg["rec_interval"], cfg["rec_duration"]
    k_max = int(round(duration / interval))
    settle()
    ad = ADAPTERS[name]()
    runs = [[] for _ in range(n)]

    def fn(j):
        runs[j].append(mono())

    res = {"tasks": n, "interval_s": interval, "duration_s": duration, "expected": n * k_max}
    try:
        anchors, handles = ad.add_recurring_many(n, interval, fn)
        stop = max(anchors) + duration + 0.2
        while True:
            left = stop - mono()
            if left <= 0:
                break
            time.sleep(min(left, 0.25))
        ad.cancel_recurring(handles)
        # Run k (1-based, in start order) is due at anchor + k*interval. A run
        # counts when k <= duration/interval and it started no later than half
        # a period after the window's end.
        done, late = 0, []
        for anchor, starts in zip(anchors, runs):
            cutoff = anchor + duration + interval / 2
            for k, s in enumerate(starts[:k_max], 1):
                if s > cutoff:
                    break
                done += 1
                late.append((s - (anchor + k * interval)) * 1000.0)
        late.sort()
        res.update(done=done, p50_ms=pct(late, 50), p99_ms=pct(late, 99),
                   max_ms=late[-1] if late else float("nan"),
                   # how spread out the tasks' phases are: a fast add() packs
                   # all tasks into one burst per period, a slow one spreads them
                   add_spread_ms=(max(anchors) - min(anchors)) * 1000.0)
    finally:
        err = shutdown_with_timeout(ad)
        if err:
            res["shutdown_error"] = err
    return res


def bench_idle(name, cfg):
    settle()
    ad = ADAPTERS[name]()
    res = {}
    try:
        if name != "tpe":
            ad.add_later_many(1, HOUR, noop, keep=False)
            time.sleep(0.2)  # let the dispatcher go to sleep on the head
            th0 = thread_cpu()
            c0, w0 = cpu_seconds(), mono()
            time.sleep(cfg["idle_s"])
            c1, w1 = cpu_seconds(), mono()
            th1 = thread_cpu()
            res["idle_cpu_pct"] = 100.0 * (c1 - c0) / (w1 - w0)
            res["idle_s"] = w1 - w0
            # which threads used the CPU (diagnostics; psutil only)
            if th1:
                names = {t.native_id: t.name for t in threading.enumerate()}
                res["idle_threads_cpu_ms"] = {
                    f"{names.get(tid, '?')} ({tid})": round((cpu - th0.get(tid, 0.0)) * 1000.0, 3)
                    for tid, cpu in th1.items()}
        # wake-up: add one task due now while sleeping on the hour-away head
        # (for the plain pool: submit -> start, the floor). First try is a
        # warm-up and not counted.
        lat = []
        for i in range(cfg["wake_tries"] + 1):
            box = []
            ev = threading.Event()

            def fn(box=box, ev=ev):
                box.append(mono())
                ev.set()

            time.sleep(0.1)
            t = mono()
            ad.add_now(fn)
            if not ev.wait(10):
                raise TimeoutError("task due now did not start within 10 s")
            if i:
                lat.append((box[0] - t) * 1000.0)
        lat.sort()
        res.update(wake_tries=len(lat), wake_median_ms=lat[len(lat) // 2], wake_max_ms=lat[-1])
    finally:
        err = shutdown_with_timeout(ad)
        if err:
            res["shutdown_error"] = err
    return res


def bench_sqlite(cfg, tmpdir):
    store = "sqlite:///" + os.path.join(tmpdir, "bench-store.db")
    try:
        ad = PSLAdapter(store=store)
    except TypeError as exc:  # the store= argument does not exist yet
        return {"skipped": f"Scheduler(store=...) raised TypeError: {exc}"}
    import _storable  # benchmarks/ is on sys.path when this script runs

    class StorableTasks:
        """The adapter, but every task is the importable ``_storable.hit``."""

        def __getattr__(self, name):
            return getattr(ad, name)

        def submit_now_many(self, n, fn):
            _storable.set_target(fn)
            ad.submit_now_many(n, _storable.hit)

    res = bench_throughput("psl", cfg, make=StorableTasks)
    res["store"] = "sqlite, in a temp dir"
    return res


# ---------------------------------------------------------------------------
# hard tasks: no-ops in worker processes, through each contender's process pool

HARD_WORKERS = 2
HARD_SIZES = {"full": (1_000, 5), "quick": (200, 3)}  # (tasks per run, rounds)
T_HARD_RATIO = 0.80
HARD_CONTENDERS = ["loky", "stdlib", "apscheduler", "psl"]


class HardRawPool:
    """A plain process pool: submit all, wait for all (loky: the baseline)."""

    def __init__(self, name, noop):
        if name == "loky":
            import loky
            self.pool = loky.ProcessPoolExecutor(HARD_WORKERS)
        else:
            self.pool = cf.ProcessPoolExecutor(HARD_WORKERS)
        self.noop = noop

    def run_many(self, k, fn=None, args=()):
        submit, fn = self.pool.submit, fn or self.noop
        done, _ = cf.wait([submit(fn, *args) for _ in range(k)])
        for future in done:
            future.result()  # a failed warm-up must not pass unseen
        return time.perf_counter()

    def shutdown(self):
        self.pool.shutdown(wait=True)


class HardAPS:
    """APScheduler 3 with its ProcessPoolExecutor; counts EVENT_JOB_EXECUTED."""

    def __init__(self, name, noop):
        import logging
        from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED
        from apscheduler.executors.pool import ProcessPoolExecutor as APSProcessPool
        from apscheduler.schedulers.background import BackgroundScheduler
        logging.getLogger("apscheduler").setLevel(logging.ERROR)
        self.noop, self.counter, self.failed = noop, None, None
        self.s = BackgroundScheduler(
            executors={"default": APSProcessPool(HARD_WORKERS)},
            job_defaults={"misfire_grace_time": None, "coalesce": False,
                          "max_instances": 1_000_000},
            timezone=timezone.utc)
        self.s.add_listener(self._hit, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)
        self.s.start()

    def run_many(self, k, fn=None, args=()):
        c = self.counter = Counter(k)
        add, fn = self.s.add_job, fn or self.noop
        for _ in range(k):
            add(fn, args=args)
        if not c.done.wait(max(60.0, k / 50)):
            raise TimeoutError(f"{c.count}/{k} jobs done")
        return c.t_done

    def _hit(self, event):
        if getattr(event, "exception", None) is not None:
            self.failed = event.exception
        self.counter.hit()

    def shutdown(self):
        self.s.shutdown(wait=True)


class HardPSL:
    """pysched_lightning: ``delay('once', 0, 1, noop, hard=True)`` on
    ``psl.ProcessPoolExecutor(2)``; counts COMPLETED (and FAILED) events."""

    def __init__(self, name, noop):
        psl = load_psl()
        self.noop, self.counter, self.failed = noop, None, None
        self.s = psl.Scheduler(process_executor=psl.ProcessPoolExecutor(HARD_WORKERS))
        self.s.add_listener(self._hit, [psl.EventKind.COMPLETED, psl.EventKind.FAILED])
        self.s.start()

    def run_many(self, k, fn=None, args=()):
        c = self.counter = Counter(k)
        delay, fn = self.s.delay, fn or self.noop
        for _ in range(k):
            delay("once", 0, 1, fn, args=args, hard=True)
        if not c.done.wait(max(60.0, k / 50)):
            raise TimeoutError(f"{c.count}/{k} runs done")
        return c.t_done

    def _hit(self, event):
        if event.kind.name != "COMPLETED":
            self.failed = event.exception
        self.counter.hit()

    def shutdown(self):
        self.s.shutdown(wait=True)


HARD_ADAPTERS = {"loky": HardRawPool, "stdlib": HardRawPool, "apscheduler": HardAPS,
                 "psl": HardPSL}


def bench_hard(names, n, repeats):
    """``n`` no-op tasks due now on HARD_WORKERS processes, all submitted at
    once; tasks/s from the first submit to the last completion, best of
    ``repeats``, after a warm-up that starts the worker processes. The
    contenders take turns, round after round (a process benchmark on a
    shared machine drifts: taking turns exposes them all to the same drift)."""
    import _hard_tasks  # benchmarks/ is on sys.path; workers import it by name
    settle()
    adapters, results = {}, {}
    try:
        for name in names:
            try:
                ad = adapters[name] = HARD_ADAPTERS[name](name, _hard_tasks.noop)
                # Warm-up: every worker process is up (they meet), then a few no-ops.
                with tempfile.TemporaryDirectory(prefix="psl-bench-meet-") as folder:
                    ad.run_many(HARD_WORKERS, _hard_tasks.meet, (folder, HARD_WORKERS))
                ad.run_many(max(50, 10 * HARD_WORKERS))
                if getattr(ad, "failed", None) is not None:
                    raise RuntimeError(f"warm-up task failed: {ad.failed!r}")
                results[name] = {"n": n, "repeats": repeats, "workers": HARD_WORKERS,
                                 "runs_tasks_per_s": []}
            except Exception as exc:  # that contender only
                results[name] = {"error": f"{type(exc).__name__}: {exc}"}
                adapters.pop(name, None)
        for _ in range(repeats):
            for name, ad in adapters.items():
                gc.collect()
                t0 = time.perf_counter()
                t_done = ad.run_many(n)
                results[name]["runs_tasks_per_s"].append(n / (t_done - t0))
        for name in adapters:
            results[name]["tasks_per_s"] = max(results[name]["runs_tasks_per_s"])
    finally:
        for name, ad in adapters.items():
            err = shutdown_with_timeout(ad)
            if err:
                results[name]["shutdown_error"] = err
    return results


# remote: a `pysched serve` process beside a Celery worker, on one broker

DEFAULT_BROKER = "amqp://guest:guest@127.0.0.1:5672/%2F"

# Both contenders run a no-op from a module their workers import: Celery
# finds tasks by name, and pysched_lightning sends an importable function by
# reference (a function of a script's __main__ would travel by value).
_PSL_TASKS = """
def noop():
    return None
"""

_CELERY_APP = """
from celery import Celery
app = Celery("psl_bench_celery", broker={broker!r}, backend="rpc://")
app.conf.update(task_default_queue={queue!r}, broker_connection_retry_on_startup=True,
                worker_hijack_root_logger=False)

@app.task
def noop():
    return None
"""


def _remote_missing(broker):
    """Why the remote benchmark cannot run here, or None."""
    import socket
    from urllib.parse import urlsplit
    for module, extra in (("pika", "pip install -e '.[remote]'"),
                          ("celery", "pip install -r benchmarks/requirements.txt")):
        try:
            __import__(module)
        except ImportError:
            return f"{module} is not installed ({extra})"
    parts = urlsplit(broker)
    try:
        socket.create_connection((parts.hostname or "localhost", parts.port or 5672), 2).close()
    except OSError as exc:
        return f"RabbitMQ is not reachable at {parts.hostname}:{parts.port or 5672} ({exc})"
    return None


def _round_trips(launch, wait, n):
    """Launch and wait for one no-op task at a time: n latencies in seconds."""
    out = []
    for _ in range(n):
        t = time.perf_counter()
        wait(launch())
        out.append(time.perf_counter() - t)
    return out


def _burst(launch, wait, n):
    """Launch n no-op tasks back to back, then collect every response: tasks/s
    from the first launch to the last response."""
    t = time.perf_counter()
    handles = [launch() for _ in range(n)]
    for h in handles:
        wait(h)
    return n / (time.perf_counter() - t)


def bench_remote(cfg, broker, tmpdir):
    """Round trip (launch -> response) and throughput of no-op tasks through
    RabbitMQ: a pysched_lightning service (signed messages, SQLite store,
    publisher confirms, 2 worker threads) beside a Celery worker (rpc://
    results, thread pool of 2). Both run as processes started here; their
    measurements alternate so that load on the machine hits both alike."""
    why = _remote_missing(broker)
    if why:
        return {"skipped": why}
    import secrets
    import signal
    import subprocess
    import uuid
    from pysched_lightning.remote import Client

    n, warmup = cfg["remote_n"], cfg["remote_warmup"]
    rounds, repeats = cfg["remote_rounds"], cfg["remote_repeats"]
    tag = uuid.uuid4().hex[:8]
    service, client_name = f"bench-{tag}", f"bench-client-{tag}"
    celery_queue = f"bench-celery-{tag}"
    secret = secrets.token_hex(32)
    env = dict(os.environ, PYSCHED_SECRET=secret,
               PYTHONPATH=os.pathsep.join([tmpdir, os.environ.get("PYTHONPATH", "")]))
    with open(os.path.join(tmpdir, "psl_bench_celery.py"), "w") as f:
        f.write(_CELERY_APP.format(broker=broker, queue=celery_queue))
    with open(os.path.join(tmpdir, "psl_bench_tasks.py"), "w") as f:
        f.write(_PSL_TASKS)
    logs = open(os.path.join(tmpdir, "remote-bench.log"), "w")
    procs = [
        subprocess.Popen([sys.executable, "-m", "pysched_lightning", "serve", "--broker", broker,
                          "--store", os.path.join(tmpdir, "bench-service.db"), "--name", service,
                          "--workers", "2", "--log-level", "WARNING"],
                         env=env, stdout=logs, stderr=subprocess.STDOUT),
        subprocess.Popen([sys.executable, "-m", "celery", "-A", "psl_bench_celery", "worker",
                          "--pool", "threads", "--concurrency", "2", "-Q", celery_queue,
                          "--without-gossip", "--without-mingle", "--without-heartbeat",
                          "--loglevel", "WARNING"],
                         env=env, cwd=tmpdir, stdout=logs, stderr=subprocess.STDOUT),
    ]
    sys.path.insert(0, tmpdir)
    client = None
    try:
        import psl_bench_celery as celery_app
        import psl_bench_tasks
        client = Client(client_name, service=service, broker=broker, secret=secret)
        psl_noop = client.task(psl_bench_tasks.noop)
        contenders = {
            "celery": (celery_app.noop.delay, lambda r: r.get(timeout=60)),
            "psl": (psl_noop.launch, lambda m: client.sync_await_response(m, timeout=60)),
        }
        for launch, wait in contenders.values():  # both up and warm before measuring
            for _ in range(warmup):
                wait(launch())
        lat = {name: [] for name in contenders}
        for _ in range(rounds):
            for name, (launch, wait) in contenders.items():
                lat[name] += _round_trips(launch, wait, n // rounds)
        bursts = {name: [] for name in contenders}
        for _ in range(repeats):
            for name, (launch, wait) in contenders.items():
                bursts[name].append(_burst(launch, wait, n))
        import celery
        import pika
        out = {"versions": {"celery": celery.__version__, "pika": pika.__version__}}
        for name in contenders:
            xs = sorted(lat[name])
            out[name] = {"n": len(xs), "p50_ms": pct(xs, 50) * 1e3, "p99_ms": pct(xs, 99) * 1e3,
                         "max_ms": xs[-1] * 1e3}
            out[name]["tasks_per_s"] = max(bursts[name])
            out[name]["all_tasks_per_s"] = bursts[name]
        return out
    finally:
        if client is not None:
            client.close()
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        logs.close()
        sys.path.remove(tmpdir)
        for module in ("psl_bench_celery", "psl_bench_tasks"):
            sys.modules.pop(module, None)
        _remote_cleanup(broker, [f"{service}.requests", f"{service}.replies.{client_name}",
                                 celery_queue])


def _remote_cleanup(broker, queues):
    import pika
    try:
        connection = pika.BlockingConnection(pika.URLParameters(broker))
        channel = connection.channel()
        for queue in queues:
            channel.queue_delete(queue)
        connection.close()
    except Exception as exc:  # the figures stand; say what was left behind
        print(f"  (could not delete the benchmark's queues: {exc})", flush=True)


# ---------------------------------------------------------------------------
# the table: one row per measurement, one column per contender

class Report:
    def __init__(self, columns):
        self.columns = columns          # contender names, in order
        self.order = []                 # measurement keys, in order
        self.titles = {}
        self.cells = {}                 # (key, contender) -> text
        self.targets = {}               # key -> (text, ok or None)
        self.notes = []

    def measure(self, key, title):
        if key not in self.titles:
            self.order.append(key)
            self.titles[key] = title

    def cell(self, key, who, text):
        self.cells[(key, who)] = text

    def target(self, key, text, ok):
        self.targets[key] = (text, ok)

    def note(self, text):
        self.notes.append(text)
        print(f"  note: {text}", flush=True)

    def rows(self):
        out = []
        shown = [c for c in self.columns if any((k, c) in self.cells for k in self.order)]
        for key in self.order:
            tgt, ok = self.targets.get(key, ("", None))
            out.append({
                "measurement": self.titles[key],
                **{LABELS[c]: self.cells.get((key, c), "—") for c in shown},
                "target (psl)": tgt,
                "psl": "" if ok is None else ("PASS" if ok else "FAIL"),
            })
        return out

    def markdown(self):
        rows = self.rows()
        if not rows:
            return "(nothing measured)"
        head = list(rows[0].keys())
        body = [[str(r[h]) for h in head] for r in rows]
        widths = [max(len(x) for x in col) for col in zip(head, *body)]

        def line(cells):
            return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

        out = [line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
        out += [line(b) for b in body]
        return "\n".join(out)


def machine_info():
    model = None
    try:
        with open("/proc/cpuinfo") as f:
            for ln in f:
                if ln.lower().startswith("model name"):
                    model = ln.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {
        "cpu": model or platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
    }
    try:
        info["usable_cores"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        pass
    try:
        info["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    try:
        import apscheduler
        info["apscheduler"] = getattr(apscheduler, "__version__", "?")
    except Exception:
        info["apscheduler"] = None
    psl = load_psl()
    info["pysched_lightning"] = None
    if psl is not None:
        info["pysched_lightning"] = getattr(psl, "__version__", None)
        if info["pysched_lightning"] is None:
            try:
                from importlib.metadata import version
                info["pysched_lightning"] = version("pysched-lightning") + " (installed metadata)"
            except Exception:
                info["pysched_lightning"] = "source tree"
    return info


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller counts, for a smoke run")
    ap.add_argument("--only", default="",
                    help="comma-separated benchmark names (%s) and/or scheduler names (%s)"
                    % (",".join(BENCHES), ",".join(
                        CONTENDERS + [c for c in multinode.CONTENDERS if c not in CONTENDERS])))
    ap.add_argument("--json", default=str(HERE / "results.json"), help="where to write the JSON results")
    ap.add_argument("--broker", default=os.environ.get("PYSCHED_BENCH_BROKER", DEFAULT_BROKER),
                    help="RabbitMQ for the remote benchmark (default %(default)s)")
    ap.add_argument("--pg", default=os.environ.get("PYSCHED_BENCH_PG", multinode.DEFAULT_PG),
                    help="PostgreSQL server for the multinode benchmark, without a database "
                         "(default %(default)s)")
    args = ap.parse_args(argv)

    cfg = QUICK if args.quick else FULL
    only = [x.strip() for x in args.only.split(",") if x.strip()]
    unknown = [x for x in only
               if x not in BENCHES and x not in CONTENDERS and x not in multinode.CONTENDERS]
    if unknown:
        ap.error(f"unknown name(s) in --only: {', '.join(unknown)}")
    benches = [b for b in BENCHES if b in only] or (
        # only multinode's own contenders named: that benchmark alone
        ["multinode"] if any(x in multinode.CONTENDERS and x not in CONTENDERS for x in only)
        else list(BENCHES))
    mn_who = [c for c in multinode.CONTENDERS if c in only] or list(multinode.CONTENDERS)
    who = [c for c in CONTENDERS if c in only] or list(CONTENDERS)
    if benches == ["multinode"]:  # its own contenders; of these columns only psl's
        who = ["psl"]
    # The throughput ratio needs the plain pool of this same run.
    if "throughput" in benches and "psl" in who and "tpe" not in who:
        who.insert(0, "tpe")

    t_start = time.perf_counter()
    info = machine_info()
    print(f"Machine: {info['cpu']}, {info['cores']} cores"
          + (f" ({info['usable_cores']} usable)" if "usable_cores" in info else "")
          + f", {info['python']}, {info['platform']}")
    if "loadavg" in info:
        print(f"Load average at start: {info['loadavg']}")
    print(f"Workers: {WORKERS} threads per contender; mode: {'quick' if args.quick else 'full'}")

    rep = Report(list(who))
    results = {}
    skipped = {}
    aps_ok, aps_err = load_apscheduler()
    if "apscheduler" in who and not aps_ok:
        rep.note(f"apscheduler not importable ({aps_err}); its rows are skipped "
                 "(pip install -r benchmarks/requirements.txt)")
        skipped["apscheduler"] = "not installed"
    if "psl" in who and load_psl() is None:
        rep.note(f"pysched_lightning not importable ({_psl_error}); its rows are skipped")
        skipped["psl"] = "not importable"
    if psutil is None:
        rep.note("psutil not installed; no per-thread CPU breakdown in the JSON")
    active = [c for c in who if c not in skipped]

    def run(bench, name, fn, *a):
        print(f"  {bench:<11} {name:<12}", end=" ", flush=True)
        t = time.perf_counter()
        try:
            r = fn(name, *a)
        except NotSupported:
            print("n/a", flush=True)
            return None
        except Exception as exc:
            print(f"ERROR {type(exc).__name__}: {exc}", flush=True)
            traceback.print_exc(limit=4)
            r = {"error": f"{type(exc).__name__}: {exc}"}
        else:
            print(f"done in {time.perf_counter() - t:.1f} s", flush=True)
        results.setdefault(bench, {})[name] = r
        return r

    def skip_cells(*keys):
        for c, why in skipped.items():
            for k in keys:
                rep.cell(k, c, f"skipped ({why})")

    def error_cells(r, name, *keys):
        for k in keys:
            rep.cell(k, name, "ERROR: " + r["error"])
        if name == "psl":
            for k in keys:
                rep.target(k, rep.targets.get(k, ("", None))[0], False)

    n_tp, reps = cfg["tp_n"], cfg["tp_repeats"]

    # 1. throughput ------------------------------------------------------
    tp_base = tp_psl = None
    if "throughput" in benches:
        key = "throughput"
        turns = cfg["tp_turns"]
        print(f"Throughput: {n_tp:,} no-op tasks due now, best of {turns} rounds taken in "
              f"turns, after a warm-up")
        rep.measure(key, f"Throughput, {n_tp:,} no-op tasks due now (tasks/s, best of {turns} "
                         f"rounds in turns; ratio to plain TPE: median of the rounds)")
        rep.target(key, f">= {T_THROUGHPUT_RATIO:.2f}x plain TPE", None)
        skip_cells(key)
        tp = run("throughput", "all", lambda *_: bench_throughput_in_turns(active, cfg)) or {}
        for name in active:
            r = tp.get(name)
            if r is None:
                continue
            print(f"  throughput  {name:<12} best {r.get('tasks_per_s', 0):,.0f}/s")
            if "error" in r:
                error_cells(r, name, key)
                continue
            tps = r["tasks_per_s"]
            if name == "tpe":
                tp_base = tps
            if name == "psl":
                tp_psl = tps
            # each round's rate against the plain pool's in the same round: the
            # median of those ratios, which the drift between rounds does not move
            base_rounds = (tp.get("tpe") or {}).get("runs_tasks_per_s")
            ratio = statistics.median(x / b for x, b in zip(r["runs_tasks_per_s"], base_rounds)) \
                if base_rounds else None
            r["ratio_to_tpe"] = ratio
            rep.cell(key, name, f"{fmt_int(tps)}" + (f" ({ratio:.2f}x)" if ratio else ""))
            if name == "psl":
                rep.target(key, rep.targets[key][0], ratio is not None and ratio >= T_THROUGHPUT_RATIO)

    # 2. lateness ---------------------------------------------------------
    if "lateness" in benches:
        key = "lateness"
        n, step = cfg["late_n"], cfg["late_step"]
        print(f"Lateness: {n:,} tasks {step * 1000:g} ms apart, added up front")
        rep.measure(key, f"Lateness, {n:,} tasks spread over {n * step:g} s (ms, p50 / p99 / max)")
        rep.target(key, f"p99 < {T_LATE_P99_MS:g} ms", None)
        skip_cells(key)
        for name in active:
            r = run("lateness", name, bench_lateness, cfg)
            if r is None:
                continue
            if "error" in r:
                error_cells(r, name, key)
                continue
            missing = r["n"] - r["completed"]
            txt = f"{fmt_ms(r['p50_ms'])} / {fmt_ms(r['p99_ms'])} / {fmt_ms(r['max_ms'])}"
            if missing:
                txt += f" ({missing:,} never ran)"
            rep.cell(key, name, txt)
            if name == "psl":
                rep.target(key, rep.targets[key][0], r["p99_ms"] < T_LATE_P99_MS and not missing)

    # 3. add / memory / cancel ---------------------------------------------
    if "add_cancel" in benches:
        n, nc = cfg["add_n"], cfg["cancel_n"]
        print(f"Adding {n:,} tasks an hour away (rate; then memory, separately), canceling {nc:,}")
        rep.measure("add", f"Add {n:,} tasks an hour away (adds/s)")
        rep.measure("memory", "Memory per pending task (bytes, tracemalloc)")
        rep.measure("cancel", f"Cancel {nc:,} of the {n:,} (cancels/s)")
        rep.target("add", f"{n:,} in < {n / T_ADD_RATE:g} s", None)
        rep.target("memory", f"< {T_MEM_BYTES} B", None)
        rep.target("cancel", f">= {T_CANCEL_RATE:,}/s", None)
        skip_cells("add", "memory", "cancel")
        for name in active:
            r = run("add_cancel", name, bench_add_cancel, cfg)
            if r is None:
                continue
            if "error" in r:
                error_cells(r, name, "add", "memory", "cancel")
                continue
            sfx = f" [{r['n']:,} tasks]" if r["n"] != n else ""
            rep.cell("add", name, f"{fmt_int(r['add_per_s'])} ({r['add_s']:.2f} s){sfx}")
            if "bytes_per_task" in r:
                rep.cell("memory", name, f"{fmt_int(r['bytes_per_task'])}{sfx}")
            csfx = ""
            if r["n_cancel"] != nc or r["n"] != n:
                csfx = f" [{r['n_cancel']:,} of {r['n']:,}" + ("; O(n) each]" if name == "sched" else "]")
            rep.cell("cancel", name, f"{fmt_int(r['cancel_per_s'])}{csfx}")
            if name == "psl":
                rep.target("add", rep.targets["add"][0], r["add_per_s"] >= T_ADD_RATE)
                rep.target("memory", rep.targets["memory"][0],
                           "bytes_per_task" in r and r["bytes_per_task"] < T_MEM_BYTES)
                rep.target("cancel", rep.targets["cancel"][0], r["cancel_per_s"] >= T_CANCEL_RATE)

    # 4. recurring ----------------------------------------------------------
    if "recurring" in benches:
        n, iv, dur = cfg["rec_n"], cfg["rec_interval"], cfg["rec_duration"]
        print(f"Recurring: {n} tasks every {iv * 1000:g} ms for {dur:g} s")
        head = f"Recurring, {n} tasks every {iv * 1000:g} ms for {dur:g} s:"
        rep.measure("rec_runs", f"{head} runs done / expected")
        rep.measure("rec_late", f"{head} firing lateness (ms, p50 / p99)")
        rep.target("rec_runs", "all runs", None)
        rep.target("rec_late", f"p99 < {T_REC_P99_MS:g} ms", None)
        skip_cells("rec_runs", "rec_late")
        for name in active:
            r = run("recurring", name, bench_recurring, cfg)
            if r is None:
                continue
            if "error" in r:
                error_cells(r, name, "rec_runs", "rec_late")
                continue
            rep.cell("rec_runs", name, f"{r['done']:,} / {r['expected']:,}")
            rep.cell("rec_late", name, f"{fmt_ms(r['p50_ms'])} / {fmt_ms(r['p99_ms'])}")
            if name == "psl":
                rep.target("rec_runs", "all runs", r["done"] == r["expected"])
                rep.target("rec_late", rep.targets["rec_late"][0], r["p99_ms"] < T_REC_P99_MS)

    # 5. idle + wake-up ----------------------------------------------------
    if "idle" in benches:
        tries = cfg["wake_tries"]
        print(f"Idle CPU over {cfg['idle_s']:g} s with one task an hour away; wake-up latency")
        rep.measure("idle", f"Idle CPU over {cfg['idle_s']:g} s, one task an hour away (% of a core)")
        rep.measure("wake", f"Wake-up: add a task due now while asleep (ms, median of {tries}; max)")
        rep.target("idle", f"< {T_IDLE_CPU:g} %", None)
        rep.target("wake", f"< {T_WAKE_MS:g} ms", None)
        skip_cells("idle", "wake")
        for name in active:
            r = run("idle", name, bench_idle, cfg)
            if r is None:
                continue
            if "error" in r:
                error_cells(r, name, "idle", "wake")
                continue
            if "idle_cpu_pct" in r:
                rep.cell("idle", name, f"{r['idle_cpu_pct']:.3f}")
            floor = " (submit→start)" if name == "tpe" else ""
            rep.cell("wake", name, f"{fmt_ms(r['wake_median_ms'])}; {fmt_ms(r['wake_max_ms'])}{floor}")
            if name == "psl":
                rep.target("idle", rep.targets["idle"][0], r["idle_cpu_pct"] < T_IDLE_CPU)
                rep.target("wake", rep.targets["wake"][0], r["wake_median_ms"] < T_WAKE_MS)

    # 6. sqlite store -------------------------------------------------------
    if "sqlite" in benches and "psl" in who:
        key = "sqlite"
        print(f"Throughput with a sqlite store: {n_tp:,} tasks due now, best of {reps}")
        rep.measure(key, f"Throughput with sqlite store, {n_tp:,} tasks (tasks/s; ratio to in-memory psl)")
        rep.target(key, f">= {T_SQLITE_RATIO:.2f}x in-memory", None)
        if "psl" in skipped:
            rep.cell(key, "psl", f"skipped ({skipped['psl']})")
        else:
            if tp_psl is None:  # the in-memory reference, from this same run
                r = run("throughput", "psl", bench_throughput, cfg)
                if r and "tasks_per_s" in r:
                    tp_psl = r["tasks_per_s"]
            with tempfile.TemporaryDirectory(prefix="psl-bench-") as tmp:
                r = run("sqlite", "psl", lambda _n, c: bench_sqlite(c, tmp), cfg)
            if r is None:
                pass
            elif "skipped" in r:
                rep.note("sqlite store row skipped: " + r["skipped"])
                rep.cell(key, "psl", "skipped (store= not implemented)")
            elif "error" in r:
                error_cells(r, "psl", key)
            else:
                ratio = r["tasks_per_s"] / tp_psl if tp_psl else None
                r["ratio_to_in_memory"] = ratio
                r["in_memory_tasks_per_s"] = tp_psl
                rep.cell(key, "psl", f"{fmt_int(r['tasks_per_s'])}"
                         + (f" ({ratio:.2f}x of {fmt_int(tp_psl)})" if ratio else ""))
                rep.target(key, rep.targets[key][0], ratio is not None and ratio >= T_SQLITE_RATIO)

    # 7. hard tasks ---------------------------------------------------------
    if "hard" in benches:
        key = "hard"
        n_hard, hard_reps = HARD_SIZES["quick" if args.quick else "full"]
        print(f"Hard tasks: {n_hard:,} no-ops on {HARD_WORKERS} worker processes, "
              f"best of {hard_reps} rounds taken in turns, after a warm-up")
        rep.measure(key, f"Hard tasks, {n_hard:,} no-ops on {HARD_WORKERS} processes (tasks/s, "
                         f"best of {hard_reps}, in turns; ratio to a raw loky pool)")
        rep.target(key, f">= {T_HARD_RATIO:.2f}x raw loky", None)
        # The raw pools are always measured: loky is the baseline of the ratios.
        names = [name for name in HARD_CONTENDERS
                 if not (name in ("apscheduler", "psl") and (name not in who or name in skipped))]
        hard = run("hard", "all", lambda *_: bench_hard(names, n_hard, hard_reps)) or {}
        for name in names:
            if name in hard:
                print(f"  hard        {name:<12} best {hard[name].get('tasks_per_s', 0):,.0f}/s")
        base = hard.get("loky", {}).get("tasks_per_s")

        def hard_cell(name):
            r = hard.get(name)
            if r is None:
                return None
            if "error" in r:
                return "ERROR: " + r["error"]
            ratio = r["tasks_per_s"] / base if base else None
            r["ratio_to_loky"] = ratio
            return fmt_int(r["tasks_per_s"]) + (f" ({ratio:.2f}x)" if ratio else "")

        plain = "; ".join(f"{label} {hard_cell(name)}" for name, label in
                          (("loky", "raw loky"), ("stdlib", "stdlib ProcessPoolExecutor"))
                          if name in hard)
        if "tpe" in rep.columns:
            rep.cell(key, "tpe", plain)
        else:
            rep.note(f"hard tasks, plain process pools: {plain}")
        for name in ("apscheduler", "psl"):
            if name in skipped and name in rep.columns:
                rep.cell(key, name, f"skipped ({skipped[name]})")
            elif name in hard:
                rep.cell(key, name, hard_cell(name))
        r = hard.get("psl")
        if r is not None:
            ok = "error" not in r and r.get("ratio_to_loky") is not None \
                and r["ratio_to_loky"] >= T_HARD_RATIO
            rep.target(key, rep.targets[key][0], ok)
    # 7. remote: a service over RabbitMQ beside Celery ------------------------
    if "remote" in benches and "psl" in who:
        n = cfg["remote_n"]
        print(f"Remote: {n:,} no-op tasks through RabbitMQ, pysched serve beside a Celery worker")
        rep.columns.append("celery")
        rep.measure("remote_rt", f"Remote round trip, {n:,} no-op tasks one at a time, launch → "
                                 "response (ms, p50 / p99)")
        rep.measure("remote_tp", f"Remote throughput, {n:,} launched back to back, responses "
                                 f"collected (tasks/s, best of {cfg['remote_repeats']})")
        rep.target("remote_rt", "p50 <= Celery's", None)
        rep.target("remote_tp", ">= Celery's", None)
        if "psl" in skipped:
            for key in ("remote_rt", "remote_tp"):
                rep.cell(key, "psl", f"skipped ({skipped['psl']})")
        else:
            with tempfile.TemporaryDirectory(prefix="psl-remote-") as tmp:
                r = run("remote", "psl+celery", lambda _n, c: bench_remote(c, args.broker, tmp),
                        cfg)
            if r is None:
                pass
            elif "skipped" in r:
                rep.note("remote rows skipped: " + r["skipped"])
                for key in ("remote_rt", "remote_tp"):
                    rep.cell(key, "psl", f"skipped ({r['skipped']})")
            elif "error" in r:
                error_cells(r, "psl", "remote_rt", "remote_tp")
            else:
                for name in ("celery", "psl"):
                    x = r[name]
                    rep.cell("remote_rt", name, f"{fmt_ms(x['p50_ms'])} / {fmt_ms(x['p99_ms'])}")
                    rep.cell("remote_tp", name, fmt_int(x["tasks_per_s"]))
                c, p = r["celery"], r["psl"]
                rep.target("remote_rt", rep.targets["remote_rt"][0], p["p50_ms"] <= c["p50_ms"])
                rep.target("remote_tp", rep.targets["remote_tp"][0],
                           p["tasks_per_s"] >= c["tasks_per_s"])

    # 8. several nodes on one PostgreSQL server, beside APScheduler 4 and procrastinate
    if "multinode" in benches:
        size = multinode.SIZES["quick" if args.quick else "full"]
        print(f"Multi-node: {', '.join(mn_who)} as separate node processes on PostgreSQL "
              f"({args.pg}); a fresh database per measurement")
        r = run("multinode", "all", lambda *_: multinode.bench_multinode(size, mn_who, args.pg))
        if r is not None and "error" in r:
            rep.note("multinode benchmark failed: " + r["error"])
        elif r is not None:
            if "skipped" in r:
                rep.note("multinode rows skipped: " + r["skipped"])
            multinode.fill_report(rep, r, size, fmt_int)

    elapsed = time.perf_counter() - t_start
    print()
    print(f"Machine: {info['cpu']}, {info['cores']} cores, {info['python']}"
          + (f"; APScheduler {info['apscheduler']}" if info.get("apscheduler") else "")
          + (f"; pysched_lightning {info['pysched_lightning']}" if info.get("pysched_lightning") else ""))
    print(f"{WORKERS} worker threads each. Throughput: best of {reps} runs after a warm-up; ratios are "
          "against figures from this same run. — = not applicable.")
    print()
    print(rep.markdown())
    print()
    for n in rep.notes:
        print(f"Note: {n}")
    print(f"Total time: {elapsed:.1f} s")

    out = {
        "machine": info,
        "mode": "quick" if args.quick else "full",
        "config": cfg,
        "workers": WORKERS,
        "elapsed_s": round(elapsed, 2),
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "results": results,
        "table": rep.rows(),
        "notes": rep.notes,
    }
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2, default=str)
        print(f"JSON written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
