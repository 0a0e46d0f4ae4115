"""A model-based test: hypothesis drives the public API of ``psl.Scheduler``
with random sequences of calls, and after every step the scheduler is
compared with a small reference model and checked against invariants.

Two state machines:

* ``SchedulerMachine``: ``delay()`` of each trigger kind ('once' after a
  delay, 'recur', 'cron' with a seconds-first expression, 'cron' with a
  number) with options (retries and retry delays of a task that fails on
  chosen attempts, misfire grace time, coalesce, max_instances, timeout,
  depend_on, named tasks and re-adding them), ``cancel``, ``modify`` (also
  while the task fires), ``reschedule``, ``pause``/``resume`` of one task and
  of the scheduler, ``run_now``, moving the clock (event by event, or in one
  jump like a suspended process), stepping the wall clock back, ``purge``,
  bad input, a ``delay()`` on a standby, callbacks that call back into the
  scheduler, and ``shutdown`` followed by a new scheduler on the same SQLite
  store. Time is virtual and moves only when the test says so: the
  dispatcher's ``delayfunc`` blocks until the test moves or pokes the clock,
  and every run executes in the dispatcher's thread (or in the caller's,
  inside the API call), so "the dispatcher waits again" means every due run
  was handled (``model_clock``). The tasks log each execution
  (``model_tasks``); the model (``model_reference``) walks the same time and
  says which runs must have happened: a missing, duplicated, early, late or
  unexpected run fails the step.
* ``ThreadedMachine``: the same scheduler on a real
  ``psl.ThreadPoolExecutor(2)``; every execution waits at a gate until the
  test lets it return, so the test calls ``modify``, ``cancel``,
  ``shutdown`` (with and without a timeout)... while runs are in progress or
  wait for a worker. It has no exact model of who waits for a worker; it
  checks the invariants, and at the end that every one-shot ran once with
  every retry it was owed.

Invariants checked after every step (each is a method, named for what it
promises):

* every future resolves exactly once, with the run's outcome, and a
  done-callback (or a run log's ``write()``) may call back into the
  scheduler;
* no slot runs twice (nor is even tried twice: the store never has to refuse
  a claim), no retry runs twice, run numbers are never reused;
* every run that executed is recorded with its outcome and its times;
* ``sched.task`` holds exactly the tasks with runs still to come (a task
  leaves after its last run, stays gone after ``purge()`` and restarts);
* ``get_status``, ``sched.result`` and ``runs()`` agree with each other and
  with the model;
* every worker slot not taken by a run in progress is free, and only runs
  in progress count as running;
* internal collections (deadlines, held runs, waiting runs, heaps, the
  timetable's side tables) keep no run that is over and stay bounded
  (read in ``invariants.py``, the one place the tests look inside);
* a coalescing recurring task does not pile up runs behind a busy pool;
* the scheduler logs no internal failure.

After the last step: every one-shot ran once with its retries (threaded),
every execution is in the run log once with its status, every run seen is
over and its future resolved after ``shutdown()``.

The bounded version runs in CI (``derandomize=True``: the same examples
every run, no example database written). The long one is marked
``torture``: ``python -m pytest -m torture --torture-seconds 600
tests/test_model.py`` searches with fresh random examples until the time is
up; a failure prints its ``@reproduce_failure`` blob.
"""
from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest
from hypothesis import HealthCheck, Phase, settings, strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, invariant, precondition, rule,
                                 run_state_machine_as_test)

import pysched_lightning as psl
from pysched_lightning import shutdown as psl_shutdown
import model_tasks
from pysched_lightning.stores import open_store
from invariants import (HEAP_SLACK, activity, dispatcher_alive, dispatcher_parked, free_slots,
                        heap_sizes, retained_finished_runs, running_count, workers_busy,
                        timetable_consistency, waiter_count)
from model_clock import (GatedClock, InlinePool, SchedulerHang, advance, settle, stacks)
from model_reference import _BASE as BASE, Definition, Model, ModelTask, Violation, relabel
from model_tasks import Session, call_back_in_thread, job

S = psl.TaskStatus

#: Log messages of the scheduler's own machinery failing (not a task's).
INTERNAL_FAILURES = ("dispatcher error", "the process hand-off failed", "writing ",
                     "closing ", "stored task", "shutting down executor",
                     "reading the clock failed")
#: A scheduler never holds more tasks than this in one example.
MAX_TASKS = 8
#: Exploration only (never set in CI): features or checks to leave out, so
#: that a search looks past defects it has already found, e.g.
#: ``PSL_MODEL_SKIP=future_reentry,timeouts``.
#: Rules or options: future_reentry, runlog_reentry, listener_raises,
#: timeouts, bad_twins, wall_step, standby, modify_race, dependents, restart,
#: purge, pause, readd_changed, shutdown_timeout.
#: Narrower cuts: restart_retry (no restart while a retry or a run_now() run
#: is pending), cancel_held (no cancel or replace while a paused task holds
#: runs), replace_pending (no changed re-add while a retry is pending),
#: modify_waiting (no modify() of a one-shot that came due), run_now_one_shot
#: (no run_now() of a one-shot), missed_dependency (no new dependent of a task
#: that ended MISSED), pause_dependent (no pause of a task with dependencies).
#: Checks: timestamp, refused_claims, shutdown_writes, pileup,
#: shutdown_outcome (a run that executed may read Canceled), missed_status
#: (no status check after a skipped run), slot_reuse (a new definition's run
#: due at the wall time of an earlier definition's run may be skipped).
SKIP = frozenset(filter(None, os.environ.get("PSL_MODEL_SKIP", "").split(",")))


def enabled(feature: str) -> bool:
    return feature not in SKIP


#: Where the examples' stores go (pytest's temporary folder, see ``scratch``).
SCRATCH: Optional[str] = None


@pytest.fixture(autouse=True)
def scratch(tmp_path: Any) -> Any:
    """Every example's store in this test's temporary folder."""
    global SCRATCH
    SCRATCH = str(tmp_path)
    yield
    SCRATCH = None


def example_dir(prefix: str) -> str:
    """A fresh folder for one example's store."""
    return tempfile.mkdtemp(prefix=prefix, dir=SCRATCH)

# -- what the machine generates ---------------------------------------------------

FAIL_PLANS = st.sampled_from([(), (), (1,), (1, 2), (2,), (1, 2, 3)])
RETRIES = st.sampled_from([None, 0, 1, 2])
RETRY_DELAYS = st.sampled_from([None, 0, 1, 3])
GRACES = st.sampled_from([None, None, 0, 1, 5])
COALESCE = st.sampled_from([None, True, False])
MAX_INSTANCES = st.sampled_from([None, 1, 2])
TIMEOUTS = st.sampled_from([None, None, 1, 3600] if enabled("timeouts") else [None])
PRIORITIES = st.sampled_from([1, 2, 5])
DELAYS = st.sampled_from([0, 0, 0.5, 1, 2, 5, 10, 30])
PERIODS = st.sampled_from([1, 2, 3, 5, 10])
CRON_STEPS = st.sampled_from([5, 10, 15, 30])


def _definitions(kind: str, interval: Any) -> Any:
    return st.builds(Definition, kind=st.just(kind), interval=interval,
                     priority=PRIORITIES, fail_on=FAIL_PLANS, retries=RETRIES,
                     retry_delay=RETRY_DELAYS,
                     retry_backoff=st.sampled_from([None, None, 2.0]),
                     misfire_grace_time=GRACES, coalesce=COALESCE,
                     max_instances=MAX_INSTANCES, timeout=TIMEOUTS)


DEFINITIONS = st.one_of(_definitions("once", DELAYS), _definitions("cronnum", DELAYS),
                        _definitions("recur", PERIODS), _definitions("cron", CRON_STEPS))
#: Dependents are one-shots a quarter second off the half-second grid (see
#: model_reference: a dependent never ties with its dependency).
DEPENDENT_DEFINITIONS = st.one_of(
    _definitions("once", DELAYS.map(lambda d: d + 0.25)),
    _definitions("cronnum", DELAYS.map(lambda d: d + 0.25)))
MODIFICATIONS = st.one_of(
    st.tuples(st.just("priority"), PRIORITIES),
    st.tuples(st.just("fail_on"), FAIL_PLANS),
    st.tuples(st.just("retries"), RETRIES),
    st.tuples(st.just("retry_delay"), RETRY_DELAYS),
    st.tuples(st.just("misfire_grace_time"), GRACES),
    st.tuples(st.just("coalesce"), COALESCE),
    st.tuples(st.just("max_instances"), MAX_INSTANCES),
    st.tuples(st.just("timeout"), TIMEOUTS))
#: Valid values and an invalid twin that compares equal to them (True == 1):
#: validation must not depend on what was delayed before.
BAD_TWINS = [("retries", 1, True), ("retries", 0, False), ("max_instances", 1, True),
             ("coalesce", True, 1), ("coalesce", False, 0), ("timeout", 1, True),
             ("misfire_grace_time", 1, True), ("retry_delay", 1, True),
             ("retries", 1, -1), ("timeout", 1, -5), ("misfire_grace_time", 1, -1)]


class RunLogSink:
    """A run log object (``write(record)``): keeps every record it gets. It
    can be armed to call back into the scheduler from its next write."""

    def __init__(self) -> None:
        self.records: List[Dict[str, Any]] = []
        self.armed: Optional[Callable[[], Any]] = None
        self.reentry_failures: List[str] = []

    def write(self, record: Dict[str, Any]) -> None:
        self.records.append(dict(record))
        call, self.armed = self.armed, None
        if call is not None:
            failure = call_back_in_thread(call)
            if failure:
                self.reentry_failures.append(f"run log write(): {failure}")


class InternalErrors(logging.Handler):
    """Collects the scheduler's log lines that report its own machinery failing."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.lines: List[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith(INTERNAL_FAILURES):
            self.lines.append(message.splitlines()[0])


def _reentry(sched: Any, tid: str) -> Callable[[], Any]:
    return lambda: sched.get_status(tid)


class SchedulerMachine(RuleBasedStateMachine):
    """The public API, one call per step, on a gated virtual clock with runs
    executed inline, and a SQLite store that survives restarts."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = example_dir("psl-model-")
        self.store_path = os.path.join(self.dir, "jobs.db")
        self.clock = GatedClock(BASE)
        #: wall clock - scheduler clock (the test may step the wall clock).
        self.shift = 0.0
        #: How many times each task (by label) was given a new trigger: a
        #: new trigger may run the instant of a slot the old one ran.
        self.triggers: Dict[str, int] = {}
        self.session = Session(self.clock.now)
        model_tasks.SESSION = self.session
        self.model = Model(BASE)
        self.model.lenient_reused_slots = not enabled("slot_reuse")
        self.model.lenient_missed_status = not enabled("missed_status")
        self.runlog = RunLogSink()
        self.errors = InternalErrors()
        logging.getLogger("pysched_lightning").addHandler(self.errors)
        #: Every execution so far, with the wall shift it ran under.
        self.executions: List[Tuple[Any, Any]] = []
        self.seen = 0
        #: Executions before this index finished before the last purge().
        self.purge_mark = 0
        self.keys = 0
        self.sched: Any = None
        self.sleeper: Any = None
        self.broken = False
        #: Called once at the test thread's next reading of the wall clock.
        self.wall_hook: Optional[Callable[[], None]] = None
        #: MISSED events of runs the store refused to claim.
        self.refused: List[Any] = []
        #: The exception type the COMPLETED listener raises once (armed).
        self.listener_raises: Optional[type] = None
        self.start_scheduler(readd=False)

    # -- the scheduler ---------------------------------------------------------

    def wall(self) -> float:
        hook = self.wall_hook
        if hook is not None and threading.current_thread() is threading.main_thread():
            self.wall_hook = None
            hook()
        return self.clock.t + self.shift

    def start_scheduler(self, readd: bool) -> None:
        self.sleeper = self.clock.sleeper()
        self.sched = psl.Scheduler(executor=InlinePool(), timefunc=self.clock.now,
                                   delayfunc=self.sleeper, wallfunc=self.wall,
                                   store=self.store_path, run_log=self.runlog)
        self.sched.add_listener(self.on_missed, kinds=[psl.EventKind.MISSED])
        self.sched.add_listener(self.on_completed, kinds=[psl.EventKind.COMPLETED])
        if readd:  # start-up code that adds its named tasks at every start
            for task in self.model.tasks.values():
                if task.named and task.state in ("scheduled", "finished") \
                        and not task.unpredictable and self._dependencies_known(task):
                    tid = self.delay(task.key, task.definition, task.tid)
                    assert tid == task.tid
        self.sched.start()
        self.settle()

    def on_completed(self, event: Any) -> None:
        """A listener that raises once, when armed, in a scheduler thread (in
        the test's own thread the exception would end the test itself)."""
        raising = self.listener_raises
        if raising is not None and threading.current_thread() is not threading.main_thread():
            self.listener_raises = None
            raise raising(f"a listener fails on {event.kind.name} on purpose")

    def on_missed(self, event: Any) -> None:
        if "claimed" in (event.reason or ""):
            self.refused.append(event)

    def settle(self) -> None:
        sched = self.sched
        try:
            settle(self.clock, self.sleeper, parked=lambda: dispatcher_parked(sched),
                   alive=lambda: dispatcher_alive(sched))
        except SchedulerHang as exc:
            self.broken = True
            raise SchedulerHang(f"{exc}\n{stacks()}") from None

    def shutdown_scheduler(self) -> None:
        sched, sleeper = self.sched, self.sleeper
        sleeper.release()
        done = threading.Event()
        failure: List[BaseException] = []

        def stop() -> None:
            try:
                sched.shutdown(wait=True)
            except BaseException as exc:  # noqa: B902 - reported below
                failure.append(exc)
            finally:
                done.set()

        threading.Thread(target=stop, name="model-shutdown", daemon=True).start()
        if not done.wait(10):
            self.broken = True
            raise SchedulerHang(f"shutdown(wait=True) did not return\n{stacks()}")
        if failure:
            raise failure[0]

    def delay(self, key: str, definition: Definition, task_id: Optional[str]) -> str:
        trigger, interval = definition.trigger()
        return self.sched.delay(trigger, interval, definition.priority, job,
                                args=(key, definition.fail_on), task_id=task_id,
                                tz="UTC" if definition.kind == "cron" else None,
                                **definition.options())

    def new_key(self) -> str:
        self.keys += 1
        return f"t{self.keys}"

    def step(self, real: Callable[[], Any], modeled: Callable[[Any], None]) -> None:
        """Do *real* (the API calls), wait until the scheduler is quiet, then
        let the model account for the runs that happened."""
        outcome = real()
        self.settle()
        fresh = self.session.log[self.seen:]
        self.seen = len(self.session.log)
        self.executions.extend((execution, (self.shift, self.triggers.get(execution.label, 0)))
                               for execution in fresh)
        self.model.begin(fresh)
        modeled(outcome)
        self.model.end()

    def pick(self, index: int, candidates: List[ModelTask]) -> Optional[ModelTask]:
        return candidates[index % len(candidates)] if candidates else None

    def _dependencies_known(self, task: ModelTask) -> bool:
        """Its dependencies are scheduled or finished (known, even after a restart)."""
        return all(dep in self.model.tasks
                   and self.model.tasks[dep].state in ("scheduled", "finished")
                   for dep in task.definition.depend_on)

    # -- rules: adding tasks -------------------------------------------------------

    @precondition(lambda self: len(self.model.scheduled_ids()) < MAX_TASKS)
    @rule(definition=DEFINITIONS, named=st.booleans())
    def add(self, definition: Definition, named: bool) -> None:
        """delay() of any trigger kind, with options."""
        key = self.new_key()
        name = f"job-{key}" if named else None
        self.step(lambda: self.delay(key, definition, name),
                  lambda tid: self.model.add(key, tid, named, definition))

    @precondition(lambda self: len(self.model.scheduled_ids()) < MAX_TASKS
                  and enabled("dependents")
                  and any(t.state in ("scheduled", "finished") for t in self.model.all))
    @rule(definition=DEPENDENT_DEFINITIONS, index=st.integers(0, 100), named=st.booleans())
    def add_dependent(self, definition: Definition, index: int, named: bool) -> None:
        """delay() of a one-shot that depends on a known task."""
        candidates = [t for t in self.model.tasks.values()
                      if t.state in ("scheduled", "finished") and not t.unpredictable
                      and (enabled("missed_dependency") or t.status is not S.MISSED)]
        dependency = self.pick(index, candidates)
        if dependency is None:
            return
        definition = relabel(definition, depend_on=(dependency.tid,))
        key = self.new_key()
        name = f"job-{key}" if named else None
        self.step(lambda: self.delay(key, definition, name),
                  lambda tid: self.model.add(key, tid, named, definition))

    @precondition(lambda self: any(t.named and t.state in ("scheduled", "finished")
                                   for t in self.model.tasks.values()))
    @rule(index=st.integers(0, 100), changed=st.none() | DEFINITIONS)
    def readd_named(self, index: int, changed: Optional[Definition]) -> None:
        """delay() of a named task again: the same definition keeps it, a
        changed one replaces it (README)."""
        candidates = [t for t in self.model.tasks.values() if t.named and not t.unpredictable
                      and t.state in ("scheduled", "finished") and self._dependencies_known(t)]
        task = self.pick(index, candidates)
        if task is None:
            return
        if changed is not None and not enabled("readd_changed"):
            return
        if changed is not None and not enabled("cancel_held") and any(
                t.paused and (t.pending or t.parked) for t in self.model.tasks.values()):
            return
        if changed is not None and not enabled("replace_pending") and task.pending:
            return
        if changed is None:
            self.step(lambda: self.delay(task.key, task.definition, task.tid),
                      lambda tid: _expect_equal(tid, task.tid, "re-added task id"))
            return
        if task.definition.depend_on:
            changed = relabel(changed, depend_on=task.definition.depend_on,
                              kind=_one_shot_kind(changed.kind),
                              interval=_quarter(changed))
        key = self.new_key()
        self.step(lambda: self.delay(key, changed, task.tid),
                  lambda tid: self.model.add(key, tid, True, changed))

    # -- rules: control ----------------------------------------------------------------

    def _control(self, index: int, call: Callable[[str], Any],
                 modeled: Callable[[ModelTask], None]) -> None:
        """A control call on any task id ever used: KeyError unless scheduled."""
        task = self.pick(index, list(self.model.tasks.values()))
        if task is None or task.unpredictable:
            return
        expect_error = task.state != "scheduled"

        def real() -> Optional[BaseException]:
            try:
                call(task.tid)
            except KeyError as exc:
                return exc
            return None

        def model(error: Optional[BaseException]) -> None:
            if expect_error and error is None:
                raise Violation(f"{call.__name__}({task.tid!r}) of a task that is "
                                f"{task.state} did not raise KeyError")
            if not expect_error and error is not None:
                raise Violation(f"{call.__name__}({task.tid!r}) of a scheduled task "
                                f"raised {error!r}")
            if not expect_error:
                modeled(task)
        self.step(real, model)

    @rule(index=st.integers(0, 100))
    def cancel(self, index: int) -> None:
        if not enabled("cancel_held") and any(
                t.paused and (t.pending or t.parked) for t in self.model.tasks.values()):
            return
        self._control(index, self.sched.cancel, self.model.cancel)

    @rule(index=st.integers(0, 100), change=MODIFICATIONS)
    def modify(self, index: int, change: Tuple[str, Any]) -> None:
        """modify() of the priority, the arguments or one option."""
        field, value = change
        task = self.pick(index, list(self.model.tasks.values()))
        if task is None:
            return
        if not enabled("modify_waiting") and task.one_shot and task.fired:
            return

        def call(tid: str) -> None:
            if field == "fail_on":
                self.sched.modify(tid, args=(task.key, value))
            else:
                self.sched.modify(tid, **{field: value})
        call.__name__ = "modify"
        self._control(index, call,
                      lambda t: self.model.modify(t, relabel(t.definition, **{field: value})))

    @precondition(lambda self: enabled("modify_race") and any(
        t.state == "scheduled" and not t.one_shot and t.next_due is not None
        for t in self.model.tasks.values()))
    @rule(index=st.integers(0, 100), change=MODIFICATIONS)
    def modify_while_the_task_fires(self, index: int, change: Tuple[str, Any]) -> None:
        """modify() of a recurring task while its next occurrence comes due:
        ``modify()`` reads the wall clock (for the store record) between
        reading the definition and putting the new one in place; the test's
        wall clock lets time pass right there, as a slow store write would,
        and the dispatcher fires the task meanwhile. The fired slot must not
        run again (README: claims, no slot twice)."""
        candidates = [t for t in self.model.tasks.values() if t.state == "scheduled"
                      and not t.one_shot and t.next_due is not None and not t.unpredictable]
        task = self.pick(index, candidates)
        if task is None:
            return
        field, value = change
        target = task.next_due
        if self.model.paused_all or task.paused:
            return

        def let_time_pass() -> None:
            advance(self.clock, self.sleeper, target - self.clock.t, self.settle)

        def real() -> None:
            self.wall_hook = let_time_pass
            if field == "fail_on":
                self.sched.modify(task.tid, args=(task.key, value))
            else:
                self.sched.modify(task.tid, **{field: value})
            self.wall_hook = None

        def modeled(_: Any) -> None:
            self.model.advance(target)
            self.model.modify(task, relabel(task.definition, **{field: value}))
            self.model.process()
        self.step(real, modeled)

    @rule(index=st.integers(0, 100), definition=DEFINITIONS)
    def reschedule(self, index: int, definition: Definition) -> None:
        """reschedule() of a task that has no run in progress or pending."""
        task = self.pick(index, list(self.model.tasks.values()))
        if task is None or task.unpredictable or (task.state == "scheduled" and (
                task.fired or task.pending or task.parked is not None)):
            return
        if task.definition.depend_on:
            definition = relabel(definition, kind=_one_shot_kind(definition.kind),
                                 interval=_quarter(definition))
        new = relabel(task.definition, kind=definition.kind, interval=definition.interval)
        trigger, interval = new.trigger()

        def call(tid: str) -> None:
            self.triggers[task.key] = self.triggers.get(task.key, 0) + 1
            self.sched.reschedule(tid, trigger, interval,
                                  tz="UTC" if new.kind == "cron" else None)
        call.__name__ = "reschedule"
        self._control(index, call, lambda t: self.model.reschedule(t, new))

    @precondition(lambda self: enabled("pause"))
    @rule(index=st.integers(0, 100))
    def pause_task(self, index: int) -> None:
        if not enabled("pause_dependent"):
            task = self.pick(index, list(self.model.tasks.values()))
            if task is not None and task.definition.depend_on:
                return
        self._control(index, self.sched.pause, self.model.pause)

    @rule(index=st.integers(0, 100))
    def resume_task(self, index: int) -> None:
        self._control(index, self.sched.resume, self.model.resume)

    @precondition(lambda self: enabled("pause"))
    @rule()
    def pause_all(self) -> None:
        self.step(lambda: self.sched.pause(), lambda _: self.model.pause(None))

    @rule()
    def resume_all(self) -> None:
        self.step(lambda: self.sched.resume(), lambda _: self.model.resume(None))

    @rule(index=st.integers(0, 100))
    def run_now(self, index: int) -> None:
        if not enabled("run_now_one_shot"):
            task = self.pick(index, list(self.model.tasks.values()))
            if task is not None and task.one_shot:
                return
        self._control(index, self.sched.run_now, self.model.run_now)

    @precondition(lambda self: enabled("purge"))
    @rule()
    def purge(self) -> None:
        def real() -> None:
            self.sched.purge()
            self.purge_mark = len(self.executions)
        self.step(real, lambda _: self.model.purge())

    # -- rules: time --------------------------------------------------------------------

    @rule(seconds=st.sampled_from([0.5, 1, 2, 3, 5, 10, 30, 60]))
    def advance_time(self, seconds: float) -> None:
        """Time moves event by event: everything runs on time."""
        target = self.clock.t + seconds
        self.step(lambda: advance(self.clock, self.sleeper, seconds, self.settle),
                  lambda _: self.model.advance(target))

    @rule(seconds=st.sampled_from([3, 10, 60, 300]))
    def stall(self, seconds: float) -> None:
        """Time jumps (a suspended process): what fell due is late."""
        target = self.clock.t + seconds
        self.step(lambda: self.clock.set_time(target), lambda _: self.model.jump(target))

    @precondition(lambda self: enabled("wall_step") and any(
        t.definition.kind == "cron" and t.state == "scheduled"
        for t in self.model.tasks.values()))
    @rule(delta=st.sampled_from([-3600.0, -120.0]))
    def step_wall_clock_back(self, delta: float) -> None:
        """The wall clock steps back (NTP): cron times are re-derived (README)."""
        def real() -> None:
            self.shift += delta
        self.step(real, lambda _: self.model.step_wall_back(delta))

    @precondition(lambda self: enabled("restart"))
    @rule(down=st.sampled_from([0, 0, 5, 60, 600]), readd=st.booleans())
    def restart(self, down: float, readd: bool) -> None:
        """shutdown(wait=True), *down* seconds without a scheduler, then a new
        scheduler on the same store (re-adding its named tasks, or not)."""
        if not enabled("restart_retry") and any(
                t.pending for t in self.model.tasks.values() if t.state == "scheduled"):
            return

        def real() -> None:
            self.shutdown_scheduler()
            self.clock.set_time(self.clock.t + down)
            self.start_scheduler(readd)

        def modeled(_: Any) -> None:
            self.model.restart(down)
            self.model.process()
        self.step(real, modeled)

    # -- rules: input and callbacks -----------------------------------------------

    @precondition(lambda self: enabled("standby"))
    @rule()
    def delay_on_a_standby(self) -> None:
        """A second scheduler on the store waits as a standby; a delay() on it
        stores the task, and the id it returns is one it knows (careful user:
        ``get_status`` of the id just returned answers, Suspended)."""
        self.keys += 1
        tid = f"standby-t{self.keys}"

        def real() -> Optional[str]:
            standby = psl.Scheduler(executor=InlinePool(), timefunc=self.clock.now,
                                    delayfunc=self.clock.sleeper(), wallfunc=self.wall,
                                    store=self.store_path)
            try:
                got = standby.delay("once", 3600, 1, job, args=(tid,), task_id=tid)
                try:
                    status = standby.get_status(got)
                except KeyError as exc:
                    return f"get_status() of the id its delay() returned raised {exc!r}"
                return None if status is S.SUSPENDED else f"it reads {status.label}"
            finally:
                standby.shutdown(wait=True)
                self.sched.store.remove_task(tid)  # the active scheduler never sees it

        def modeled(problem: Optional[str]) -> None:
            if problem:
                raise Violation(f"a task delayed on a standby: {problem}")
        self.step(real, modeled)

    @precondition(lambda self: enabled("bad_twins"))
    @rule(twin=st.sampled_from(BAD_TWINS), definition=DEFINITIONS)
    def bad_delay(self, twin: Tuple[str, Any, Any], definition: Definition) -> None:
        """delay() with a bad option value right after one with its valid
        twin (equal to it: True == 1): the first is accepted, the second
        refused and changes nothing (README: every path checks them all)."""
        field, good, bad = twin
        definition = relabel(definition, **{field: good})
        trigger, interval = definition.trigger()
        options = definition.options()
        options[field] = bad
        key = self.new_key()

        def real() -> Optional[BaseException]:
            try:
                self.sched.delay(trigger, interval, definition.priority, job,
                                 args=(key, definition.fail_on),
                                 tz="UTC" if definition.kind == "cron" else None, **options)
            except (TypeError, ValueError) as exc:
                return exc
            return None

        def modeled(error: Optional[BaseException]) -> None:
            if error is None:
                raise Violation(f"delay(..., {field}={bad!r}) was accepted (its twin "
                                f"{field}={good!r} is valid, {bad!r} is not)")
        if len(self.model.scheduled_ids()) < MAX_TASKS:  # the valid twin first
            self.add(definition, named=False)
        self.step(real, modeled)

    @precondition(lambda self: enabled("future_reentry"))
    @rule()
    def arm_future_callback_reentry(self) -> None:
        """The next run's future gets a done-callback that calls
        ``get_status`` (careful user: a callback may call the scheduler, as
        a listener may, README)."""
        sched = self.sched
        self.session.reenter_next = lambda tid: _reentry(sched, tid)
        self.step(lambda: None, lambda _: None)

    @precondition(lambda self: enabled("listener_raises"))
    @rule(exception=st.sampled_from([RuntimeError, SystemExit]))
    def arm_a_listener_that_raises(self, exception: type) -> None:
        """The next COMPLETED event's listener raises (README: a listener
        that raises is logged and the others still run; careful user: the
        same for ``SystemExit``, which no scheduler thread should die of)."""
        self.listener_raises = exception
        self.step(lambda: None, lambda _: None)

    @precondition(lambda self: enabled("runlog_reentry"))
    @rule(index=st.integers(0, 100))
    def arm_run_log_reentry(self, index: int) -> None:
        """The run log's next write() calls ``runs()`` of a task (careful
        user: a run log object is user code, like a listener, which may call
        back into the scheduler, README). ``runs()`` here writes what is
        pending, so the armed write happens in this step if any is."""
        task = self.pick(index, list(self.model.tasks.values()))
        if task is None:
            return
        sched = self.sched

        def real() -> None:
            self.runlog.armed = lambda: sched.runs(task.tid, limit=1)
            try:
                sched.runs(task.tid, limit=1)
            except KeyError:
                pass
        self.step(real, lambda _: None)

    # -- invariants ---------------------------------------------------------------------

    @invariant()
    def every_future_resolves_exactly_once(self) -> None:
        check_futures(self.session)

    @invariant()
    def callbacks_may_call_the_scheduler(self) -> None:
        failures = self.session.reentry_failures() + self.runlog.reentry_failures
        if failures:
            raise Violation(f"user code called with a scheduler lock held: {failures[0]}")

    @invariant()
    def no_slot_or_retry_runs_twice(self) -> None:
        check_unique(self.executions)

    @invariant()
    def every_execution_is_recorded_with_its_outcome(self) -> None:
        for execution, _ in self.executions:
            run = execution.run
            want = S.ERROR if execution.failed else S.COMPLETED
            if run.status is not want:
                raise Violation(f"{_show(execution)} ran and "
                                f"{'failed' if execution.failed else 'returned'}, but "
                                f"its run reads {run.status.label}")
            if run.started is None or run.finished is None or (
                    run["timestamp"] is None and enabled("timestamp")):
                raise Violation(f"{_show(execution)} ran, but its run has "
                                f"timestamp={run['timestamp']}, started={run.started}, "
                                f"finished={run.finished}")

    @invariant()
    def scheduled_tasks_are_exactly_those_with_runs_to_come(self) -> None:
        unsure = set(self.model.unpredictable_ids())
        actual = sorted(set(self.sched.task) - unsure)
        expected = sorted(set(self.model.scheduled_ids()) - unsure)
        if actual != expected:
            extra = sorted(set(actual) - set(expected))
            missing = sorted(set(expected) - set(actual))
            detail = [f"{tid} ({self.model.tasks[tid].state})" if tid in self.model.tasks
                      else tid for tid in extra]
            raise Violation(f"sched.task holds {detail} that should have left, and "
                            f"lacks {missing}")

    @invariant()
    def statuses_agree(self) -> None:
        for tid, task in self.model.tasks.items():
            if task.unpredictable:
                continue
            try:
                status = self.sched.get_status(tid)
            except KeyError:
                if task.state != "gone":
                    raise Violation(f"get_status({tid!r}) raised KeyError; the task is "
                                    f"{task.state}") from None
                continue
            if task.state == "gone":
                raise Violation(f"get_status({tid!r}) of a task that is gone "
                                f"(purged, or canceled before a restart) gave {status.label}")
            if status is S.RUNNING:
                raise Violation(f"task {tid!r} reads Running with nothing running")
            if task.status is not None and status is not task.status \
                    and not task.status_unsure:
                raise Violation(f"task {tid!r} ({task.key}, {task.state}) reads "
                                f"{status.label}, the model says {task.status.label}")
            latest = self.sched.result.get(tid)
            if latest is not None and status in (S.COMPLETED, S.ERROR, S.TIMEOUT) \
                    and latest.status is not status:
                raise Violation(f"task {tid!r} reads {status.label} but its latest run "
                                f"{latest!r} reads {latest.status.label}")

    @invariant()
    def latest_runs_are_in_runs(self) -> None:
        """The latest run of a task (if it executed since the last purge(),
        which removes stored runs) is among ``runs()``."""
        executed = {id(execution.run) for execution, _ in self.executions[self.purge_mark:]}
        for tid, latest in list(self.sched.result.items()):
            if id(latest) not in executed:
                continue
            listed = [(r.run_number, r.attempt, r.status) for r in self.sched.runs(tid)]
            if (latest.run_number, latest.attempt, latest.status) not in listed:
                raise Violation(f"sched.result[{tid!r}] is {latest!r}, which runs() "
                                f"does not list: {listed[:5]}")

    @invariant()
    def no_slot_is_tried_twice(self) -> None:
        """One scheduler at a time holds the store, so the store never has to
        refuse a claim: a MISSED run "already claimed" means the scheduler
        tried to run a slot (task, due time, attempt) a second time."""
        if self.refused and enabled("refused_claims"):
            event = self.refused[0]
            raise Violation(f"task {event.task_id!r}: its run due at "
                            f"{event.run.scheduled.timestamp() - BASE:+.3f} was refused by "
                            f"the store: {event.reason}")

    @invariant()
    def with_nothing_running_every_slot_is_free(self) -> None:
        if running_count(self.sched):
            raise Violation(f"{running_count(self.sched)} run(s) count as running, none is")
        for lane, (free, capacity) in free_slots(self.sched).items():
            if capacity is not None and free != capacity:
                raise Violation(f"lane {lane}: {free} of {capacity} slots free with "
                                "nothing running")
        if waiter_count(self.sched):
            raise Violation("threads are registered as waiting for runs; none waits")

    @invariant()
    def internal_collections_keep_no_finished_run(self) -> None:
        check_collections(self.sched)

    @invariant()
    def no_internal_failure_is_logged(self) -> None:
        if self.errors.lines:
            raise Violation(f"the scheduler logged: {self.errors.lines[0]}")
        if self.session.problems:
            raise Violation(self.session.problems[0])

    # -- the end of an example -------------------------------------------------------

    def teardown(self) -> None:
        logging.getLogger("pysched_lightning").removeHandler(self.errors)
        failing = sys.exc_info()[1] is not None  # a step failed: only clean up
        try:
            if not self.broken and not failing:
                self.shutdown_scheduler()
                self.check_after_shutdown()
            elif not self.broken:
                self.sleeper.release()
                self.sched.shutdown(wait=False)
        finally:
            model_tasks.SESSION = None
            if not self.broken:
                shutil.rmtree(self.dir, ignore_errors=True)

    def check_after_shutdown(self) -> None:
        """After shutdown(wait=True): every run seen is over and its future
        resolved once; the run log has every execution once, with its status."""
        self.callbacks_may_call_the_scheduler()
        for watch in self.session.all_watches():
            if not watch.run.done or watch.calls != 1:
                raise Violation(f"after shutdown {watch.run!r} is "
                                f"{watch.run.status.label}, its future resolved "
                                f"{watch.calls} times")
        logged: Dict[Tuple[Any, ...], List[Dict[str, Any]]] = {}
        for record in self.runlog.records:
            if record["status"] == "Missed":
                continue
            key = (record["task_id"], record["run"], record["attempt"],
                   round(record["scheduled"], 3))
            logged.setdefault(key, []).append(record)
        expected: Dict[Tuple[Any, ...], List[str]] = {}
        for execution, _ in self.executions:  # (two definitions of one id may share a key)
            key = (execution.task_id, execution.run_number, execution.attempt,
                   round(execution.scheduled, 3))
            expected.setdefault(key, []).append("Error" if execution.failed else "Completed")
        for key, statuses in expected.items():
            records = logged.pop(key, [])
            if sorted(r["status"] for r in records) != sorted(statuses):
                raise Violation(f"run {key}: the run log has "
                                f"{[r['status'] for r in records]}, expected {statuses}")
        leftover = [(key, [r["status"] for r in records]) for key, records in logged.items()
                    if any(r["status"] in ("Completed", "Error", "Timeout") for r in records)]
        if leftover:
            raise Violation(f"the run log has runs that never executed: {leftover[:3]}")


# -- the threaded variant ---------------------------------------------------------------

#: Timeouts a quarter second off the half-second grid of start and release
#: times, so a run is never released exactly at its deadline.
THREAD_TIMEOUTS = st.sampled_from([None, None, 1.25, 3.75] if enabled("timeouts") else [None])


def _thread_definitions(kind: str, interval: Any) -> Any:
    return st.builds(Definition, kind=st.just(kind), interval=interval,
                     priority=PRIORITIES, fail_on=FAIL_PLANS, retries=RETRIES,
                     retry_delay=RETRY_DELAYS, misfire_grace_time=GRACES,
                     coalesce=COALESCE, max_instances=MAX_INSTANCES, timeout=THREAD_TIMEOUTS)


THREAD_DEFINITIONS = st.one_of(
    _thread_definitions("once", DELAYS), _thread_definitions("cronnum", DELAYS),
    _thread_definitions("recur", PERIODS), _thread_definitions("cron", CRON_STEPS))
THREAD_MODIFICATIONS = st.one_of(
    st.tuples(st.just("priority"), PRIORITIES),
    st.tuples(st.just("fail_on"), FAIL_PLANS),
    st.tuples(st.just("misfire_grace_time"), GRACES),
    st.tuples(st.just("coalesce"), COALESCE),
    st.tuples(st.just("max_instances"), MAX_INSTANCES))
#: A shutdown whose timeout has passed gets this long (real seconds) to
#: return: the README's "at most timeout seconds", the scheduler's own grace
#: for interrupted runs (2 s; shortened here: ``SHORT_INTERRUPT_GRACE``), and a
#: generous margin for a loaded machine.
SHUTDOWN_PATIENCE = 8.0


class ThreadTask:
    """What the threaded machine knows of a task it added."""

    def __init__(self, key: str, tid: str, definition: Definition) -> None:
        self.key, self.tid, self.definition = key, tid, definition
        #: Canceled by the test (its runs may stop at any attempt).
        self.canceled = False
        #: run_now() calls the scheduler took (each owes a manual run).
        self.manual_asked = 0


class ThreadedMachine(RuleBasedStateMachine):
    """The public API on a real ``psl.ThreadPoolExecutor(2)``: every execution
    waits at a gate until the test opens it, so runs are in progress (or
    waiting for a worker) while the test calls ``modify``, ``cancel``,
    ``shutdown``... Without an exact model of who waits for a worker, it
    checks invariants, and at the end that every one-shot ran once with
    every retry it was owed."""

    WORKERS = 2

    def __init__(self) -> None:
        super().__init__()
        self.dir = example_dir("psl-model-threads-")
        self.store_path = os.path.join(self.dir, "jobs.db")
        self.clock = GatedClock(BASE)
        self.session = Session(self.clock.now, gated=True)
        model_tasks.SESSION = self.session
        self.runlog = RunLogSink()
        self.errors = InternalErrors()
        logging.getLogger("pysched_lightning").addHandler(self.errors)
        self.executions: List[Tuple[Any, float]] = []
        self.tasks: Dict[str, ThreadTask] = {}
        #: Executions a shutdown's timeout interrupted (they end TIMEOUT).
        #: Executions still going when a shutdown's timeout passed, and when.
        self.interrupted: Dict[int, float] = {}
        self.seen = 0
        self.keys = 0
        self.broken = False
        self.sched: Any = None
        self.sleeper: Any = None
        self.start_scheduler()

    def start_scheduler(self) -> None:
        self.sleeper = self.clock.sleeper()
        self.sched = psl.Scheduler(executor=psl.ThreadPoolExecutor(self.WORKERS),
                                   timefunc=self.clock.now, delayfunc=self.sleeper,
                                   wallfunc=lambda: self.clock.t, store=self.store_path,
                                   run_log=self.runlog)
        self.sched.start()
        self.settle()

    def busy(self) -> bool:
        return workers_busy(self.sched, len(self.session.blocked_threads()))

    def settle(self) -> None:
        """Wait until the dispatcher waits and every worker is idle or at a
        gate; again until nothing changes (a worker that finished a run may
        have left work for the dispatcher, whose injected sleep only ends
        when the test pokes it: README, delayfunc)."""
        sched = self.sched
        before = None
        try:
            for _ in range(50):
                settle(self.clock, self.sleeper, parked=lambda: dispatcher_parked(sched),
                       alive=lambda: dispatcher_alive(sched), busy=self.busy)
                now = (len(self.session.log), len(self.session.waiting_gates()),
                       activity(sched))
                if now == before:
                    self.wait_for_futures()
                    return
                before = now
            raise SchedulerHang("the scheduler never came to rest (50 rounds)")
        except SchedulerHang as exc:
            self.broken = True
            self.session.open_gates()
            raise SchedulerHang(f"{exc}\n{stacks()}") from None

    def wait_for_futures(self, seconds: float = 5.0) -> None:
        """Wait (up to *seconds*: then the invariant names the run) until
        every run that is over has its future resolved: a worker ends a run
        under the lock and resolves its future after it, with its other
        effects, when it no longer counts as busy."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and any(
                watch.run.done and not watch.calls for watch in self.session.all_watches()):
            time.sleep(0.001)

    def step(self, real: Callable[[], Any]) -> Any:
        outcome = real()
        self.settle()
        fresh = self.session.log[self.seen:]
        self.seen = len(self.session.log)
        self.executions.extend((execution, 0.0) for execution in fresh)
        return outcome

    def pick(self, index: int) -> Optional[ThreadTask]:
        tasks = list(self.tasks.values())
        return tasks[index % len(tasks)] if tasks else None

    def waiting_gates(self) -> List[Any]:
        return sorted(self.session.waiting_gates(), key=lambda gate: gate.key)

    # -- rules ------------------------------------------------------------------

    @precondition(lambda self: sum(t.tid in self.sched.task for t in self.tasks.values()) < 6)
    @rule(definition=THREAD_DEFINITIONS, named=st.booleans())
    def add(self, definition: Definition, named: bool) -> None:
        self.keys += 1
        key = f"t{self.keys}"
        trigger, interval = definition.trigger()
        tid = self.step(lambda: self.sched.delay(
            trigger, interval, definition.priority, job, args=(key, definition.fail_on),
            task_id=f"job-{key}" if named else None,
            tz="UTC" if definition.kind == "cron" else None, **definition.options()))
        self.tasks[tid] = ThreadTask(key, tid, definition)

    @precondition(lambda self: bool(self.session.waiting_gates()))
    @rule(index=st.integers(0, 100))
    def release(self, index: int) -> None:
        """One execution in progress returns."""
        gates = self.waiting_gates()
        self.step(lambda: self.session.open_gates([gates[index % len(gates)]]))

    @precondition(lambda self: bool(self.session.waiting_gates()))
    @rule()
    def release_all(self) -> None:
        """Every execution in progress returns, one after the other (two
        returning at once race, legitimately, for what runs next: the test
        would not be repeatable)."""
        self.release_one_by_one()

    def release_one_by_one(self) -> None:
        while self.session.waiting_gates():
            self.step(lambda: self.session.open_gates(self.waiting_gates()[:1]))

    @rule(seconds=st.sampled_from([0.5, 1, 2, 5, 10, 30]))
    def advance_time(self, seconds: float) -> None:
        self.step(lambda: advance(self.clock, self.sleeper, seconds, self.settle))

    @rule(seconds=st.sampled_from([3, 10, 60]))
    def stall(self, seconds: float) -> None:
        self.step(lambda: self.clock.set_time(self.clock.t + seconds))

    def _control(self, index: int, call: Callable[[str], Any]) -> Optional[ThreadTask]:
        """A control call: KeyError exactly when the task is not scheduled."""
        task = self.pick(index)
        if task is None:
            return None
        scheduled = task.tid in self.sched.task

        def real() -> Optional[BaseException]:
            try:
                call(task.tid)
            except KeyError as exc:
                return exc
            return None
        error = self.step(real)
        if scheduled and error is not None:
            raise Violation(f"{call.__name__}({task.tid!r}) of a scheduled task raised {error!r}")
        if not scheduled and error is None:
            raise Violation(f"{call.__name__}({task.tid!r}) of a task that is not scheduled "
                            "did not raise KeyError")
        return task if scheduled else None

    @rule(index=st.integers(0, 100))
    def cancel(self, index: int) -> None:
        task = self._control(index, self.sched.cancel)
        if task is not None:
            task.canceled = True

    @rule(index=st.integers(0, 100), change=THREAD_MODIFICATIONS)
    def modify(self, index: int, change: Tuple[str, Any]) -> None:
        """modify() of a task, perhaps while one of its runs is in progress."""
        field, value = change
        task = self.pick(index)
        if task is None:
            return
        if not enabled("modify_waiting") and task.definition.one_shot:
            return

        def call(tid: str) -> None:
            if field == "fail_on":
                self.sched.modify(tid, args=(task.key, value))
            else:
                self.sched.modify(tid, **{field: value})
        call.__name__ = "modify"
        if self._control(index, call) is not None:
            task.definition = relabel(task.definition, **{field: value})

    @rule(index=st.integers(0, 100))
    def run_now(self, index: int) -> None:
        task = self.pick(index)
        if task is not None and task.definition.one_shot and not enabled("run_now_one_shot"):
            return
        asked = self._control(index, self.sched.run_now)
        if asked is not None:
            asked.manual_asked += 1

    @precondition(lambda self: enabled("pause"))
    @rule(index=st.integers(0, 100), pause=st.booleans())
    def pause_or_resume_task(self, index: int, pause: bool) -> None:
        self._control(index, self.sched.pause if pause else self.sched.resume)

    @precondition(lambda self: enabled("pause"))
    @rule(pause=st.booleans())
    def pause_or_resume_all(self, pause: bool) -> None:
        self.step(self.sched.pause if pause else self.sched.resume)

    @precondition(lambda self: enabled("restart"))
    @rule(down=st.sampled_from([0, 5, 60]))
    def restart(self, down: float) -> None:
        """shutdown(wait=True) while runs are in progress (they are let
        finish), then a new scheduler on the same store."""
        if not enabled("restart_retry") and self._retry_may_be_pending():
            return
        self.shutdown_scheduler(timeout=None)
        self.clock.set_time(self.clock.t + down)
        self.step(self.start_scheduler)

    @precondition(lambda self: enabled("restart") and enabled("shutdown_timeout")
                  and bool(self.session.waiting_gates()))
    @rule()
    def restart_after_shutdown_timeout(self) -> None:
        """shutdown(wait=True, timeout=0.2) while runs are in progress and
        never return: it returns after the timeout (at most timeout seconds,
        then running tasks are interrupted)."""
        if not enabled("restart_retry") and self._retry_may_be_pending():
            return
        self.shutdown_scheduler(timeout=0.2)
        self.step(self.start_scheduler)

    def check_written_while_shutdown_waits(self, at_gates: List[Any],
                                           done: threading.Event) -> None:
        """While shutdown(wait=True) waits for two runs, the first to end is
        in the store before the second ends (a service manager's SIGKILL
        after its stop timeout must not lose it)."""
        first = at_gates[0]
        gate = self.session.gate_of(first)
        deadline = time.monotonic() + 5
        while not (gate.opened.is_set() and first.run.done):
            self.session.open_gates([gate])
            if time.monotonic() > deadline or done.is_set():
                return
            time.sleep(0.001)
        reader = open_store(f"sqlite:///{self.store_path}", read_only=True)
        try:
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline:
                rows = reader.runs(first.task_id)
                if any(row["attempt"] == first.attempt and row["status"] != int(S.RUNNING)
                       and abs(row["scheduled"] - first.scheduled) < 1e-3 for row in rows):
                    return
                time.sleep(0.01)
        finally:
            reader.close()
        self.session.open_gates()
        done.wait(10)
        raise Violation(f"{_show(first)} ended while shutdown(wait=True) waited for "
                        f"another run, but its record was not in the store 2 s later")

    def _retry_may_be_pending(self) -> bool:
        return any(e.failed for e, _ in self.executions) or any(
            t.definition.timeout for t in self.tasks.values())

    def shutdown_scheduler(self, timeout: Optional[float]) -> None:
        """shutdown(wait=True[, timeout]) in a thread of its own; without a
        timeout the runs in progress are let finish meanwhile."""
        sched = self.sched
        self.sleeper.release()
        done = threading.Event()
        failure: List[BaseException] = []
        at_gates = [gate.execution for gate in self.session.waiting_gates()]

        def stop() -> None:
            try:
                sched.shutdown(wait=True, timeout=timeout)
            except BaseException as exc:  # noqa: B902 - reported below
                failure.append(exc)
            finally:
                done.set()
        threading.Thread(target=stop, name="model-shutdown", daemon=True).start()
        if timeout is None and len(at_gates) >= 2 and enabled("shutdown_writes"):
            self.check_written_while_shutdown_waits(at_gates, done)
        if timeout is not None:
            returned = done.wait(timeout + SHUTDOWN_PATIENCE)
            stopped_at = self.clock.now()
            self.interrupted.update((id(execution), stopped_at) for execution in at_gates)
            if not returned:
                self.session.open_gates()
                done.wait(10)
                raise Violation(f"shutdown(wait=True, timeout={timeout}) did not return "
                                f"within {timeout + SHUTDOWN_PATIENCE} s: it waits for "
                                f"{len(at_gates)} thread task(s) still running")
        deadline = time.monotonic() + 20
        while not done.wait(0.01):  # runs in progress finish; none may start
            self.session.open_gates()
            if time.monotonic() > deadline:
                self.broken = True
                raise SchedulerHang(f"shutdown(wait=True) did not return\n{stacks()}")
        fresh = self.session.log[self.seen:]
        self.seen = len(self.session.log)
        self.executions.extend((execution, 0.0) for execution in fresh)
        started_late = [e for e in fresh if e not in at_gates]
        if started_late:
            raise Violation(f"runs started after shutdown() was called: "
                            f"{[_show(e) for e in started_late]}")
        self.session.open_gates()
        if failure:
            raise failure[0]

    # -- invariants ----------------------------------------------------------------

    @invariant()
    def every_future_resolves_exactly_once(self) -> None:
        check_futures(self.session)

    @invariant()
    def no_slot_or_retry_runs_twice(self) -> None:
        check_unique(self.executions)

    @invariant()
    def internal_collections_keep_no_finished_run(self) -> None:
        check_collections(self.sched)

    @invariant()
    def no_internal_failure_is_logged(self) -> None:
        if self.errors.lines:
            raise Violation(f"the scheduler logged: {self.errors.lines[0]}")
        if self.session.problems:
            raise Violation(self.session.problems[0])

    @invariant()
    def every_finished_execution_is_recorded_with_its_outcome(self) -> None:
        """A run that executed and returned reads as what it did: COMPLETED
        or ERROR, TIMEOUT if it was let run past its timeout, INTERRUPTED
        if a shutdown's timeout came first; it has its times."""
        for execution, _ in self.executions:
            gate = self.session.gate_of(execution)
            if gate is None or not gate.opened.is_set():
                continue  # still in progress
            want = expected_status(execution, gate, self.interrupted.get(id(execution)))
            run = execution.run
            if run.status is S.CANCELED and not enabled("shutdown_outcome"):
                continue
            if run.status is not want:
                raise Violation(f"{_show(execution)} ran and "
                                f"{'failed' if execution.failed else 'returned'} at "
                                f"{gate.released_at - BASE:+.3f}, but its run reads "
                                f"{run.status.label} (expected {want.label})")
            if run.started is None or run.finished is None or (
                    run["timestamp"] is None and enabled("timestamp")):
                raise Violation(f"{_show(execution)} ran, but its run has "
                                f"timestamp={run['timestamp']}, started={run.started}, "
                                f"finished={run.finished}")

    @invariant()
    def slots_taken_are_the_runs_in_progress(self) -> None:
        """Each execution waiting at its gate holds a worker slot and counts
        as running; nothing else does."""
        going = len(self.session.waiting_gates())
        if running_count(self.sched) != going:
            raise Violation(f"{running_count(self.sched)} run(s) count as running, "
                            f"{going} are")
        for lane, (free, capacity) in free_slots(self.sched).items():
            if lane == "pull" and capacity is not None and free != capacity - going:
                raise Violation(f"{free} of {capacity} worker slots free with {going} "
                                "run(s) in progress")

    @invariant()
    def statuses_fit_what_is_going(self) -> None:
        """A task reads Running only while a run of it is in progress; a
        one-shot is scheduled exactly while it may still run (README: a
        finished one-shot leaves ``sched.task``)."""
        going = {gate.execution.task_id for gate in self.session.waiting_gates()}
        for tid, task in self.tasks.items():
            try:
                status = self.sched.get_status(tid)
            except KeyError:
                continue
            if status is S.RUNNING and tid not in going:
                raise Violation(f"task {tid!r} reads Running with no run in progress")
            if not task.definition.one_shot:
                continue
            scheduled = tid in self.sched.task
            if scheduled and tid not in going and (status is S.MISSED
                                                   or self.regular_runs_over(task)):
                raise Violation(f"one-shot {tid!r} ({task.key}) reads {status.label} and "
                                "its run is over, yet it is still in sched.task")
            if status in (S.SUSPENDED, S.RUNNING) and not scheduled:
                raise Violation(f"one-shot {tid!r} ({task.key}) reads {status.label} "
                                "but left sched.task")

    def regular_runs_over(self, task: ThreadTask) -> bool:
        """The one-shot's scheduled run executed, and its last attempt
        returned with nothing more owed (no retry left or needed)."""
        mine = [e for e, _ in self.executions if e.label == task.key]
        regular = {e.run_number for e in mine if e.attempt == 1 and not e.manual}
        runs = [e for e in mine if e.run_number in regular]
        if not runs:
            return False
        if task.manual_asked > sum(1 for e in mine if e.manual and e.attempt == 1):
            return False  # (README: a one-shot stays while a manual run is owed, held by a pause)
        if any(self.may_be_retried(e, task) for e in mine if e.run_number not in regular):
            return False  # (README: a manual run's retry keeps a one-shot scheduled)
        last = max(runs, key=lambda e: e.attempt)
        gate = self.session.gate_of(last)
        if gate is None or not gate.opened.is_set():
            return False
        return not self.may_be_retried(last, task)

    def may_be_retried(self, execution: Any, task: ThreadTask) -> bool:
        """The execution failed (or may yet) with a retry left."""
        gate = self.session.gate_of(execution)
        if gate is None or not gate.opened.is_set():
            return execution.attempt <= task.definition.retries_allowed()
        failed = expected_status(execution, gate, self.interrupted.get(id(execution))) \
            is not S.COMPLETED
        return failed and execution.attempt <= task.definition.retries_allowed()

    @invariant()
    def a_coalescing_task_does_not_pile_up_runs(self) -> None:
        """README: with coalesce (the default), several runs of a recurring
        task that could not run on time become one; so a coalescing task
        never starts two of its regular runs at one instant."""
        if not enabled("pileup"):
            return
        starts: Dict[Tuple[str, float], Any] = {}
        for execution, _ in self.executions:
            task = self.tasks.get(execution.task_id)
            if task is None or task.definition.one_shot or not task.definition.coalescing \
                    or execution.manual or execution.attempt > 1 or task.key != execution.label:
                continue
            key = (execution.label, execution.at)
            if key in starts:
                raise Violation(f"runs piled up: {_show(starts[key])} and "
                                f"{_show(execution)} started at one instant")
            starts[key] = execution

    # -- the end --------------------------------------------------------------------

    def teardown(self) -> None:
        logging.getLogger("pysched_lightning").removeHandler(self.errors)
        failing = sys.exc_info()[1] is not None  # a step failed: only clean up
        try:
            if failing or self.broken:
                self.session.open_gates()
                self.sleeper.release()
                self.sched.shutdown(wait=False)
            else:
                self.drain()
                self.check_every_one_shot_ran_with_its_retries()
                self.shutdown_scheduler(timeout=None)
                check_futures(self.session)
                for watch in self.session.all_watches():
                    if not watch.run.done:
                        raise Violation(f"after shutdown {watch.run!r} is not over")
        finally:
            self.session.open_gates()
            model_tasks.SESSION = None
            if not self.broken:
                shutil.rmtree(self.dir, ignore_errors=True)

    def drain(self) -> None:
        """Stop the recurring tasks, resume everything, and let time and
        runs go until no one-shot has a run to come."""
        for tid in list(self.sched.task):
            task = self.tasks.get(tid)
            if task is not None and not task.definition.one_shot:
                self.step(lambda: self.sched.cancel(tid))
                task.canceled = True
        self.step(self.sched.resume)
        for tid in list(self.sched.task):
            self.step(lambda: self.sched.resume(tid))
        for _ in range(60):
            if not self.session.waiting_gates() and not any(
                    self.tasks[tid].definition.one_shot for tid in self.sched.task
                    if tid in self.tasks):
                return
            self.release_one_by_one()
            self.step(lambda: advance(self.clock, self.sleeper, 30, self.settle))
        raise Violation(f"one-shots never finished: {sorted(self.sched.task)}")

    def skipped_for_a_manual_run(self, tid: str, key: str) -> bool:
        """README (docs/tasks.md): a regular run that meets a running one is
        MISSED ("previous run still going"); a run_now() run, or its retry
        (one interrupted by a shutdown is owed at the next start), was going
        when the one-shot's occurrence came due."""
        manual = any(e.label == key and e.manual for e, _ in self.executions)
        return manual and any(run.status is S.MISSED and run.reason == "previous run still going"
                              for run in self.sched.runs(tid))

    def check_every_one_shot_ran_with_its_retries(self) -> None:
        """Every one-shot that was not canceled ran its first attempt exactly
        once (or was skipped by its misfire grace time), and every attempt
        that failed or timed out, within its retries, was followed by the next
        (unless the misfire grace time let it be skipped)."""
        for tid, task in self.tasks.items():
            definition = task.definition
            if not definition.one_shot or task.canceled:
                continue
            runs = [e for e, _ in self.executions if e.label == task.key and not e.manual]
            # (a manual run's retries are runs of their own: by run number)
            regular = {e.run_number for e in runs if e.attempt == 1}
            runs = [e for e in runs if e.run_number in regular or not regular]
            attempts = sorted(e.attempt for e in runs)
            if 1 not in attempts:
                status = self.sched.get_status(tid)
                if status is S.MISSED and definition.grace is not None:
                    continue
                if self.skipped_for_a_manual_run(tid, task.key):
                    continue
                raise Violation(f"one-shot {tid!r} ({task.key}) never ran; it reads "
                                f"{status.label}")
            for execution in runs:
                gate = self.session.gate_of(execution)
                failed = expected_status(execution, gate, self.interrupted.get(id(execution))) \
                    is not S.COMPLETED
                owed = failed and execution.attempt <= definition.retries_allowed()
                nxt = attempts.count(execution.attempt + 1)
                # A retry that waited for a worker past the misfire grace time
                # may be skipped (README: a run that would start later than
                # that after its due time is skipped).
                skippable = definition.grace is not None and nxt == 0
                if owed and nxt != 1 and not skippable:
                    raise Violation(f"{_show(execution)} failed with "
                                    f"{definition.retries_allowed()} retries; attempt "
                                    f"{execution.attempt + 1} ran {nxt} times")


def expected_status(execution: Any, gate: Any, interrupted: Optional[float]) -> Any:
    """What a run that executed must read once it returned: TIMEOUT once
    its own timeout passed, INTERRUPTED when a shutdown's timeout (at
    *interrupted*) came first, else what it did."""
    run = execution.run
    timeout = run.timeout
    if interrupted is not None and (timeout is None or execution.at + timeout > interrupted):
        return S.INTERRUPTED
    if interrupted is not None or (timeout is not None and gate is not None
                                   and gate.released_at is not None
                                   and gate.released_at - execution.at >= timeout):
        return S.TIMEOUT
    return S.ERROR if execution.failed else S.COMPLETED


# -- invariants shared by both machines ----------------------------------------------

def check_futures(session: Session) -> None:
    """Every future resolves exactly once, with the run's outcome, and only
    once the run is over."""
    for watch in session.all_watches():
        run = watch.run
        if watch.calls > 1:
            raise Violation(f"the future of {run!r} was resolved {watch.calls} times")
        if run.done and watch.calls != 1:
            raise Violation(f"{run!r} is over but its future was not resolved")
        if watch.calls and not run.done:
            raise Violation(f"the future of {run!r} resolved while the run is "
                            f"{run.status.label}")
        expected = ("result" if run.status is S.COMPLETED else "cancelled"
                    if run.status in (S.CANCELED, S.MISSED) else "exception")
        if watch.calls and watch.outcome != expected:
            raise Violation(f"the future of {run!r} holds a {watch.outcome}, "
                            f"the run is {run.status.label}")


def check_unique(executions: List[Tuple[Any, Any]]) -> None:
    """No slot runs twice (a step of the wall clock back repeats wall times,
    and a new trigger may run the instant of a slot the old one ran: the
    shift and the trigger are part of a slot's name, with each execution),
    no retry runs twice, and the run numbers of one definition are never
    reused."""
    seen: Dict[Tuple[Any, ...], Any] = {}
    numbers: Dict[Tuple[str, int, int], Any] = {}
    for execution, shift in executions:
        if execution.manual or execution.attempt > 1:  # by run number (below)
            key: Tuple[Any, ...] = (execution.label, execution.manual,
                                    execution.run_number, execution.attempt)
        else:  # a slot: its due time
            key = (execution.label, round(execution.scheduled, 3), shift)
        if key in seen:
            raise Violation(f"ran twice: {_show(seen[key])} and {_show(execution)}")
        seen[key] = execution
        number = (execution.label, execution.run_number, execution.attempt)
        if number in numbers:
            raise Violation(f"run number reused: {_show(numbers[number])} and "
                            f"{_show(execution)} are both run {execution.run_number} "
                            f"attempt {execution.attempt}")
        numbers[number] = execution


def check_collections(sched: Any) -> None:
    """Internal collections keep no run that is over and stay bounded."""
    retained = retained_finished_runs(sched)
    if retained:
        name, runs = next(iter(retained.items()))
        raise Violation(f"{len(runs)} run(s) that are over still held in {name}: "
                        f"{runs[:3]}")
    for name, (size, live) in heap_sizes(sched).items():
        if size - live > live + HEAP_SLACK:
            raise Violation(f"heap {name} holds {size - live} dead entries, {live} live")
    problems = timetable_consistency(sched)
    if problems:
        raise Violation(problems[0])


def _show(execution: Any) -> str:
    from model_reference import _show as show
    return show(execution)


def _expect_equal(actual: Any, expected: Any, what: str) -> None:
    if actual != expected:
        raise Violation(f"{what}: {actual!r}, expected {expected!r}")


def _one_shot_kind(kind: str) -> str:
    return kind if kind in ("once", "cronnum") else "once"


def _quarter(definition: Definition) -> float:
    """A dependent's delay: a quarter second off the half-second grid."""
    if definition.kind in ("once", "cronnum"):
        base = float(definition.interval)
        return base if (base * 4) % 2 == 1 else base + 0.25
    return 1.25


# -- the tests ------------------------------------------------------------------------

BOUNDED = settings(max_examples=200, stateful_step_count=40, deadline=None,
                   # no "explain" phase: it re-runs a failure hundreds of times
                   phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
                   derandomize=True, database=None, print_blob=True,
                   report_multiple_bugs=bool(os.environ.get("PSL_MODEL_ALL_BUGS")),
                   suppress_health_check=list(HealthCheck))


@pytest.mark.timeout(900)  # a failure's shrinking may take minutes
def test_the_scheduler_follows_the_model_bounded() -> None:
    """A fixed set of random call sequences (the same every run)."""
    run_state_machine_as_test(SchedulerMachine, settings=BOUNDED)


THREADED = settings(BOUNDED, max_examples=40, stateful_step_count=30)


#: The grace shutdown() gives interrupted runs after its timeout, shortened:
#: a gated run never returns within it, so its length changes only how long
#: each ``restart_after_shutdown_timeout`` takes (2.2 s instead of 0.5 s).
SHORT_INTERRUPT_GRACE = 0.3


@pytest.mark.timeout(900)
def test_runs_in_progress_on_a_thread_pool_keep_the_invariants_bounded(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The threaded variant, a fixed set of call sequences."""
    monkeypatch.setattr(psl_shutdown, "INTERRUPT_GRACE_SECONDS", SHORT_INTERRUPT_GRACE)
    run_state_machine_as_test(ThreadedMachine, settings=THREADED)


@pytest.mark.torture
@pytest.mark.timeout(0)
def test_both_machines_keep_the_model_and_the_invariants_for_as_long_as_asked(
        torture_seconds: float, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fresh random call sequences, for each machine in turn, until
    ``--torture-seconds`` are up; a failure prints its ``@reproduce_failure``
    blob, so it can be replayed as it was found."""
    monkeypatch.setattr(psl_shutdown, "INTERRUPT_GRACE_SECONDS", SHORT_INTERRUPT_GRACE)
    deadline = time.monotonic() + torture_seconds
    rounds = 0
    while time.monotonic() < deadline:
        rounds += 1
        run_state_machine_as_test(SchedulerMachine, settings=settings(
            BOUNDED, derandomize=False, max_examples=100, stateful_step_count=60))
        run_state_machine_as_test(ThreadedMachine, settings=settings(
            THREADED, derandomize=False, max_examples=50, stateful_step_count=40))
    assert rounds
