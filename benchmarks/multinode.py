"""Several scheduler nodes on one PostgreSQL server, beside two peers.

Used by ``python benchmarks/run.py --only multinode``. Every node is its own
process (``_multinode_node.py``), started here in a new session and killed by
process group in ``finally``. Each measurement runs on a database made for it
(a copy of a seed database that the contender's own loader filled, so the
slow adds of a contender are paid once, not per measurement) and dropped
after. The contenders:

  psl            pysched_lightning nodes, ``Scheduler(store=URL,
                 executor=ThreadPoolExecutor(4))``, public API only
  apscheduler4   APScheduler 4.0.0a6, SQLAlchemyDataStore (psycopg async
                 engine) + PsycopgEventBroker, max_concurrent_jobs=4
  procrastinate  procrastinate 3.10, PsycopgConnector, an in-process worker
                 (concurrency 4)

The peers are installed on first use with ``pip install --target
benchmarks/.peers/<name>`` (APScheduler 3 is pinned for the other rows, so
they cannot live in the same environment) and put on the PYTHONPATH of their
node processes only.

Workloads: throughput of N due-now one-shot jobs on k nodes (with duplicates,
lost jobs and CPU per execution of the nodes and of the PostgreSQL server);
add -> start latency on 2 nodes; failover of a recurring job and of a running
job when its node is SIGKILLed; psl on PostgreSQL against psl on SQLite.
"""
from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
NODE_SCRIPT = HERE / "_multinode_node.py"
PEERS_DIR = HERE / ".peers"
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432"
WORKERS = 4
LEASE = 10.0  # psl's default lease; APScheduler 4 is given the same

#: What each peer installs into benchmarks/.peers/<name> (never into the venv).
PEERS = {
    "apscheduler4": ["apscheduler[sqlalchemy]==4.0.0a6", "sqlalchemy[asyncio]>=2", "sniffio"],
    "procrastinate": ["procrastinate==3.10.*"],
}
CONTENDERS = ["psl", "apscheduler4", "procrastinate"]
LABELS = {
    "apscheduler4": "APScheduler 4.0.0a6 (SQLAlchemy + psycopg)",
    "procrastinate": "procrastinate 3.10 (psycopg)",
}

SIZES = {
    # n_by: fewer jobs for a slow contender (its cells say how many)
    "full": dict(n=5_000, n_by={"apscheduler4": 600, "procrastinate": 2_500}, ks=(1, 2, 4),
                 add_n=200, add_every=0.02, beat=0.2, sleep=5.0, window=LEASE + 3.0),
    "quick": dict(n=1_000, n_by={"apscheduler4": 300}, ks=(1, 2), add_n=50, add_every=0.02,
                  beat=0.2, sleep=5.0, window=LEASE + 3.0),
}

# Targets for psl (from the issue).
T_TP_2NODES = 3_000
T_TP_VS_PROCRASTINATE = 8.0
T_P50_MS, T_P99_MS = 2.0, 10.0
T_PG_VS_SQLITE = 0.5      # within 2x of the SQLite store

# psl's run status for an interrupted run (the store's runs.status column)
PSL_INTERRUPTED = 7


class Skip(Exception):
    """This contender cannot run here; the message says why."""


def log(text):
    print(f"  multinode   {text}", flush=True)


# --------------------------------------------------------------------------- peers

def ensure_peer(name):
    """The folder holding *name*'s packages, installed there on first use."""
    spec = PEERS[name]
    target = PEERS_DIR / name
    marker = target / ".bench-installed"
    if marker.exists() and marker.read_text() == json.dumps(spec):
        return target
    log(f"installing {' '.join(spec)} into {target} (once)")
    tmp = PEERS_DIR / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    PEERS_DIR.mkdir(parents=True, exist_ok=True)
    try:
        proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                               "--disable-pip-version-check", "--target", str(tmp), *spec],
                              capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise Skip(f"pip install failed: {exc}") from None
    if proc.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tail = [ln for ln in proc.stderr.splitlines() if not ln.startswith("WARNING")][-1:]
        raise Skip(f"pip install {' '.join(spec)} failed: {' '.join(tail)[:200]}")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    marker.write_text(json.dumps(spec))
    return target


# ------------------------------------------------------------------------ databases

class Databases:
    """Make and drop the benchmark's databases on one server (psycopg, autocommit)."""

    def __init__(self, base):
        import psycopg
        self.base = base.rstrip("/")
        self.admin = psycopg.connect(self.base + "/postgres", autocommit=True, connect_timeout=5)
        self.made = []

    def url(self, name):
        return f"{self.base}/{name}"

    def create(self, template=None):
        name = f"psl_bench_{uuid.uuid4().hex[:10]}"
        sql = f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")
        self.admin.execute(sql)
        self.made.append(name)
        return name

    def drop(self, name):
        try:
            self.admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except Exception as exc:
            log(f"could not drop database {name}: {exc}")
        if name in self.made:
            self.made.remove(name)

    def query(self, name, sql):
        import psycopg
        with psycopg.connect(self.url(name), autocommit=True, connect_timeout=5) as conn:
            return conn.execute(sql).fetchall()

    def close(self):
        for name in list(self.made):
            self.drop(name)
        self.admin.close()


# ---------------------------------------------------------------------------- nodes

class Node:
    """One node process; its stdout lines are read by a thread."""

    def __init__(self, contender, name, url, outdir, pythonpath, extra=()):
        self.name = name
        self.out = os.path.join(outdir, f"{name}.out")
        self.err = open(os.path.join(outdir, f"{name}.log"), "w")
        env = dict(os.environ, PSL_BENCH_OUT=self.out, PSL_BENCH_NODE=name,
                   PYTHONPATH=os.pathsep.join(p for p in pythonpath if p))
        self.proc = subprocess.Popen(
            [sys.executable, str(NODE_SCRIPT), contender, "serve", url,
             "--workers", str(WORKERS), "--lease", str(LEASE), *extra],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err, text=True,
            env=env, start_new_session=True)
        self.ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            if line.strip() == "ready":
                self.ready.set()

    def say(self, word):
        try:
            self.proc.stdin.write(word + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            pass

    def kill(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()

    def stderr_tail(self):
        self.err.flush()
        try:
            with open(self.err.name) as f:
                lines = [ln.strip() for ln in f if ln.strip()]
        except OSError:
            return ""
        return lines[-1][:300] if lines else ""


class Cluster:
    """k node processes of one contender; never outlives the ``with`` block."""

    def __init__(self, contender, url, outdir, pythonpath):
        self.contender, self.url, self.outdir, self.pythonpath = contender, url, outdir, pythonpath
        self.nodes = []

    def __enter__(self):
        return self

    def start(self, k, extra_first=(), timeout=60.0):
        for i in range(k):
            self.nodes.append(Node(self.contender, f"n{len(self.nodes) + 1}", self.url,
                                   self.outdir, self.pythonpath, extra_first if i == 0 else ()))
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            while not node.ready.wait(0.1):
                if node.proc.poll() is not None:
                    raise RuntimeError(f"node {node.name} exited with {node.proc.returncode} "
                                       f"before it was ready: {node.stderr_tail()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"node {node.name} not ready in {timeout:g} s")

    def go(self):
        for node in self.nodes:
            node.say("go")

    def pids(self):
        return [n.proc.pid for n in self.nodes if n.proc.poll() is None]

    def dead(self):
        return [n for n in self.nodes if n.proc.poll() is not None]

    def __exit__(self, *exc):
        alive = [n for n in self.nodes if n.proc.poll() is None]
        for node in alive:
            node.say("stop")
        deadline = time.monotonic() + 15
        for node in alive:
            try:
                node.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for node in self.nodes:
            node.kill()  # the whole process group, whatever it left behind
            node.err.close()


def load(contender, url, pythonpath, outdir, *args, timeout=300):
    """Run the contender's loader; seconds it took (its own timing)."""
    env = dict(os.environ, PSL_BENCH_OUT=os.path.join(outdir, "loader.out"),
               PSL_BENCH_NODE="loader", PYTHONPATH=os.pathsep.join(p for p in pythonpath if p))
    proc = subprocess.Popen([sys.executable, str(NODE_SCRIPT), contender, "load", url,
                             "--workers", str(WORKERS), "--lease", str(LEASE), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{contender} loader did not finish in {timeout} s") from None
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if proc.returncode != 0:
        tail = [ln for ln in err.splitlines() if ln.strip()][-1:] or ["no output"]
        raise RuntimeError(f"{contender} loader failed: {tail[0][:300]}")
    for line in out.splitlines():
        if line.startswith("{"):
            return json.loads(line)["seconds"]
    raise RuntimeError(f"{contender} loader printed no timing")


# -------------------------------------------------------------------------- records

def read_records(outdir):
    """Executions [(job, node, pid, start, end)] and adds {job: time} from the node files."""
    runs, adds = [], {}
    for path in glob.glob(os.path.join(outdir, "n*.out")):
        with open(path) as f:
            for line in f:
                parts = line.split()
                if not line.endswith("\n") or len(parts) < 3:
                    continue  # a line being written
                try:
                    if parts[0] == "ADD":
                        adds[parts[1]] = float(parts[2])
                    elif len(parts) == 5:
                        end = None if parts[4] == "-" else float(parts[4])
                        runs.append((parts[0], parts[1], int(parts[2]), float(parts[3]), end))
                except ValueError:
                    continue
    return runs, adds


def wait_runs(outdir, want, prefix, nodes, stall=10.0, limit=120.0):
    """Poll until *want* distinct jobs named prefix* ran, or nothing new for
    *stall* seconds, or *limit*; the runs of those jobs."""
    t0 = last_change = time.monotonic()
    seen = -1
    while True:
        runs, _ = read_records(outdir)
        mine = [r for r in runs if r[0].startswith(prefix)]
        done = len({r[0] for r in mine})
        now = time.monotonic()
        if len(mine) != seen:
            seen, last_change = len(mine), now
        if done >= want or now - last_change > stall or now - t0 > limit:
            return mine
        if nodes.dead():
            dead = nodes.dead()[0]
            raise RuntimeError(f"node {dead.name} died (exit {dead.proc.returncode}): "
                               f"{dead.stderr_tail()}")
        time.sleep(0.05)


def correctness(runs, ids):
    counts = {}
    for r in runs:
        counts[r[0]] = counts.get(r[0], 0) + 1
    dup = sum(c - 1 for j, c in counts.items() if j in ids and c > 1)
    lost = sum(1 for j in ids if j not in counts)
    return dup, lost


# ------------------------------------------------------------------------------ CPU

def cpu_of(pids):
    """{pid: user+system seconds} of the processes *pids* (those still up)."""
    import psutil
    out = {}
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            out[pid] = t.user + t.system
        except psutil.Error:
            pass
    return out


def limit_of(node_cpu, pg_cpu, span):
    """What bounded a throughput run, from the CPU seconds each node used
    (*node_cpu*), the database server's (*pg_cpu*) and the run's *span*:
    the machine's cores when they were nearly all busy, else one node's
    interpreter when that node kept about one core busy (its GIL), else
    waiting on the database (its round trips and commits: neither the
    nodes nor the server kept a core busy)."""
    cores = os.cpu_count() or 1
    busy = (sum(node_cpu) + pg_cpu) / (span * cores)
    busiest = max(node_cpu, default=0.0) / span
    if busy >= 0.85:
        what = f"the machine's {cores} cores"
    elif busiest >= 0.85:
        what = "one node's interpreter (a core)"
    else:
        what = "waiting on the database (round trips, commits)"
    return {"cores_busy": busy, "busiest_node_core": busiest,
            "pg_cores": pg_cpu / span, "limit": what}


def postgres_cpu():
    """{pid: user+system seconds} of every ``postgres`` process on the machine."""
    import psutil
    out = {}
    for p in psutil.process_iter(["name"]):
        if p.info["name"] == "postgres":
            try:
                t = p.cpu_times()
                out[p.pid] = t.user + t.system
            except psutil.Error:
                pass
    return out


def postgres_delta(before, after):
    # a backend that started during the run counts whole; one that ended is lost
    return sum(v - before.get(pid, 0.0) for pid, v in after.items())


# ----------------------------------------------------------------------- workloads

class Seeds:
    """Databases filled once by a contender's loader, copied per measurement."""

    def __init__(self, dbs, contender, pythonpath, outdir):
        self.dbs, self.contender, self.pythonpath, self.outdir = dbs, contender, pythonpath, outdir
        self.seeds, self.load_s = {}, {}

    def fresh(self, *args):
        if args not in self.seeds:
            seed = self.dbs.create()
            self.seeds[args] = seed
            self.load_s[args] = load(self.contender, self.dbs.url(seed), self.pythonpath,
                                     self.outdir, *args)
        return self.dbs.create(template=self.seeds[args])

    def close(self):
        for seed in self.seeds.values():
            self.dbs.drop(seed)


class SQLiteSeeds:
    """The same for psl on a SQLite file: the seed file is copied."""

    def __init__(self, tmp, pythonpath, outdir):
        self.tmp, self.pythonpath, self.outdir = tmp, pythonpath, outdir
        self.seeds, self.load_s = {}, {}

    def url(self, name):
        return "sqlite:///" + os.path.join(self.tmp, name)

    def fresh(self, *args):
        if args not in self.seeds:
            seed = f"seed-{len(self.seeds)}.db"
            self.seeds[args] = seed
            self.load_s[args] = load("psl", self.url(seed), self.pythonpath, self.outdir, *args)
        name = f"run-{uuid.uuid4().hex[:8]}.db"
        for sfx in ("", "-wal", "-shm"):
            src = os.path.join(self.tmp, self.seeds[args] + sfx)
            if os.path.exists(src):
                shutil.copy(src, os.path.join(self.tmp, name + sfx))
        return name

    def drop(self, name):
        for sfx in ("", "-wal", "-shm"):
            try:
                os.remove(os.path.join(self.tmp, name + sfx))
            except FileNotFoundError:
                pass


def throughput(contender, seeds, url_of, drop, pythonpath, n, k, tmp):
    db = seeds.fresh("--hits", str(n))
    outdir = tempfile.mkdtemp(prefix=f"tp-{contender}-{k}-", dir=tmp)
    try:
        with Cluster(contender, url_of(db), outdir, pythonpath) as nodes:
            nodes.start(k)
            pids = nodes.pids()
            cpu0, pg0 = cpu_of(pids), postgres_cpu()
            go_at = time.time()
            nodes.go()
            runs = wait_runs(outdir, n, "j", nodes)
            cpu1, pg1 = cpu_of(pids), postgres_cpu()
            # (from go to the last run: the nodes' start-up counts too)
            wall = max((r[4] for r in runs), default=time.time()) - go_at
            time.sleep(0.5)  # a late duplicate still counts
            runs = [r for r in read_records(outdir)[0] if r[0].startswith("j")]
        dup, lost = correctness(runs, {f"j{i}" for i in range(n)})
        span = max(r[4] for r in runs) - min(r[3] for r in runs) if runs else None
        done = len({r[0] for r in runs})
        node_cpu = [cpu1[pid] - cpu0.get(pid, 0.0) for pid in cpu1]
        pg_cpu = postgres_delta(pg0, pg1)
        return {"n": n, "k": k, "done": done, "duplicates": dup, "lost": lost,
                "span_s": span, "exec_per_s": done / span if span else None,
                "per_node": {node: sum(1 for r in runs if r[1] == node)
                             for node in sorted({r[1] for r in runs})},
                "node_cpu_us": sum(node_cpu) / n * 1e6,
                "pg_cpu_us": pg_cpu / n * 1e6,
                **limit_of(node_cpu, pg_cpu, max(wall, 1e-6))}
    finally:
        drop(db)


def latency(contender, seeds, url_of, drop, pythonpath, cfg, tmp):
    n, every = cfg["add_n"], cfg["add_every"]
    db = seeds.fresh()
    outdir = tempfile.mkdtemp(prefix=f"lat-{contender}-", dir=tmp)
    try:
        with Cluster(contender, url_of(db), outdir, pythonpath) as nodes:
            nodes.start(2, extra_first=("--add", str(n), "--every", str(every)))
            nodes.go()
            wait_runs(outdir, n, "a", nodes, limit=n * every + 60)
            time.sleep(0.3)
            runs, adds = read_records(outdir)
        runs = [r for r in runs if r[0].startswith("a")]
        first = {}
        for r in sorted(runs, key=lambda r: r[3]):
            first.setdefault(r[0], r[3])
        lat = sorted((first[j] - adds[j]) * 1e3 for j in first if j in adds)
        dup, lost = correctness(runs, set(adds))
        if not lat:
            raise RuntimeError("no added job ran")
        return {"n": n, "added": len(adds), "ran": len(first), "duplicates": dup, "lost": lost,
                "p50_ms": _pct(lat, 50), "p99_ms": _pct(lat, 99), "max_ms": lat[-1],
                "by_node": {node: sum(1 for r in runs if r[1] == node)
                            for node in sorted({r[1] for r in runs})}}
    finally:
        drop(db)


def _pct(xs, p):
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def failover_beat(contender, seeds, url_of, drop, pythonpath, cfg, tmp, probe=None):
    """2 nodes, one job every cfg['beat'] s: SIGKILL the node running it; the gap
    from the kill to the next run on the survivor. *probe(db)* may describe
    the schedule's state in the store at the kill (which node holds it)."""
    beat = cfg["beat"]
    db = seeds.fresh("--beat", str(beat))
    outdir = tempfile.mkdtemp(prefix=f"beat-{contender}-", dir=tmp)
    try:
        with Cluster(contender, url_of(db), outdir, pythonpath) as nodes:
            nodes.start(2)
            nodes.go()
            deadline = time.monotonic() + 30
            while True:
                beats = [r for r in read_records(outdir)[0] if r[0] == "beat"]
                if len(beats) >= 5:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the recurring job ran {len(beats)} times in 30 s")
                time.sleep(0.05)
            victim_name = max(beats, key=lambda r: r[3])[1]
            victim = next(n for n in nodes.nodes if n.name == victim_name)
            before = len(beats)
            at_kill = probe(db) if probe else None
            t_kill = time.time()
            victim.kill()
            deadline = time.monotonic() + cfg["window"] + beat
            after = []
            while time.monotonic() < deadline and not after:
                after = [r for r in read_records(outdir)[0]
                         if r[0] == "beat" and r[1] != victim_name and r[3] > t_kill]
                time.sleep(0.02)
        gap = min(r[3] for r in after) - t_kill if after else None
        return {"interval_s": beat, "runs_before_kill": before, "killed": victim_name,
                "gap_s": gap, "window_s": cfg["window"] + beat, "store_at_kill": at_kill}
    finally:
        drop(db)


def failover_running(contender, seeds, url_of, drop, pythonpath, cfg, tmp, probe):
    """2 nodes, a job sleeping cfg['sleep'] s: SIGKILL the node running it; when
    the store stops showing it running on the dead node (probe) and when it
    starts again elsewhere."""
    db = seeds.fresh("--sleeper", str(cfg["sleep"]))
    outdir = tempfile.mkdtemp(prefix=f"run-{contender}-", dir=tmp)
    try:
        with Cluster(contender, url_of(db), outdir, pythonpath) as nodes:
            nodes.start(2)
            nodes.go()
            deadline = time.monotonic() + 30
            while True:
                started = [r for r in read_records(outdir)[0] if r[0] == "sleeper"]
                if started:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError("the sleeping job did not start in 30 s")
                time.sleep(0.02)
            victim_name = started[0][1]
            victim = next(n for n in nodes.nodes if n.name == victim_name)
            time.sleep(0.3)  # well inside the 5 s run
            t_kill = time.time()
            victim.kill()
            state0 = probe(db, victim_name)
            recorded = rerun = None
            state = state0
            deadline = time.monotonic() + cfg["window"]
            while time.monotonic() < deadline and (recorded is None or rerun is None):
                if recorded is not None and time.time() - t_kill > recorded + 2.0:
                    break  # recorded, and not started again soon after: no retry owed
                if recorded is None:
                    state = probe(db, victim_name)
                    if state.get("done"):
                        recorded = time.time() - t_kill
                if rerun is None:
                    again = [r for r in read_records(outdir)[0]
                             if r[0] == "sleeper" and r[1] != victim_name and r[3] > t_kill]
                    if again:
                        rerun = again[0][3] - t_kill
                time.sleep(0.05)
        return {"sleep_s": cfg["sleep"], "killed": victim_name, "window_s": cfg["window"],
                "recorded_s": recorded, "rerun_s": rerun, "store_after_kill": state0.get("text"),
                "store_at_end": state.get("text")}
    finally:
        drop(db)


# ----------------------------------------------------------- store probes (read only)

def probe_psl(dbs):
    def probe(db, victim):
        try:
            rows = dbs.query(db, "SELECT status FROM runs WHERE task_id = 'sleeper'")
        except Exception as exc:  # the store's tables are its own business
            return {"text": f"unreadable ({type(exc).__name__})"}
        statuses = [r[0] for r in rows]
        return {"text": f"run statuses {statuses}", "done": PSL_INTERRUPTED in statuses}
    return probe


def probe_aps(dbs):
    def probe(db, victim):
        try:
            jobs = dbs.query(db, "SELECT acquired_by FROM jobs")
            results = dbs.query(db, "SELECT outcome FROM job_results")
        except Exception as exc:
            return {"text": f"unreadable ({type(exc).__name__})"}
        owners = [r[0] for r in jobs]
        outcomes = [str(r[0]) for r in results]
        return {"text": f"job acquired_by {owners}, results {outcomes}",
                "done": bool(outcomes) or any(o != victim for o in owners)}
    return probe


def probe_procrastinate(dbs):
    def probe(db, victim):
        try:
            rows = dbs.query(db, "SELECT status::text FROM procrastinate_jobs "
                                 "WHERE task_name = 'sleeper'")
        except Exception as exc:
            return {"text": f"unreadable ({type(exc).__name__})"}
        statuses = [r[0] for r in rows]
        return {"text": f"job status {statuses}", "done": any(s != "doing" for s in statuses)}
    return probe


PROBES = {"psl": probe_psl, "apscheduler4": probe_aps, "procrastinate": probe_procrastinate}


def schedule_holder_aps(dbs):
    """APScheduler 4: which scheduler holds the schedule's lease (it makes the
    jobs; any worker runs them, so the node running the job may not be it)."""
    def probe(db):
        try:
            rows = dbs.query(db, "SELECT acquired_by FROM schedules WHERE id = 'beat'")
        except Exception as exc:
            return f"unreadable ({type(exc).__name__})"
        return f"schedule acquired_by {[r[0] for r in rows]}"
    return probe


BEAT_PROBES = {"apscheduler4": schedule_holder_aps}


# ---------------------------------------------------------------------------- main

def pg_missing(base):
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install 'psycopg[binary]')"
    try:
        psycopg.connect(base.rstrip("/") + "/postgres", connect_timeout=3).close()
    except Exception as exc:
        return f"PostgreSQL not reachable at {base} ({str(exc).strip().splitlines()[0]})"
    try:
        import psutil  # noqa: F401
    except ImportError:
        return "psutil is not installed (pip install -r benchmarks/requirements.txt)"
    return None


def run_contender(name, dbs, cfg, tmp):
    """Every workload for one contender; a failing workload is an error entry."""
    res = {}
    try:
        if name == "psl":
            import pysched_lightning  # noqa: F401 - from the current interpreter
            pythonpath = [str(HERE), str(HERE.parent), os.environ.get("PYTHONPATH", "")]
        else:
            pythonpath = [str(HERE), str(ensure_peer(name))]
    except Skip as exc:
        return {"skipped": str(exc)}
    except ImportError as exc:
        return {"skipped": f"not importable: {exc}"}
    seeds = Seeds(dbs, name, pythonpath, tmp)

    def step(key, fn, *args):
        t = time.perf_counter()
        try:
            res[key] = fn(name, seeds, dbs.url, dbs.drop, pythonpath, *args)
            log(f"{name:<13} {key:<12} done in {time.perf_counter() - t:.1f} s: "
                f"{_short(res[key])}")
        except Exception as exc:
            res[key] = {"error": f"{type(exc).__name__}: {exc}"}
            log(f"{name:<13} {key:<12} ERROR {res[key]['error']}")

    try:
        # A first run on a fresh server process and fresh databases is slower
        # than the next (caches, prepared statements): one small run first,
        # not counted, so that the 1-node row is not the cold one.
        step("warm_up", throughput, max(n_for(name, cfg) // 5, 50), 1, tmp)
        for k in cfg["ks"]:
            step(f"tp_k{k}", throughput, n_for(name, cfg), k, tmp)
            if "error" in res[f"tp_k{k}"] and k == cfg["ks"][0]:
                # the first run failed: the store itself does not work here
                res["skipped"] = res[f"tp_k{k}"]["error"]
                return res
        step("latency", latency, cfg, tmp)
        if name == "procrastinate":
            res["beat"] = {"na": "periodic tasks are per minute at best (cron), no 0.2 s schedule"}
        else:
            holder = BEAT_PROBES.get(name)
            step("beat", failover_beat, cfg, tmp, holder(dbs) if holder else None)
        step("running", failover_running, cfg, tmp, PROBES[name](dbs))
    finally:
        seeds.close()
        res["load_s"] = {" ".join(k) or "(schema only)": v for k, v in seeds.load_s.items()}
    return res


def n_for(name, cfg):
    """Jobs in the throughput workload for *name*."""
    return cfg.get("n_by", {}).get(name, cfg["n"])


def run_psl_sqlite(cfg, tmp):
    """psl with a SQLite store, k=1, the throughput workload: the reference of
    the PostgreSQL store (and a check of this harness while that store is new)."""
    try:
        import pysched_lightning  # noqa: F401
    except ImportError as exc:
        return {"skipped": f"not importable: {exc}"}
    pythonpath = [str(HERE), str(HERE.parent), os.environ.get("PYTHONPATH", "")]
    folder = tempfile.mkdtemp(prefix="sqlite-", dir=tmp)
    seeds = SQLiteSeeds(folder, pythonpath, tmp)
    try:
        r = throughput("psl", seeds, seeds.url, seeds.drop, pythonpath, cfg["n"], 1, tmp)
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    r["load_s"] = next(iter(seeds.load_s.values()), None)
    log(f"psl-sqlite    tp_k1        {_short(r)}")
    return r


def _short(r):
    keys = ("exec_per_s", "duplicates", "lost", "p50_ms", "p99_ms", "gap_s", "recorded_s",
            "rerun_s")
    return ", ".join(f"{k}={r[k]:.4g}" if isinstance(r[k], float) else f"{k}={r[k]}"
                     for k in keys if k in r)


def bench_multinode(cfg, names, base=DEFAULT_PG):
    """All workloads for the contenders *names* (and psl on SQLite when psl is
    among them); a dict of results per contender."""
    print(flush=True)  # run.py's progress line waits for "done"; ours go below it
    why = pg_missing(base)
    if why:
        return {"skipped": why}
    out = {"sizes": dict(cfg), "server": base, "workers": WORKERS, "lease_s": LEASE}
    dbs = Databases(base)
    tmp = tempfile.mkdtemp(prefix="psl-multinode-")
    try:
        for name in names:
            out[name] = run_contender(name, dbs, cfg, tmp)
        if "psl" in names:
            out["psl-sqlite"] = run_psl_sqlite(cfg, tmp)
    finally:
        dbs.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return out


# ---------------------------------------------------------------------------- table

def _cut(text, limit=110):
    """A reason short enough for a table cell (the whole one is in the notes)."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _ms(x):
    return "—" if x is None else f"{x:.2f}" if x < 10 else f"{x:,.0f}"


def _s(x):
    return "none" if x is None else f"{x:.2f} s"


def fill_report(rep, res, cfg, fmt_int):
    """Rows of the multinode benchmark in run.py's Report (columns = contenders)."""
    n = cfg["n"]
    for name in CONTENDERS:
        if name in res and name not in rep.columns:
            rep.columns.append(name)
    keys = {k: f"mn_tp_k{k}" for k in cfg["ks"]}
    for k, key in keys.items():
        rep.measure(key, f"Multi-node throughput, {n:,} due-now jobs on {k} node(s), one run "
                         "after a warm-up run (executions/s; duplicates / lost; CPU µs per "
                         "execution: nodes + PostgreSQL; how busy the machine's cores were)")
    rep.measure("mn_latency", f"Multi-node add → start, 2 nodes, {cfg['add_n']} jobs "
                              f"{cfg['add_every'] * 1000:g} ms apart (ms, p50 / p99 / max)")
    rep.measure("mn_beat", f"Failover: SIGKILL the node running a {cfg['beat']:g} s recurring job; "
                           "gap to the next run on the survivor")
    rep.measure("mn_running", f"Failover: SIGKILL the node running a {cfg['sleep']:g} s job; "
                              "store shows it not running there / run again (after the kill)")
    rep.measure("mn_sqlite", "psl, 1 node: PostgreSQL store vs SQLite store (executions/s)")
    if 2 in keys:
        rep.target(keys[2], f">= {T_TP_2NODES:,}/s and >= {T_TP_VS_PROCRASTINATE:g}x "
                            "procrastinate; 0 dup, 0 lost", None)
    for k, key in keys.items():
        if k != 2:
            rep.target(key, "0 duplicates, 0 lost", None)
    rep.target("mn_latency", f"p50 <= {T_P50_MS:g} ms, p99 <= {T_P99_MS:g} ms", None)
    rep.target("mn_beat", f"<= lease + interval ({LEASE + cfg['beat']:g} s)", None)
    rep.target("mn_running", f"recorded interrupted <= lease ({LEASE:g} s) + a little", None)
    rep.target("mn_sqlite", "PostgreSQL within 2x of SQLite", None)
    if "skipped" in res and len(res) == 1:
        for name in CONTENDERS:
            if name not in rep.columns:
                rep.columns.append(name)
            for key in list(keys.values()) + ["mn_latency", "mn_beat", "mn_running", "mn_sqlite"]:
                rep.cell(key, name, f"skipped: {res['skipped']}")
        return

    def err(r):
        return f"ERROR: {_cut(r['error'])}" if "error" in r else None

    for name in CONTENDERS:
        r = res.get(name) or {}
        for why in (r.get("skipped"), (r.get("tp_k1") or {}).get("error")):
            if why:
                rep.note(f"multinode {name}: {why}")
                break
        for what, seconds in (r.get("load_s") or {}).items():
            rep.note(f"multinode {name}: loading the seed database ({what}) took {seconds:.2f} s")
    sq = res.get("psl-sqlite") or {}
    if sq.get("load_s") is not None:
        rep.note(f"multinode psl-sqlite: loading {sq['n']:,} tasks took {sq['load_s']:.2f} s")

    for name in CONTENDERS:
        r = res.get(name)
        if r is None:
            continue
        if "skipped" in r:
            for key in list(keys.values()) + ["mn_latency", "mn_beat", "mn_running"]:
                rep.cell(key, name, f"skipped: {_cut(r['skipped'])}")
            if name == "psl":
                for key in list(keys.values()) + ["mn_latency", "mn_beat", "mn_running"]:
                    rep.target(key, rep.targets[key][0], False)
            continue
        for k, key in keys.items():
            x = r.get(f"tp_k{k}", {"error": "not run"})
            rep.cell(key, name, err(x) or (
                f"{fmt_int(x['exec_per_s'])} ({x['duplicates']} / {x['lost']}; "
                f"{x['node_cpu_us']:,.0f} + {x['pg_cpu_us']:,.0f} µs; "
                f"cores {x['cores_busy']:.0%} busy)"
                + (f" [{x['n']:,} jobs]" if x["n"] != n else "")))
            if "limit" in x:
                rep.note(f"multinode {name}, {k} node(s): the limit was {x['limit']} (cores "
                         f"{x['cores_busy']:.0%} busy; the busiest node kept "
                         f"{x['busiest_node_core']:.0%} of a core busy, PostgreSQL "
                         f"{x['pg_cores']:.0%})")
        x = r.get("latency", {"error": "not run"})
        rep.cell("mn_latency", name, err(x) or (
            f"{_ms(x['p50_ms'])} / {_ms(x['p99_ms'])} / {_ms(x['max_ms'])}"
            + (f" ({x['duplicates']} dup, {x['lost']} lost)" if x["duplicates"] or x["lost"]
               else "")))
        x = r.get("beat", {"error": "not run"})
        if "na" in x:
            rep.cell("mn_beat", name, f"not applicable: {x['na']}")
        else:
            rep.cell("mn_beat", name, err(x) or (
                (_s(x["gap_s"]) if x["gap_s"] is not None
                 else f"no run in {x['window_s']:g} s")
                + (f" (killed {x['killed']}; {x['store_at_kill']})" if x.get("store_at_kill")
                   else "")))
        x = r.get("running", {"error": "not run"})
        rep.cell("mn_running", name, err(x) or (
            f"{_s(x['recorded_s'])} / {_s(x['rerun_s'])}"
            + (f" (within {x['window_s']:g} s; store: {x['store_at_end']})"
               if x["recorded_s"] is None or x["rerun_s"] is None else "")))

    _psl_targets(rep, res, keys, cfg, fmt_int)
    _sqlite_row(rep, res, fmt_int)


def _sqlite_row(rep, res, fmt_int):
    sq, psl = res.get("psl-sqlite"), res.get("psl")
    if sq is None or psl is None:
        return
    pg = psl.get("tp_k1", {})
    if "skipped" in sq or "error" in sq:
        rep.cell("mn_sqlite", "psl", f"SQLite: {_cut(sq.get('skipped') or sq.get('error'))}")
        rep.target("mn_sqlite", rep.targets["mn_sqlite"][0], False)
    elif pg.get("exec_per_s"):
        ratio = pg["exec_per_s"] / sq["exec_per_s"]
        sq["pg_over_sqlite"] = ratio
        rep.cell("mn_sqlite", "psl", f"{fmt_int(pg['exec_per_s'])} vs {fmt_int(sq['exec_per_s'])}"
                                     f" ({ratio:.2f}x)")
        rep.target("mn_sqlite", rep.targets["mn_sqlite"][0], ratio >= T_PG_VS_SQLITE)
    else:
        rep.cell("mn_sqlite", "psl", f"PostgreSQL: not measured; SQLite "
                                     f"{fmt_int(sq['exec_per_s'])} ({sq['duplicates']} dup, "
                                     f"{sq['lost']} lost)")
        rep.target("mn_sqlite", rep.targets["mn_sqlite"][0], False)


def _psl_targets(rep, res, keys, cfg, fmt_int):
    psl = res.get("psl")
    if psl is None or "skipped" in psl:
        return
    for k, key in keys.items():
        x = psl.get(f"tp_k{k}", {})
        ok = "error" not in x and x.get("duplicates") == 0 and x.get("lost") == 0
        if k == 2 and ok:
            ok = (x["exec_per_s"] or 0) >= T_TP_2NODES
            peer = res.get("procrastinate", {}).get("tp_k2", {})
            if peer.get("exec_per_s"):
                ratio = x["exec_per_s"] / peer["exec_per_s"]
                x["ratio_to_procrastinate"] = ratio
                ok = ok and ratio >= T_TP_VS_PROCRASTINATE
                rep.cell(key, "psl", rep.cells[(key, "psl")] + f" = {ratio:.1f}x procrastinate")
        rep.target(key, rep.targets[key][0], ok)
    x = psl.get("latency", {})
    rep.target("mn_latency", rep.targets["mn_latency"][0], "error" not in x and bool(x)
               and x["p50_ms"] <= T_P50_MS and x["p99_ms"] <= T_P99_MS and not x["lost"]
               and not x["duplicates"])
    x = psl.get("beat", {})
    rep.target("mn_beat", rep.targets["mn_beat"][0],
               x.get("gap_s") is not None and x["gap_s"] <= LEASE + cfg["beat"])
    x = psl.get("running", {})
    rep.target("mn_running", rep.targets["mn_running"][0],
               x.get("recorded_s") is not None and x["recorded_s"] <= LEASE + 2.0)
