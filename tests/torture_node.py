"""One scheduler node of the crash torture (``tests/test_torture.py``).

The test runs this module in a subprocess, again and again on the same SQLite
store, and SIGKILLs (or SIGTERMs) it at random moments::

    python -c "import torture_node; torture_node.main()" WORKDIR SEED CYCLE MODE

(with ``PYTHONPATH=<worktree>:<worktree>/tests``, so that the task functions
below are stored by reference as ``torture_node:step`` and load in the next
node and in loky's worker processes). MODE is ``run`` or ``final``:

* ``run``: it adds the fixed workload, then keeps adding, modifying and
  canceling tasks until it is killed. SIGTERM shuts it down with
  ``wait=True`` (in a thread) while it goes on adding, then ends it.
* ``final``: the clean last run. It adds the fixed workload only, waits for
  the file ``WORKDIR/stop``, writes what ``sched.runs()`` and
  ``get_status_str()`` say of every task to ``dump-running.json`` (for when
  the shutdown hangs), shuts down with ``wait=True`` and writes the same,
  now that every run has ended, to ``dump.json``.

Two append-only files (``O_APPEND``, one JSON object a line) are the oracle's
evidence:

* ``WORKDIR/exec.log``: written by the tasks themselves. A thread task writes
  ``start`` when its function begins and ``end`` (``ok`` true or false) just
  before it returns or raises, each with the run's identity from
  ``psl.current_run()``: ``tid, run, attempt, scheduled`` (POSIX seconds,
  rounded to the millisecond). A hard task (in a process, where there is no
  current run) logs its task id only; the command task's shell logs its
  ``start``.
* ``WORKDIR/driver.log``: written by this node's driver: ``request`` before
  each ``delay()`` (with the task's plan: kind, retries, planned failures,
  dependencies) and ``accepted`` once it RETURNED; ``modify``/``modified``,
  ``cancel``/``canceled`` around those calls (``refused`` and the like when
  one raised); ``boot``, ``ready``, ``stopping``, ``stopped``, ``dumped`` for
  the node's own life.

Every line carries the cycle (``TORTURE_CYCLE``, from the environment) and the
writer's pid. Nothing here is random except through the seeded RNG, so a seed
gives the same choices (not the same interleaving: the signals come from the
clock).
"""
from __future__ import annotations

import json
import os
import random
import signal
import sys
import threading
import time
from typing import Any, Dict, List, Optional

import pysched_lightning as psl

EXEC_LOG = "exec.log"
DRIVER_LOG = "driver.log"
STORE = "jobs.db"
STOP = "stop"
DUMP = "dump.json"
RUNNING_DUMP = "dump-running.json"

#: A node left running by a test that died stops by itself after this long.
MAX_NODE_SECONDS = 300.0
#: At most this many recurring tasks added while running are alive at once
#: (each cycle may add one; the load must not grow with the number of cycles).
MAX_FRESH_RECURRING = 3
#: The ids of tasks added while running start with these (the fixed ones never do).
FRESH_ONE_SHOT, FRESH_RECURRING, FRESH_HARD = "fo-", "fr-", "fh-"


# ------------------------------------------------------------------ evidence

def append_line(path: str, record: Dict[str, Any]) -> None:
    """Append one JSON line with a single write() on an O_APPEND descriptor:
    lines of concurrent writers (threads, processes, shells) never mix."""
    record.setdefault("cycle", int(os.environ.get("TORTURE_CYCLE", "-1")))
    record.setdefault("pid", os.getpid())
    record.setdefault("t", round(time.time(), 6))
    line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


class PlannedFailure(Exception):
    """Raised by a task on an attempt its arguments say must fail."""


# ------------------------------------------------------------------ task functions (stored by reference)

def step(log: str, seconds: float = 0.0, fail_attempts: int = 0, fail_every: int = 1) -> str:
    """A thread task: logs its start and end with its run's identity, sleeps
    *seconds*, and fails attempts 1..*fail_attempts* of the runs whose number
    is a multiple of *fail_every* (deterministic from its arguments)."""
    run = psl.current_run()
    identity = {"tid": run.task_id, "run": run.run_number, "attempt": run.attempt,
                "scheduled": round(run.scheduled.timestamp(), 3), "manual": run.manual}
    append_line(log, dict(identity, ev="start"))
    if seconds:
        time.sleep(seconds)
    fails = run.attempt <= fail_attempts and run.run_number % fail_every == 0
    append_line(log, dict(identity, ev="end", ok=not fails))
    if fails:
        raise PlannedFailure(f"{run.task_id} run {run.run_number} attempt {run.attempt}")
    return "ok"


def hard_step(log: str, tid: str, seconds: float) -> str:
    """A hard task (in a worker process: no current run there): logs its task
    id and its parent (the node, or a process of the node's pool)."""
    identity = {"tid": tid, "hard": True, "attempt": 1, "ppid": os.getppid()}
    append_line(log, dict(identity, ev="start"))
    time.sleep(seconds)
    append_line(log, dict(identity, ev="end", ok=True))
    return "ok"


def sleeper_command(log: str) -> Any:
    """A command task whose shell logs its start, then sleeps 8 s, far longer
    than its timeout (1 s) and than the test's grace for orphans (5 s): a
    node killed meanwhile leaves the shell behind unless the scheduler takes
    its children with it."""
    script = ('printf \'{"ev":"start","tid":"cmd-sleeper","cmd":true,"cycle":%s,"pid":%s}\\n\' '
              '"$TORTURE_CYCLE" "$$" >> "$1"; sleep 8')
    return psl.command(["sh", "-c", script, "sh", log])


# ------------------------------------------------------------------ the workload

def fixed_workload(log: str) -> List[Dict[str, Any]]:
    """The tasks every node adds at start, named, with the same definition
    each time (so a restart keeps them: re-adding is idempotent). Each is
    ``dict(tid, kind, trigger, interval, fn, args, kwargs, options)``; the
    plan fields (kind, retries, fail_attempts, depend_on) go to the driver log."""
    def thread(tid: str, kind: str, trigger: str, interval: Any, seconds: float = 0.0,
               fail_attempts: int = 0, fail_every: int = 1, **options: Any) -> Dict[str, Any]:
        return dict(tid=tid, kind=kind, trigger=trigger, interval=interval, fn=step,
                    args=(log,), kwargs=dict(seconds=seconds, fail_attempts=fail_attempts,
                                             fail_every=fail_every),
                    options=options)
    return [
        thread("recur-fast", "recur", "recur", 0.05, seconds=0.005),
        thread("recur-flaky", "recur", "recur", 0.2, seconds=0.02, fail_attempts=1,
               fail_every=3, retries=2, retry_delay=0.05),
        thread("recur-slow", "recur", "recur", 0.3, seconds=0.25),
        thread("cron-sec", "recur", "cron", "*/1 * * * * *", seconds=0.05),
        thread("once-now", "once", "once", 0, seconds=0.1),
        thread("once-long", "once", "once", 0.5, seconds=0.8),
        thread("once-retry", "once", "once", 1.0, seconds=0.1, fail_attempts=2,
               retries=3, retry_delay=0.3),
        thread("once-exhausts", "once", "once", 1.5, seconds=0.05, fail_attempts=9,
               retries=2, retry_delay=0.2),
        thread("once-after-retry", "once", "once", 0, seconds=0.05, depend_on="once-retry"),
        thread("chain-a", "once", "once", 0.3, seconds=0.3),
        thread("chain-b", "once", "once", 0, seconds=0.2, depend_on="chain-a"),
        thread("chain-c", "once", "once", 0, seconds=0.1, depend_on=["chain-a", "chain-b"]),
        thread("once-late", "once", "once", 3.0, seconds=0.1, retries=1, fail_attempts=1,
               retry_delay=0.1),
    ]


def hard_workload(log: str) -> List[Dict[str, Any]]:
    """Fixed hard tasks: one in the shared loky pool, one with a timeout (a
    process of its own), and a recurring command whose shell outlives a
    SIGKILLed node unless the scheduler takes it along."""
    return [
        dict(tid="hard-once", kind="once", trigger="once", interval=0.2, fn=hard_step,
             args=(log, "hard-once", 0.6), kwargs={}, options=dict(hard=True)),
        dict(tid="hard-alone", kind="once", trigger="once", interval=0.4, fn=hard_step,
             args=(log, "hard-alone", 0.8), kwargs={}, options=dict(hard=True, timeout=30)),
        dict(tid="cmd-sleeper", kind="command", trigger="recur", interval=1.5,
             fn=sleeper_command(log), args=(), kwargs={}, options=dict(timeout=1.0)),
    ]


def plan_of(spec: Dict[str, Any]) -> Dict[str, Any]:
    """What the oracle needs to know of a task: its kind and failure plan."""
    options, kwargs = spec["options"], spec["kwargs"]
    depend_on = options.get("depend_on") or []
    return dict(tid=spec["tid"], kind=spec["kind"], hard=bool(options.get("hard")),
                retries=int(options.get("retries", 0)),
                fail_attempts=int(kwargs.get("fail_attempts", 0)),
                fail_every=int(kwargs.get("fail_every", 1)),
                depend_on=[depend_on] if isinstance(depend_on, str) else list(depend_on))


# ------------------------------------------------------------------ the driver

class Driver:
    """Adds, modifies and cancels tasks, logging each call before it is made
    and once it has returned."""

    def __init__(self, sched: psl.Scheduler, workdir: str, rng: random.Random,
                 cycle: int, hard: bool) -> None:
        self.sched, self.rng, self.cycle, self.hard = sched, rng, cycle, hard
        self.exec_log = os.path.join(workdir, EXEC_LOG)
        self.driver_log = os.path.join(workdir, DRIVER_LOG)
        self.fresh = 0
        self.accepted = self._accepted_before()

    def start(self) -> None:
        try:
            self.sched.start()
        except RuntimeError as exc:  # a SIGTERM came first: it is shutting down
            self.note("start-refused", error=repr(exc))

    def note(self, ev: str, **fields: Any) -> None:
        append_line(self.driver_log, dict(fields, ev=ev))

    def _accepted_before(self) -> Dict[str, Dict[str, Any]]:
        """The plans of tasks accepted by earlier nodes (targets to modify,
        cancel or depend on)."""
        accepted: Dict[str, Dict[str, Any]] = {}
        canceled = set()
        try:
            with open(self.driver_log) as lines:
                for line in lines:
                    try:
                        record = json.loads(line)
                    except ValueError:
                        continue  # a line cut by a kill
                    if record["ev"] == "accepted":
                        accepted[record["tid"]] = record
                    elif record["ev"] == "canceled":
                        canceled.add(record["tid"])
        except FileNotFoundError:
            pass
        for tid in canceled:
            accepted.pop(tid, None)
        return accepted

    def add(self, spec: Dict[str, Any]) -> Optional[str]:
        plan = plan_of(spec)
        self.note("request", **plan)
        try:
            tid = self.sched.delay(spec["trigger"], spec["interval"], 5, spec["fn"],
                                   args=spec["args"], kwargs=spec["kwargs"],
                                   task_id=spec["tid"], **spec["options"])
        except (KeyError, RuntimeError) as exc:  # a dependency gone (canceled), or shut down
            self.note("refused", tid=spec["tid"], error=repr(exc))
            return None
        self.note("accepted", **plan)
        self.accepted[tid] = plan
        return tid

    # -- the random actions of a node that will be killed ----------------------

    def act(self) -> None:
        """One random action."""
        roll = self.rng.random()
        if roll < 0.40:
            self.add(self._fresh_one_shot())
        elif roll < 0.48:
            self._add_fresh_recurring()
        elif roll < 0.63:
            self._modify()
        elif roll < 0.68:
            self._cancel()
        elif roll < 0.72 and self.hard:
            self.add(self._fresh_hard())

    def _next_id(self, prefix: str) -> str:
        self.fresh += 1
        return f"{prefix}c{self.cycle}-{self.fresh}"

    def _fresh_one_shot(self) -> Dict[str, Any]:
        rng = self.rng
        retries = rng.choice([0, 0, 1, 2, 3])
        options: Dict[str, Any] = {}
        if retries:
            options.update(retries=retries, retry_delay=rng.choice([0.05, 0.2]))
        parents = [tid for tid, plan in self.accepted.items() if plan["kind"] == "once"
                   and not plan["hard"]]
        if parents and rng.random() < 0.3:
            options["depend_on"] = rng.sample(parents, min(len(parents), rng.choice([1, 1, 2])))
        return dict(tid=self._next_id(FRESH_ONE_SHOT), kind="once", trigger="once",
                    interval=rng.choice([0, 0, 0.05, 0.2, 0.5, 1.0]), fn=step,
                    args=(self.exec_log,),
                    kwargs=dict(seconds=rng.choice([0.0, 0.02, 0.2, 0.6]),
                                fail_attempts=rng.choice([0, 0, 1, 2, 4]), fail_every=1),
                    options=options)

    def _add_fresh_recurring(self) -> None:
        alive = [tid for tid in self.accepted if tid.startswith(FRESH_RECURRING)]
        if len(alive) >= MAX_FRESH_RECURRING:
            self._cancel_one(self.rng.choice(alive))
            return
        rng = self.rng
        retries = rng.choice([0, 1, 2])
        options: Dict[str, Any] = {}
        if retries:
            options.update(retries=retries, retry_delay=0.05)
        self.add(dict(tid=self._next_id(FRESH_RECURRING), kind="recur", trigger="recur",
                      interval=rng.choice([0.05, 0.1, 0.3]), fn=step, args=(self.exec_log,),
                      kwargs=dict(seconds=rng.choice([0.0, 0.05, 0.2]),
                                  fail_attempts=rng.choice([0, 1, 2]) if retries else 0,
                                  fail_every=rng.choice([2, 3])),
                      options=options))

    def _fresh_hard(self) -> Dict[str, Any]:
        tid = self._next_id(FRESH_HARD)
        options: Dict[str, Any] = dict(hard=True)
        if self.rng.random() < 0.3:
            options["timeout"] = 30  # a process of its own
        return dict(tid=tid, kind="once", trigger="once", interval=self.rng.choice([0, 0.2]),
                    fn=hard_step, args=(self.exec_log, tid, self.rng.choice([0.1, 0.5, 1.0])),
                    kwargs={}, options=options)

    def _fresh_targets(self) -> List[str]:
        """Tasks added while running (the fixed ones are never modified or
        canceled: their re-added definition must stay the stored one)."""
        return [tid for tid in self.accepted  # in the order they were added
                if tid.startswith((FRESH_ONE_SHOT, FRESH_RECURRING))]

    def _modify(self) -> None:
        targets = self._fresh_targets()
        if not targets:
            return
        recent = [tid for tid in targets if tid.startswith(f"{FRESH_ONE_SHOT}c{self.cycle}-")]
        recurring = [tid for tid in targets if tid.startswith(FRESH_RECURRING)]
        roll = self.rng.random()
        # mostly what may be running or waiting now: this node's latest one-shots
        # (running, retrying, waiting for a dependency) and recurring tasks
        if recent and roll < 0.4:
            tid = self.rng.choice(recent[-4:])
        elif recurring and roll < 0.8:
            tid = self.rng.choice(recurring)
        else:
            tid = self.rng.choice(targets)
        priority = self.rng.randint(1, 9)
        self.note("modify", tid=tid, priority=priority)
        try:
            self.sched.modify(tid, priority=priority)
        except (KeyError, ValueError, RuntimeError) as exc:
            self.note("modify-refused", tid=tid, error=repr(exc))
            return
        self.note("modified", tid=tid, priority=priority)

    def _cancel(self) -> None:
        targets = self._fresh_targets()
        if targets:
            self._cancel_one(self.rng.choice(targets))

    def _cancel_one(self, tid: str) -> None:
        self.note("cancel", tid=tid)
        try:
            self.sched.cancel(tid)
        except (KeyError, RuntimeError) as exc:
            self.note("cancel-refused", tid=tid, error=repr(exc))
        else:
            self.note("canceled", tid=tid)
        self.accepted.pop(tid, None)

    # -- the final, clean run ----------------------------------------------------

    def dump(self, path: str, tids: List[str]) -> None:
        """What the scheduler says of every task: its status and every run."""
        out: Dict[str, Any] = {}
        for tid in tids:
            try:
                status = self.sched.get_status_str(tid)
                runs = self.sched.runs(tid)
            except KeyError:
                out[tid] = None
                continue
            out[tid] = dict(status=status, runs=[run_fields(run) for run in runs])
        with open(path + ".tmp", "w") as f:
            json.dump(out, f)
        os.replace(path + ".tmp", path)


def run_fields(run: psl.Run) -> Dict[str, Any]:
    def seconds(moment: Any) -> Optional[float]:
        return None if moment is None else round(moment.timestamp(), 3)
    return dict(run=run.run_number, attempt=run.attempt, status=run.status.label,
                scheduled=seconds(run.scheduled), started=seconds(run.started),
                reason=run.reason, error=run.error, count=run.count)


def known_task_ids(driver_log: str) -> List[str]:
    """Every task id a node asked to add (accepted or not)."""
    tids = set()
    with open(driver_log) as lines:
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record["ev"] == "request":
                tids.add(record["tid"])
    return sorted(tids)


def stop_on_sigterm(sched: psl.Scheduler, driver: Driver) -> None:
    """SIGTERM shuts the scheduler down with wait=True in a thread of its
    own while the driver goes on adding tasks (they are refused once it has
    begun), then ends the process."""
    requested = threading.Event()

    def stop() -> None:
        requested.wait()
        driver.note("stopping")
        sched.shutdown(wait=True)
        driver.note("stopped")
        os._exit(0)

    threading.Thread(target=stop, name="torture-stop", daemon=True).start()
    signal.signal(signal.SIGTERM, lambda signum, frame: requested.set())


def main(argv: Optional[List[str]] = None) -> None:
    workdir, seed, cycle, mode = (argv or sys.argv[1:])[:4]
    cycle_number, hard = int(cycle), os.environ.get("TORTURE_HARD", "1") == "1"
    rng = random.Random(f"{seed}:{cycle_number}")
    sched = psl.Scheduler(store=os.path.join(workdir, STORE),
                          executor=psl.ThreadPoolExecutor(4))
    driver = Driver(sched, workdir, rng, cycle_number, hard)
    if mode == "run":
        stop_on_sigterm(sched, driver)
    driver.note("boot", mode=mode)
    log = driver.exec_log
    fixed = fixed_workload(log) + (hard_workload(log) if hard else [])
    start_first = rng.random() < 0.5  # tasks re-added to a running scheduler, or before it starts
    if start_first:
        driver.start()
    for spec in fixed:
        driver.add(spec)
    if not start_first:
        driver.start()
    driver.note("ready")
    if mode == "final":
        stop = os.path.join(workdir, STOP)
        while not os.path.exists(stop):
            time.sleep(0.05)
        # what it says while running too, in case the shutdown hangs
        driver.dump(os.path.join(workdir, RUNNING_DUMP), known_task_ids(driver.driver_log))
        driver.note("stopping")
        sched.shutdown(wait=True)
        driver.note("stopped")
        # runs() answers the same after shutdown, and every run has ended by now
        driver.dump(os.path.join(workdir, DUMP), known_task_ids(driver.driver_log))
        driver.note("dumped")
        return
    deadline = time.monotonic() + MAX_NODE_SECONDS
    while time.monotonic() < deadline:
        time.sleep(rng.uniform(0.005, 0.08))
        driver.act()
    os._exit(3)
