"""Crash torture: a scheduler with a SQLite store, killed at random moments.

A node (``tests/torture_node.py``) runs a scheduler on ``tmp_path/jobs.db``
in a real subprocess with a mixed workload: one-shots (named, re-added at
every start, and fresh ids added while it runs), recurring tasks (every
0.05-0.3 s), a cron task with seconds (``*/1 * * * * *``), tasks that fail on
chosen attempts and retry, dependents, ``modify()`` and ``cancel()`` while
it runs, hard tasks (the shared loky pool, and a process of their own) and a
command task. The test SIGKILLs the node at a random moment (a seeded RNG;
the seed is printed) -- or, one time in four, SIGTERMs it: the node then
shuts down with ``wait=True`` while its driver keeps adding tasks -- and
starts a new one on the same store, over many cycles. A last node runs
cleanly until what is due has finished, shuts down, and writes what
``sched.runs()`` and ``get_status_str()`` say of every task.

The evidence is two append-only files: the execution log, written by the
tasks themselves (a start and an end line per execution, with
``psl.current_run()``'s task id, run number, attempt and scheduled time), and
the driver log (every ``delay()`` asked for and every one that RETURNED, every
``modify()`` and ``cancel()``). The oracle, checked after the last cycle:

no slot twice
    A slot is an occurrence of a task and an attempt of it: for a one-shot
    ``(task, attempt)``; for a recurring or cron task ``(task, scheduled
    time, attempt)``, a retry's scheduled time being its first attempt's;
    for a hard one-shot (no retries) the task. Each slot STARTS at most once
    over all the cycles. A run that started and was cut by the SIGKILL has a
    start line and no end line: that is allowed, and it must not start again
    as the same attempt (the restart records it interrupted).
run numbers never reused
    Two first attempts of a recurring task with one run number have one
    scheduled time; ``sched.runs(tid)`` holds each (run number, attempt) at
    most once (MISSED records, run number 0, aside).
nothing accepted lost
    Every one-shot whose ``delay()`` returned executes: it starts at least
    once, or the store shows an attempt of it interrupted (a SIGKILL came
    between its claim and its first line). Allowed exceptions: a task the
    workload asked to cancel; a dependent whose dependency did not end
    COMPLETED, which must then read CANCELED (or be unknown: canceling
    removes a task) and never start.
retries continue, never more
    A one-shot with ``retries=N`` whose attempt k failed or was interrupted
    (k <= N) gets attempt k + 1, in the same node or after the restart, until
    one succeeds or N + 1 attempts were made; never more than N + 1, no
    attempt skipped, none after a success the store recorded (an attempt
    that ended but was cut by the kill before its outcome was written reads
    interrupted, and is then retried: allowed).
dependents wait
    A dependent starts only after each of its dependencies wrote a successful
    end line (earlier in the execution log).
records agree with executions
    A run that ``sched.runs()`` says COMPLETED has an execution of that run
    and attempt that ended well; an execution that ended in a node that shut
    down cleanly has its outcome recorded (COMPLETED or ERROR). A one-shot
    never reads MISSED (the workload sets no misfire grace time).
clean shutdowns finish their runs
    A node that shut down by itself (SIGTERM, or the last one) leaves no run
    RUNNING: no run it claimed reads interrupted after the restart, every
    execution it started ended; the last one exits 0.
clean shutdowns end, command timeouts hold
    A node asked to shut down exits within 30 s (the command task sleeps 8 s
    with a timeout of 1 s); while a node lives, the command task's processes
    are gone within a few seconds of its timeout, shutting down or not.
cancel holds
    A task whose ``cancel()`` returned starts in no later node.
recurring tasks keep running
    Every recurring task not canceled starts again in the clean last run
    (twice, once for the command task).
no process outlives its node
    Within a few seconds of a node's end (SIGKILL or not), no process it
    started (loky workers and their resource trackers, the hard task's own
    process, command shells, all found by an environment variable they
    inherit) is left.

Run the bounded version (CI) with ``python -m pytest tests/test_torture.py``;
the long one with ``python -m pytest -m torture --torture-seconds 600
tests/test_torture.py``. ``TORTURE_SEED`` and ``TORTURE_CYCLES`` replay a
seed (the same workload choices and signal delays; the interleaving, set by
the clock, differs from run to run). pytest keeps only its last few temporary
folders: add ``--basetemp=DIR`` to keep the evidence, and ``python
tests/test_torture.py DIR/<test folder>`` judges it again, every violation
shown.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import psutil
import pytest

from pysched_lightning.stores import open_store

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)

#: A node's processes must be gone this long after its SIGKILL.
ORPHAN_GRACE_SECONDS = 5.0
#: How long the clean last run may take to let everything due finish.
FINAL_SETTLE_SECONDS = 20.0
#: A clean shutdown that takes longer than this is a hang (the command task
#: sleeps an hour, with a timeout of 1 s).
STOP_DEADLINE_SECONDS = 30.0
BOUNDED_CYCLES = 12
BOUNDED_TEST = ("tests/test_torture.py::"
                "test_a_scheduler_killed_at_random_moments_runs_every_accepted_slot_once")
#: The share of cycles that end with SIGTERM (a clean shutdown) instead of SIGKILL.
TERM_SHARE = 0.25
#: The command task's timeout (torture_node.sleeper_command's task).
COMMAND_TIMEOUT_SECONDS = 1.0
#: Completed, Error, Canceled, Timeout, Missed, Interrupted (by a clean shutdown)
FINAL_STATUSES = {0, 1, 4, 5, 6, 7}
#: The store's text for a run cut by the death of its process (a clean
#: shutdown's interrupted runs say "the scheduler shut down" instead).
INTERRUPTED = "interrupted: the scheduler process stopped"


# ------------------------------------------------------------------ evidence

@dataclass
class Line:
    """One line of a log: its position in the file and its record."""

    number: int
    raw: str
    rec: Dict[str, Any]
    source: str = ""

    def __getitem__(self, key: str) -> Any:
        return self.rec[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.rec.get(key, default)

    def __str__(self) -> str:
        return f"  {self.source}:{self.number}: {self.raw}"


def read_lines(path: str) -> Tuple[List[Line], int]:
    """The parsed lines of an append-only log, and how many could not be
    parsed (a write cut by a kill)."""
    lines, broken = [], 0
    if not os.path.exists(path):
        return lines, broken
    with open(path) as f:
        for number, raw in enumerate(f, 1):
            raw = raw.rstrip("\n")
            try:
                lines.append(Line(number, raw, json.loads(raw), os.path.basename(path)))
            except ValueError:
                broken += 1
    return lines, broken


@dataclass
class Violation:
    rule: str
    message: str
    lines: List[Line] = field(default_factory=list)

    def __str__(self) -> str:
        shown = self.lines[:12]
        more = f"\n  ... {len(self.lines) - len(shown)} more" if len(self.lines) > len(shown) else ""
        return "\n".join([f"[{self.rule}] {self.message}", *map(str, shown)]) + more


@dataclass
class Cycle:
    """One node's life."""

    number: int
    #: "kill" (SIGKILL at a random moment), "term" (SIGTERM at a random
    #: moment: the node shuts down with wait=True while its driver keeps
    #: adding tasks) or "final" (the clean last run).
    how: str
    #: Seconds from the node's start to the signal.
    after: Optional[float] = None
    returncode: Optional[int] = None
    tag: str = ""
    #: Wall-clock times around the node's life (a claim made in between is its).
    began: float = 0.0
    ended: float = 0.0

    @property
    def clean(self) -> bool:
        """It shut down by itself: every run it started has ended and is recorded."""
        return self.how in ("term", "final") and self.returncode == 0

    def __str__(self) -> str:
        when = f"after {self.after:.2f}s" if self.after is not None else "clean last run"
        return f"{self.number}:{self.how} {when} rc={self.returncode}"


# ------------------------------------------------------------------ the test's driver

class Torture:
    """Runs nodes on one store, stops or kills them, and keeps what the
    oracle needs; watches the processes they leave behind."""

    def __init__(self, workdir: str, seed: int, hard: bool = True) -> None:
        self.workdir, self.seed, self.hard = workdir, seed, hard
        self.rng = random.Random(seed)
        self.cycles: List[Cycle] = []
        #: What the processes said (orphans, commands past their timeout, hangs).
        self.process_violations: List[Violation] = []
        self._to_check: List[Tuple[float, Cycle]] = []
        self._reported_pids: set = set()
        self._run_id = uuid.uuid4().hex[:12]

    # -- paths
    def path(self, name: str) -> str:
        return os.path.join(self.workdir, name)

    @property
    def store_path(self) -> str:
        return self.path("jobs.db")

    # -- nodes
    def _spawn(self, cycle: Cycle, mode: str) -> subprocess.Popen:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, TESTS]),
                   TORTURE_CYCLE=str(cycle.number), TORTURE_TAG=cycle.tag,
                   TORTURE_HARD="1" if self.hard else "0")
        err = open(self.path(f"node-{cycle.number}.err"), "wb")
        cycle.began = time.time()
        try:
            return subprocess.Popen(
                [sys.executable, "-c", "import torture_node; torture_node.main()",
                 self.workdir, str(self.seed), str(cycle.number), mode],
                cwd=self.workdir, env=env, stdout=err, stderr=subprocess.STDOUT)
        finally:
            err.close()

    def _new_cycle(self, how: str) -> Cycle:
        number = len(self.cycles)
        cycle = Cycle(number, how, tag=f"{self._run_id}-{number}")
        self.cycles.append(cycle)
        return cycle

    def save(self) -> None:
        """The cycles and what the processes said, so that ``python
        tests/test_torture.py WORKDIR`` can judge a kept folder again."""
        with open(self.path("cycles.json"), "w") as f:
            json.dump(dict(seed=self.seed, cycles=[vars(c) for c in self.cycles],
                           processes=[[v.rule, v.message] for v in self.process_violations]),
                      f)

    @classmethod
    def load(cls, workdir: str) -> "Torture":
        with open(os.path.join(workdir, "cycles.json")) as f:
            saved = json.load(f)
        torture = cls(workdir, saved["seed"])
        torture.cycles = [Cycle(**c) for c in saved["cycles"]]
        torture.process_violations = [Violation(rule, message)
                                      for rule, message in saved["processes"]]
        return torture

    def signal_delay(self) -> float:
        """When to signal: a quarter of them land while the node starts
        (imports, loading the store, re-adding its tasks)."""
        if self.rng.random() < 0.25:
            return self.rng.uniform(0.05, 0.6)
        return self.rng.uniform(0.6, 2.5)

    def interrupted_cycle(self) -> Cycle:
        """A node SIGKILLed (or, one time in four, SIGTERMed: a clean
        shutdown) at a random moment."""
        cycle = self._new_cycle("term" if self.rng.random() < TERM_SHARE else "kill")
        cycle.after = self.signal_delay()
        node = self._spawn(cycle, "run")
        try:
            time.sleep(cycle.after)  # the random moment is the point of the test
        finally:
            if cycle.how == "kill":
                node.send_signal(signal.SIGKILL)
                cycle.returncode = node.wait()
            else:
                node.send_signal(signal.SIGTERM)
                cycle.returncode = self._wait_for_exit(cycle, node)
            cycle.ended = time.time()
        self._to_check.append((time.monotonic() + ORPHAN_GRACE_SECONDS, cycle))
        self.check_orphans(final=False)
        return cycle

    def final_cycle(self) -> Cycle:
        """The clean last run: it lets what is due finish, then stops."""
        cycle = self._new_cycle("final")
        node = self._spawn(cycle, "final")
        try:
            self._wait_until_settled(cycle, node)
            with open(self.path("stop"), "w"):
                pass
            cycle.returncode = self._wait_for_exit(cycle, node)
        finally:
            if node.poll() is None:
                node.send_signal(signal.SIGKILL)
                node.wait()
            cycle.ended = time.time()
        self._to_check.append((time.monotonic() + ORPHAN_GRACE_SECONDS, cycle))
        self.check_orphans(final=True)
        return cycle

    def _wait_for_exit(self, cycle: Cycle, node: subprocess.Popen) -> Optional[int]:
        """A node asked to shut down: its exit code, or None when it hung
        (then it is SIGKILLed)."""
        deadline = time.monotonic() + STOP_DEADLINE_SECONDS
        while node.poll() is None and time.monotonic() < deadline:
            self.watch_commands(cycle)
            time.sleep(0.1)
        if node.poll() is not None:
            return node.returncode
        self.process_violations.append(Violation(
            "clean shutdowns end", f"cycle {cycle} asked to stop did not exit within "
            f"{STOP_DEADLINE_SECONDS:g} s; SIGKILLed (see node-{cycle.number}.err)"))
        node.send_signal(signal.SIGKILL)
        node.wait()
        return None

    def _wait_until_settled(self, cycle: Cycle, node: subprocess.Popen) -> None:
        """Until every accepted one-shot is final in the store and every
        recurring task has started again in this run (or the time is up: the
        oracle then says what is missing)."""
        deadline = time.monotonic() + FINAL_SETTLE_SECONDS
        while time.monotonic() < deadline and node.poll() is None:
            self.watch_commands(cycle)
            if self._settled(cycle.number):
                return
            time.sleep(0.2)

    def _settled(self, final: int) -> bool:
        evidence = Evidence.read(self)
        if not any(l["ev"] == "ready" and l["cycle"] == final for l in evidence.driver):
            return False
        store = open_store(self.store_path, read_only=True)
        try:
            for tid in evidence.owed_one_shots():
                record = store.task(tid)
                if record is not None and (record.next_run is not None
                                           or record.status not in FINAL_STATUSES):
                    return False
        finally:
            store.close()
        starts = Counter(l["tid"] for l in evidence.starts() if l["cycle"] == final)
        return all(starts[tid] >= evidence.restarts_needed(tid)
                   for tid in evidence.live_recurring())

    # -- processes
    def watch_commands(self, cycle: Cycle) -> None:
        """While a node lives: the command task's processes (its shell and
        sleep) must be gone a few seconds after its timeout, also while the
        node shuts down."""
        limit = COMMAND_TIMEOUT_SECONDS + ORPHAN_GRACE_SECONDS
        for proc, _ in tagged_processes({cycle.tag}):
            try:
                name, age = proc.name(), time.time() - proc.create_time()
            except psutil.Error:
                continue
            if name in ("sh", "sleep") and age > limit and proc.pid not in self._reported_pids:
                self._reported_pids.add(proc.pid)
                stopping = any(l["ev"] == "stopping" and l["cycle"] == cycle.number
                               for l in read_lines(self.path("driver.log"))[0])
                self.process_violations.append(Violation(
                    "command timeouts hold",
                    f"cycle {cycle.number} ({cycle.how}): the command task (timeout={COMMAND_TIMEOUT_SECONDS:g} s) "
                    f"still runs {age:.1f} s after it started"
                    f"{' (the node is shutting down)' if stopping else ''}: pid {proc.pid} "
                    f"{describe(proc)}"))

    def check_orphans(self, final: bool) -> None:
        """Processes of a node still alive a grace time after it ended are
        violations; they are then killed (by pid) so they cannot disturb the
        next cycles."""
        if final:
            for due, _ in self._to_check:
                time.sleep(max(0.0, due - time.monotonic()))
        now = time.monotonic()
        due_now = [cycle for due, cycle in self._to_check if due <= now]
        self._to_check = [(due, cycle) for due, cycle in self._to_check if due > now]
        if not due_now:
            return
        tags = {cycle.tag: cycle for cycle in due_now}
        for proc, tag in tagged_processes(set(tags)):
            self.process_violations.append(Violation(
                "no process outlives its node",
                f"cycle {tags[tag]}: pid {proc.pid} still alive {ORPHAN_GRACE_SECONDS:g} s "
                f"after the node ended: {describe(proc)}"))
            try:
                proc.kill()
            except psutil.Error:
                pass


def tagged_processes(tags: set) -> List[Tuple[psutil.Process, str]]:
    """Live processes whose environment holds one of *tags* (every process a
    node starts inherits its TORTURE_TAG)."""
    found = []
    for proc in psutil.process_iter():
        try:
            tag = proc.environ().get("TORTURE_TAG")
            if tag in tags and proc.status() != psutil.STATUS_ZOMBIE:
                found.append((proc, tag))
        except psutil.Error:
            continue
    return found


def describe(proc: psutil.Process) -> str:
    try:
        return f"ppid {proc.ppid()}, {' '.join(proc.cmdline())[:160]!r}"
    except psutil.Error:
        return "(gone meanwhile)"


# ------------------------------------------------------------------ what the logs and the last node say

@dataclass
class Evidence:
    exec: List[Line]
    driver: List[Line]
    broken: int
    #: What the last node's sched.runs() and get_status_str() said of each task.
    dump: Optional[Dict[str, Any]]
    #: True when the dump was made after the shutdown (every run ended), False
    #: when only the one made before it exists (the shutdown hung).
    dump_complete: bool
    cycles: List[Cycle]

    @classmethod
    def read(cls, torture: Torture) -> "Evidence":
        exec_lines, broken_exec = read_lines(torture.path("exec.log"))
        driver_lines, broken_driver = read_lines(torture.path("driver.log"))
        dump, complete = None, False
        for name, after_shutdown in (("dump.json", True), ("dump-running.json", False)):
            if os.path.exists(torture.path(name)):
                with open(torture.path(name)) as f:
                    dump, complete = json.load(f), after_shutdown
                break
        return cls(exec_lines, driver_lines, broken_exec + broken_driver, dump, complete,
                   torture.cycles)

    # -- the driver's side
    def plans(self) -> Dict[str, Dict[str, Any]]:
        """Each task's plan, from its first request (accepted or not)."""
        plans: Dict[str, Dict[str, Any]] = {}
        for line in self.driver:
            if line["ev"] == "request":
                plans.setdefault(line["tid"], line.rec)
        return plans

    def accepted(self) -> Dict[str, Line]:
        """Tasks whose delay() returned: the first such line."""
        accepted: Dict[str, Line] = {}
        for line in self.driver:
            if line["ev"] == "accepted":
                accepted.setdefault(line["tid"], line)
        return accepted

    def cancel_asked(self) -> set:
        return {line["tid"] for line in self.driver if line["ev"] == "cancel"}

    def canceled(self) -> Dict[str, Line]:
        return {line["tid"]: line for line in self.driver if line["ev"] == "canceled"}

    def owed_one_shots(self) -> List[str]:
        plans, asked = self.plans(), self.cancel_asked()
        return [tid for tid in self.accepted() if plans[tid]["kind"] == "once"
                and tid not in asked]

    def live_recurring(self) -> List[str]:
        plans, asked = self.plans(), self.cancel_asked()
        return [tid for tid in self.accepted()
                if plans[tid]["kind"] in ("recur", "command") and tid not in asked]

    def restarts_needed(self, tid: str) -> int:
        return 1 if self.plans()[tid]["kind"] == "command" else 2

    # -- the tasks' side
    def starts(self) -> List[Line]:
        return [l for l in self.exec if l["ev"] == "start"]

    def thread_lines(self, ev: str) -> List[Line]:
        return [l for l in self.exec if l["ev"] == ev and not l.get("hard") and not l.get("cmd")]

    @property
    def final(self) -> int:
        return self.cycles[-1].number

    def clean(self, cycle: int) -> bool:
        """The node of *cycle* shut down by itself (SIGTERM, or the last one)."""
        return self.cycles[cycle].clean

    def cycle_at(self, wall: Optional[float]) -> Optional[Cycle]:
        """The cycle whose node lived at wall-clock time *wall*."""
        for cycle in self.cycles:
            if wall is not None and cycle.began <= wall <= (cycle.ended or float("inf")):
                return cycle
        return None

    def runs_of(self, tid: str) -> Optional[List[Dict[str, Any]]]:
        if self.dump is None or self.dump.get(tid) is None:
            return None
        return self.dump[tid]["runs"]

    def status_of(self, tid: str) -> Optional[str]:
        if self.dump is None or self.dump.get(tid) is None:
            return None
        return self.dump[tid]["status"]


# ------------------------------------------------------------------ the oracle

def slot_of(line: Line, kind: str, first_attempts: Dict[Tuple[str, int], float]) -> Tuple[Any, ...]:
    """The occurrence and attempt an execution line stands for. A recurring
    task's retry names its slot through the first attempt of its run seen
    last before it (*first_attempts*: (task, run) -> scheduled), so that a
    run number used twice does not make two slots one."""
    tid = line["tid"]
    if line.get("hard"):
        return (tid,)
    if kind == "once":
        return (tid, "attempt", line["attempt"])
    if line["attempt"] == 1:
        return (tid, "at", line["scheduled"], "attempt", 1)
    first = first_attempts.get((tid, line["run"]))
    if first is None:  # its first attempt was cut before it logged
        return (tid, "run", line["run"], "attempt", line["attempt"])
    return (tid, "at", first, "attempt", line["attempt"])


def kind_of(tid: str, plans: Dict[str, Dict[str, Any]]) -> str:
    plan = plans.get(tid)
    return plan["kind"] if plan else "unknown"


def no_slot_twice(ev: Evidence) -> List[Violation]:
    plans = ev.plans()
    by_slot: Dict[Tuple[Any, ...], List[Line]] = defaultdict(list)
    first_attempts: Dict[Tuple[str, int], float] = {}
    for line in ev.starts():  # in the order they were written
        if line.get("cmd"):
            continue
        by_slot[slot_of(line, kind_of(line["tid"], plans), first_attempts)].append(line)
        if not line.get("hard") and line["attempt"] == 1:
            first_attempts[(line["tid"], line["run"])] = line["scheduled"]
    return [Violation("no slot twice", f"slot {slot} started {len(lines)} times "
                      f"(cycles {sorted({l['cycle'] for l in lines})})", lines)
            for slot, lines in by_slot.items() if len(lines) > 1]


def run_numbers_never_reused(ev: Evidence) -> List[Violation]:
    plans, found = ev.plans(), []
    scheduled: Dict[Tuple[str, int], List[Line]] = defaultdict(list)
    for line in ev.thread_lines("start"):
        if kind_of(line["tid"], plans) == "recur" and line["attempt"] == 1:
            scheduled[(line["tid"], line["run"])].append(line)
    for (tid, run), lines in scheduled.items():
        if len({l["scheduled"] for l in lines}) > 1:
            found.append(Violation("run numbers never reused",
                                   f"{tid}: run {run} names {len(lines)} different slots", lines))
    for tid in sorted(plans):
        runs = ev.runs_of(tid)
        if not runs:
            continue
        pairs = Counter((r["run"], r["attempt"]) for r in runs if r["run"])
        twice = sorted(pair for pair, n in pairs.items() if n > 1)
        if twice:
            shown = [r for r in runs if (r["run"], r["attempt"]) in set(twice)]
            found.append(Violation(
                "run numbers never reused",
                f"{tid}: sched.runs() holds (run, attempt) {twice} more than once: "
                + "; ".join(json.dumps(r) for r in shown[:6])))
    return found


def attempts_used(ev: Evidence, tid: str) -> Tuple[Dict[int, List[Line]], Dict[int, Line], set]:
    """A one-shot's started attempts (their start lines), its ends by attempt,
    and the attempts the store shows interrupted."""
    starts: Dict[int, List[Line]] = defaultdict(list)
    ends: Dict[int, Line] = {}
    for line in ev.exec:
        if line.get("tid") != tid or line.get("cmd"):
            continue
        if line["ev"] == "start":
            starts[line["attempt"]].append(line)
        elif line["ev"] == "end":
            ends.setdefault(line["attempt"], line)
    interrupted = {r["attempt"] for r in ev.runs_of(tid) or []
                   if (r.get("error") or "").startswith(INTERRUPTED)}
    return starts, ends, interrupted


def recorded(ev: Evidence, tid: str, attempt: int, status: str) -> bool:
    return any(r["attempt"] == attempt and r["status"] == status and r["run"]
               for r in ev.runs_of(tid) or [])


def dependency_completed(ev: Evidence, parent: str) -> bool:
    """Whether the last node says *parent* COMPLETED (a task it does not
    know was canceled: by the workload, or with a dependency of its own; a
    parent that was lost is reported as such on its own)."""
    return ev.status_of(parent) == "Completed"


def nothing_accepted_lost_and_retries_continue(ev: Evidence) -> List[Violation]:
    plans, found = ev.plans(), []
    accepted = ev.accepted()
    for tid in ev.owed_one_shots():
        plan, where = plans[tid], accepted[tid]
        starts, ends, interrupted = attempts_used(ev, tid)
        used = set(starts) | interrupted
        lines = [where] + [l for ls in starts.values() for l in ls] + list(ends.values())
        lines.sort(key=lambda l: (l.source, l.number))
        depends = plan["depend_on"]
        owed = all(dependency_completed(ev, parent) for parent in depends)
        if not owed:
            # canceled with its dependency ("dependents wait" checks it did not run)
            status = ev.status_of(tid)
            # None: unknown to the last node, as cancel() leaves a task (removed)
            if ev.dump is not None and status not in ("Canceled", None):
                parents = {p: ev.status_of(p) for p in depends}
                found.append(Violation(
                    "nothing accepted lost",
                    f"{tid} reads {status}, not Canceled, although a dependency of it did "
                    f"not complete ({parents}): it waits forever", lines))
            continue
        max_attempts = plan["retries"] + 1
        succeeded = [a for a, end in ends.items() if end["ok"]]
        if not used:
            found.append(Violation("nothing accepted lost",
                                   f"{tid} ({describe_plan(plan)}) was accepted in cycle "
                                   f"{where['cycle']} and never executed", lines))
            continue
        last = max(used)
        if not succeeded and last < max_attempts:
            found.append(Violation(
                "retries continue",
                f"{tid} ({describe_plan(plan)}): attempt {last} "
                f"{'was interrupted' if last in interrupted or last not in ends else 'failed'}"
                f" and attempt {last + 1} of {max_attempts} never started", lines))
        if last > max_attempts:
            found.append(Violation("retries continue, never more",
                                   f"{tid} ({describe_plan(plan)}): attempt {last} started, "
                                   f"more than {max_attempts}", lines))
        skipped = sorted(set(range(1, last + 1)) - used)
        if skipped:
            found.append(Violation("retries continue, never more",
                                   f"{tid}: attempts {skipped} skipped before attempt {last}",
                                   lines))
        after_success = [a for a in succeeded
                         if recorded(ev, tid, a, "Completed") and last > a]
        if after_success:
            found.append(Violation("retries continue, never more",
                                   f"{tid}: attempt {after_success[0]} COMPLETED (recorded) "
                                   f"and attempt {last} started after it", lines))
    return found


def describe_plan(plan: Dict[str, Any]) -> str:
    parts = [f"retries={plan['retries']}"]
    if plan["fail_attempts"]:
        parts.append(f"fails attempts <= {plan['fail_attempts']}")
    if plan["depend_on"]:
        parts.append(f"depend_on={plan['depend_on']}")
    if plan["hard"]:
        parts.append("hard")
    return ", ".join(parts)


def dependents_wait(ev: Evidence) -> List[Violation]:
    plans, found = ev.plans(), []
    ok_end_at: Dict[str, int] = {}
    for line in ev.exec:
        if line["ev"] == "end" and line.get("ok"):
            ok_end_at.setdefault(line["tid"], line.number)
    for line in ev.starts():
        plan = plans.get(line["tid"])
        if not plan:
            continue
        early = [p for p in plan["depend_on"] if ok_end_at.get(p, 10**12) > line.number]
        if early:
            found.append(Violation("dependents wait",
                                   f"{line['tid']} started before {early} ended well", [line]))
    return found


def records_agree_with_executions(ev: Evidence) -> List[Violation]:
    if ev.dump is None:
        return []
    plans, found = ev.plans(), []
    ended: Dict[Tuple[str, int, int], List[Line]] = defaultdict(list)
    for line in ev.thread_lines("end"):
        ended[(line["tid"], line["run"], line["attempt"])].append(line)
    for tid, entry in sorted(ev.dump.items()):
        if entry is None or kind_of(tid, plans) == "command" or plans[tid]["hard"]:
            continue
        for r in entry["runs"]:
            if r["status"] == "Completed":
                ends = ended.get((tid, r["run"], r["attempt"]), [])
                if not any(end["ok"] for end in ends):
                    found.append(Violation(
                        "records agree with executions",
                        f"{tid}: sched.runs() says run {r['run']} attempt {r['attempt']} "
                        f"COMPLETED, but no execution of it ended well: {json.dumps(r)}",
                        ends))
            if r["status"] == "Missed" and plans[tid]["kind"] == "once":
                found.append(Violation("records agree with executions",
                                       f"{tid}: a one-shot reads MISSED: {json.dumps(r)}"))
        if entry["status"] == "Missed" and plans[tid]["kind"] == "once":
            found.append(Violation("records agree with executions",
                                   f"{tid}: a one-shot's status is Missed{why_missed(ev, tid)}"))
    for (tid, run, attempt), lines in ended.items():
        for line in lines:
            if not ev.clean(line["cycle"]) or ev.runs_of(tid) is None \
                    or (line["cycle"] == ev.final and not ev.dump_complete):
                continue
            want = "Completed" if line["ok"] else "Error"
            if not any(r["run"] == run and r["attempt"] == attempt and r["status"] == want
                       for r in ev.runs_of(tid)):
                found.append(Violation(
                    "records agree with executions",
                    f"{tid}: run {run} attempt {attempt} ended in cycle "
                    f"{ev.cycles[line['cycle']]}, which shut down cleanly, but sched.runs() has "
                    f"no {want} record of it: {[r for r in ev.runs_of(tid) if r['run'] == run]}",
                    [line]))
    return found


def why_missed(ev: Evidence, tid: str) -> str:
    """What the evidence says of a one-shot that reads Missed (to tell its
    causes apart in the report)."""
    runs = ev.runs_of(tid) or []
    parts = []
    done = [r for r in runs if r["status"] == "Completed"]
    if done:
        parts.append(f"its run {done[0]['run']} attempt {done[0]['attempt']} is recorded "
                     f"COMPLETED")
    elif runs:
        last = runs[0]
        parts.append(f"its last recorded attempt {last['attempt']} reads {last['status']} "
                     f"({last.get('error')})")
    modified = [l for l in ev.driver if l["ev"] == "modified" and l["tid"] == tid]
    if modified:
        parts.append(f"modify() returned for it in cycle(s) {sorted({l['cycle'] for l in modified})}")
    return f" ({'; '.join(parts)})" if parts else ""


def clean_shutdowns_finish_their_runs(ev: Evidence) -> List[Violation]:
    """A node that shut down by itself left no run RUNNING: none reads
    interrupted after the restart, every execution it started ended, and
    the last one exited 0 and said what it knew after its shutdown."""
    found = []
    for cycle in ev.cycles:
        if cycle.how == "final" or cycle.clean:
            found.extend(_runs_ended_in(ev, cycle))
    final = ev.cycles[-1]
    if final.returncode != 0:
        found.append(Violation("clean shutdowns finish their runs",
                               f"the last node (cycle {final}) exited with {final.returncode} "
                               f"(None: it hung in shutdown(wait=True) and was SIGKILLed); "
                               f"see node-{final.number}.err"))
    if not ev.dump_complete:
        found.append(Violation("clean shutdowns finish their runs",
                               "the last node wrote no dump.json after its shutdown (the rules "
                               "used dump-running.json)" if ev.dump else
                               "the last node wrote no dump"))
    for tid, entry in sorted((ev.dump or {}).items()):
        for r in (entry or {}).get("runs", []):
            cycle = ev.cycle_at(r.get("started"))
            if cycle is None or not (cycle.clean or (cycle.how == "final" and ev.dump_complete)):
                continue
            if r["status"] == "Running" or (r.get("error") or "").startswith(INTERRUPTED):
                lines = executions_of(ev, tid, r, cycle)
                executed = {l["ev"] for l in lines}
                what = ("it ran and ended: its outcome was lost" if "end" in executed else
                        "it started" if executed else "it never started")
                if kind_of(tid, ev.plans()) == "command":
                    what = "(a command: its log lines do not say which run they are)"
                found.append(Violation(
                    "clean shutdowns finish their runs",
                    f"{tid}: a run claimed in cycle {cycle}, which shut down cleanly, reads "
                    f"{r['status']} ({r.get('error')}); {what}: {json.dumps(r)}", lines))
    return found


def executions_of(ev: Evidence, tid: str, row: Dict[str, Any], cycle: Cycle) -> List[Line]:
    """The execution lines of a stored run in *cycle* (a hard task's lines
    name its task only: it has one run)."""
    return [l for l in ev.exec if l.get("tid") == tid and l["cycle"] == cycle.number
            and (l.get("hard") or (l.get("run") == row["run"]
                                   and l.get("attempt") == row["attempt"]))]


def _runs_ended_in(ev: Evidence, cycle: Cycle) -> List[Violation]:
    if cycle.returncode != 0:
        return []  # it hung: reported as such
    ends = {(l["tid"], l.get("run"), l["attempt"]) for l in ev.exec
            if l["ev"] == "end" and l["cycle"] == cycle.number}
    open_runs = [l for l in ev.starts() if l["cycle"] == cycle.number and not l.get("cmd")
                 and (l["tid"], l.get("run"), l["attempt"]) not in ends]
    if not open_runs:
        return []
    return [Violation("clean shutdowns finish their runs",
                      f"executions started in cycle {cycle}, which shut down cleanly with "
                      f"wait=True, never ended", open_runs)]


def cancel_holds(ev: Evidence) -> List[Violation]:
    """The README promises a commit before return to delay() only, so a
    cancel() counts as durable once its node shut down cleanly or a later
    delay() of that node returned (its commit comes after the cancel's)."""
    found = []
    accepted_after = defaultdict(int)  # cycle -> driver line of its last accepted delay()
    for line in ev.driver:
        if line["ev"] == "accepted":
            accepted_after[line["cycle"]] = line.number
    for tid, canceled in ev.canceled().items():
        cycle = canceled["cycle"]
        if not ev.clean(cycle) and accepted_after[cycle] < canceled.number:
            continue
        late = [l for l in ev.starts() if l["tid"] == tid and l["cycle"] > cycle]
        if late:
            found.append(Violation("cancel holds", f"{tid} canceled in cycle "
                                   f"{canceled['cycle']} started again later", [canceled] + late))
    return found


def recurring_tasks_keep_running(ev: Evidence) -> List[Violation]:
    starts = Counter(l["tid"] for l in ev.starts() if l["cycle"] == ev.final)
    return [Violation("recurring tasks keep running",
                      f"{tid} started {starts[tid]} times in the clean last run "
                      f"(cycle {ev.final}), expected >= {ev.restarts_needed(tid)} within "
                      f"{FINAL_SETTLE_SECONDS:g} s")
            for tid in ev.live_recurring() if starts[tid] < ev.restarts_needed(tid)]


RULES = (no_slot_twice, run_numbers_never_reused, nothing_accepted_lost_and_retries_continue,
         dependents_wait, records_agree_with_executions, cancel_holds,
         recurring_tasks_keep_running, clean_shutdowns_finish_their_runs)


def judge(torture: Torture) -> List[Violation]:
    ev = Evidence.read(torture)
    found = list(torture.process_violations)
    for rule in RULES:
        found.extend(rule(ev))
    return found


def report(torture: Torture, found: List[Violation], per_rule_shown: int = 5) -> str:
    ev = Evidence.read(torture)
    by_rule = Counter(v.rule for v in found)
    head = [
        f"crash torture: {len(found)} violation(s) {dict(by_rule)}",
        f"seed {torture.seed}, {len(torture.cycles) - 1} interrupted cycles + a clean last one; "
        f"cycles: {', '.join(map(str, torture.cycles))}",
        f"store {torture.store_path}; logs exec.log, driver.log, node-N.err, dump.json in "
        f"{torture.workdir}; {ev.broken} log line(s) cut by a kill",
        f"replay the choices: TORTURE_SEED={torture.seed} "
        f"TORTURE_CYCLES={len(torture.cycles) - 1} python -m pytest {BOUNDED_TEST}",
    ]
    shown, per_rule = [], Counter()
    for violation in found:
        per_rule[violation.rule] += 1
        if per_rule[violation.rule] <= per_rule_shown:
            shown.append(str(violation))
    return "\n".join(head + [""] + shown)


# ------------------------------------------------------------------ the tests

def torture_seed() -> int:
    seed = int(os.environ.get("TORTURE_SEED") or random.SystemRandom().randrange(2**31))
    print(f"crash torture seed: {seed}")
    return seed


def run_torture(tmp_path, seed: int, keep_going) -> Torture:
    torture = Torture(str(tmp_path), seed)
    while keep_going(torture):
        torture.interrupted_cycle()
    torture.final_cycle()
    torture.save()
    return torture


def check(torture: Torture) -> None:
    found = judge(torture)
    print(report(torture, found))
    assert not found, report(torture, found)


@pytest.mark.timeout(300)  # bounded; on a faulty scheduler hung shutdowns take 30 s each
def test_a_scheduler_killed_at_random_moments_runs_every_accepted_slot_once(tmp_path):
    seed = torture_seed()
    cycles = int(os.environ.get("TORTURE_CYCLES") or BOUNDED_CYCLES)
    torture = run_torture(tmp_path, seed, lambda t: len(t.cycles) < cycles)
    check(torture)


@pytest.mark.torture
@pytest.mark.timeout(0)
def test_a_scheduler_killed_for_as_long_as_asked_runs_every_accepted_slot_once(
        tmp_path, torture_seconds):
    seed = torture_seed()
    # the clean last run and the last orphan check need time of their own
    until = time.monotonic() + max(10.0, torture_seconds - FINAL_SETTLE_SECONDS - 10)
    torture = run_torture(tmp_path, seed, lambda t: time.monotonic() < until)
    check(torture)


if __name__ == "__main__":  # judge a kept folder again, every violation shown
    kept = Torture.load(sys.argv[1])
    print(report(kept, judge(kept), per_rule_shown=10**6))
