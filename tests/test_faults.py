"""Fault injection: interrupts at every line of the API's calls, and user
code that raises, blocks or re-enters the scheduler from every callback.

1. A Ctrl-C lands in the main thread between any two statements. For each
   public call (delay in its forms, cancel, modify, pause, resume, run_now,
   shutdown) the trace events inside the package are recorded once; then,
   for each index k, the scenario is run again from scratch and
   ``KeyboardInterrupt`` (then ``SystemExit``) is raised at the k-th event
   (``faults.Tracer``). Afterwards the call took effect completely or not at
   all, no task stays RUNNING, a later task still runs, every worker slot is
   free once nothing runs, ``shutdown(wait=True)`` returns, ``stopped`` reads
   True and no thread is left.
2. Any ``BaseException`` raised by user code the scheduler calls from its own
   threads: listeners of each event kind, a future's done-callback, a run
   log's ``write()``, a timeout callback, a logging handler, a result's
   ``__repr__``, the clocks; and, with ``threading.settrace``, at each line
   of the paths that call them (events, journal, logging, timeout callbacks).
   Afterwards the run has a final status, later tasks run, shutdown returns.
3. User code that raises, blocks or calls back into the scheduler (every
   public call, shutdown included) from each of those callbacks and from the
   task itself: nothing deadlocks, and a blocked callback does not stall
   the other workers (another task completes meanwhile).

4. Random sequences of public calls, about half of them interrupted at a
   random point, then the same checks (every one-shot the scheduler knows
   has run once or was canceled).

The bounded runs (about 25 s once nothing fails) sample the injection
points evenly, every point of delay() and cancel(); ``-m torture`` goes
through every point of every scenario and every callback with every
action, then random ones, each test for ``--torture-seconds``. A failure
names the scenario, the exception and the point (k, file:line);
``reproduce(scenario, exception, k)`` runs that one injection again. On a
slow machine, ``PSL_FAULTS_DEADLINE=10`` gives every check more time.
"""
from __future__ import annotations

import gc
import logging
import random
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import pytest

import invariants
import pysched_lightning as psl
from faults import (DEADLINE, FINAL, INJECTED, Failure, Hang, InjectedKeyboardInterrupt,
                    InjectedSystemExit, Point, Tracer, World, await_condition, calling_hook,
                    fail, failure_report, hooked_result, note_hang, sample, thread_dump,
                    traced_here, traced_new_threads, until_gate, until_go, until_timed_out,
                    within)

S = psl.TaskStatus
K = psl.EventKind

EXCEPTIONS = {"KeyboardInterrupt": InjectedKeyboardInterrupt,
              "SystemExit": InjectedSystemExit}

#: How many failing points one bounded test reports before it stops (each
#: may cost a deadline).
MAX_FAILURES = 3


# == 1. interrupts in the main thread ==============================================


@dataclass
class Scenario:
    """A call made in the main thread, what precedes it and what must hold after.

    ``verify(world, interrupted)`` checks that the call took effect
    completely or not at all, and that what it did runs as it should.
    ``samples``: how many points the bounded run injects KeyboardInterrupt
    at, evenly spread (None: every point); SystemExit gets a third as many
    (at most 6: it takes the same paths), between them.
    """

    name: str
    call: Callable[[World], Any]
    verify: Callable[[World, bool], None]
    prepare: Callable[[World], None] = lambda world: None
    store: bool = False
    samples: Optional[int] = 12
    #: False for shutdown: nothing is to run after it.
    executes_after: bool = True


class Watchdog:
    """Breaks the main thread out of a call that hangs (SIGINT), keeping a
    dump of every thread's stack for the failure message."""

    def __init__(self, seconds: float) -> None:
        self.dump: Optional[str] = None
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.name = "fault-watchdog"
        self._timer.daemon = True
        self._main = threading.main_thread().ident

    def _fire(self) -> None:
        self.dump = thread_dump()
        note_hang()
        signal.pthread_kill(self._main, signal.SIGINT)

    def __enter__(self) -> "Watchdog":
        self._timer.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._timer.cancel()


def traced_call(call: Callable[[], Any], tracer: Tracer) -> Tuple[bool, Any]:
    """``call()`` in this (the main) thread, traced by *tracer*: (True, None)
    when it raised the injected exception, else (False, its result). A
    call that hangs is broken out of (``Hang``, with every thread's stack)."""
    # No garbage collection while traced: a finalizer of an earlier world
    # (a store closed when its scheduler is collected) would run here.
    gc.collect()
    gc.disable()
    try:
        with Watchdog(DEADLINE) as dog:
            try:
                with traced_here(tracer):
                    return False, call()
            except INJECTED:
                return True, None
            except KeyboardInterrupt:
                if dog.dump is None:
                    raise
                raise Hang(f"the call itself hung after the injection\n{dog.dump}")
    finally:
        sys.settrace(None)
        gc.enable()


def interrupt_call(scenario: Scenario, world: World, k: Optional[int],
                   exc_type: Any) -> Tracer:
    """Make the scenario's call in this (the main) thread, traced; with *k*,
    *exc_type* is raised at the k-th point. ``world.interrupted`` says
    whether the call raised it."""
    tracer = world.tracer = Tracer(k, exc_type)
    world.interrupted, world.result = False, None
    try:
        world.interrupted, world.result = traced_call(lambda: scenario.call(world), tracer)
    except Hang:
        raise
    except Exception as exc:
        if tracer.injected is None:
            raise
        raise AssertionError(f"the interrupted call raised {type(exc).__name__}: "
                             f"{exc}, not the interrupt") from exc
    if tracer.injected is not None and not world.interrupted:
        raise AssertionError("the interrupt was swallowed: the call returned as if "
                             "nothing happened (a Ctrl-C must reach the caller)")
    return tracer


def points_of(scenario: Scenario, tmp_path: Any) -> List[Point]:
    """The points of the scenario's call, recorded on an uninterrupted run."""
    world = World(tmp_path, store=scenario.store)
    try:
        scenario.prepare(world)
        tracer = interrupt_call(scenario, world, None, None)
        return tracer.points
    finally:
        world.close()


def inject(scenario: Scenario, k: int, exc_type: Any, tmp_path: Any) -> Optional[Failure]:
    """One run from scratch with an injection at *k*; a description of what
    failed, or None."""
    world = World(tmp_path, store=scenario.store)
    world.tracer = None
    try:
        scenario.prepare(world)
        tracer = interrupt_call(scenario, world, k, exc_type)
        if tracer.injected is None:
            return None  # the call took a shorter path this time: nothing injected
        scenario.verify(world, world.interrupted)
        if scenario.executes_after:
            world.check_idle_invariants("after the call")
            world.check_still_executes()
            world.check_idle_invariants("after later tasks ran")
        world.shutdown_and_check("at the end")
        after_shutdown = getattr(world, "after_shutdown", None)
        if after_shutdown is not None:
            after_shutdown()
        return None
    except Exception as exc:  # a failed check, or an API call that raised after the fault
        point = world.tracer.injected if world.tracer is not None else None
        return Failure(scenario.name, exc_type.__bases__[0].__name__, point,
                       failure_message(exc))
    finally:
        world.close()


def failure_message(exc: BaseException) -> str:
    """A failed check's message; for an error raised by the scheduler, that
    the call raised it, and where."""
    if isinstance(exc, AssertionError):
        return f"{type(exc).__name__}: {exc}"
    where = traceback.extract_tb(exc.__traceback__)
    inside = [frame for frame in where if "pysched_lightning" in frame.filename]
    last = inside[-1] if inside else (where[-1] if where else None)
    at = f" (raised at {last.filename.split('pysched_lightning/')[-1]}:{last.lineno})" \
        if last is not None else ""
    return f"a call to the scheduler after the fault raised {type(exc).__name__}: {exc}{at}"


def sweep(scenario: Scenario, exc_type: Any, indices: Sequence[int], tmp_path: Any,
          max_failures: Optional[int] = MAX_FAILURES,
          budget_end: Optional[float] = None) -> List[Failure]:
    failures = []
    for k in indices:
        if budget_end is not None and time.monotonic() > budget_end:
            break
        failure = inject(scenario, k, exc_type, tmp_path)
        if failure is not None:
            failures.append(failure)
            if max_failures is not None and len(failures) >= max_failures:
                break
    return failures


# -- the scenarios ---------------------------------------------------------------


def _accepted_once(world: World, label: str, due: float, task_id: str) -> None:
    """The task *label*, accepted, runs exactly once (after its due time) and
    completes; or its run was canceled by the interrupt itself (the run
    reads CANCELED with the interrupt as its error: a final, visible
    outcome the caller can see)."""
    if due:
        world.advance(due + 1)
    world.check_still_executes("settle")  # the dispatcher fired what was due before
    world.wait_idle("after the task's due time")
    status = world.status(task_id)
    if world.count(label) == 0 and status is S.CANCELED and _canceled_by_interrupt(world,
                                                                                 task_id):
        return
    assert world.count(label) == 1, (f"an accepted one-shot ran {world.count(label)} "
                                     f"times, not once (it reads {status!r})")
    assert status is S.COMPLETED, f"the accepted one-shot ran, and reads {status!r}"


def _canceled_by_interrupt(world: World, task_id: str) -> bool:
    run = world.sched.result.get(task_id)
    return run is not None and run.status is S.CANCELED and \
        any(name in (run.error or "") for name in EXCEPTIONS)


def _never_runs(world: World, label: str, due: float) -> None:
    if due:
        world.advance(due + 1)
    world.check_still_executes("settle")
    world.wait_idle("after the task's due time")
    assert world.count(label) == 0, (f"delay() was interrupted and the scheduler does "
                                     f"not know the task, yet it ran {world.count(label)} "
                                     f"time(s)")


def delay_scenario(title: str, *, due: float = 0, task_id: Optional[str] = None,
                   store: bool = False, samples: Optional[int] = 12,
                   **options: Any) -> Scenario:
    """delay() of a one-shot: afterwards the scheduler knows it and it runs
    once, or it knows nothing of it and it never runs; with a store, it is
    stored exactly when it is known."""

    def prepare(world: World) -> None:
        world.sched.delay("recur", 7200, 5, world.job("background"))
        world.before = set(world.tasks())
        world.stored_before = set(world.stored()) if store else set()

    def call(world: World) -> Any:
        return world.sched.delay("once", due, 1, world.job("target"), task_id=task_id,
                                 **options)

    def verify(world: World, interrupted: bool) -> None:
        new = set(world.tasks()) - world.before
        if not interrupted:
            assert new == {world.result}, f"delay() returned {world.result!r}; new ids {new}"
        assert len(new) <= 1, f"one delay() made several tasks: {new}"
        if new:
            (world.accepted,) = new
            _accepted_once(world, "target", due, world.accepted)
        else:
            world.accepted = None
            _never_runs(world, "target", due)
        if store:
            world.after_shutdown = lambda: _stored_as_known(world)

    return Scenario(title, call, verify, prepare, store=store, samples=samples)


def _stored_as_known(world: World) -> None:
    """After shutdown: the store holds the task exactly when the scheduler
    accepted it (else a restart would run a task delay() did not add, or
    lose one it did)."""
    stored = set(world.stored()) - world.stored_before - world.probes
    expected = {world.accepted} if world.accepted is not None else set()
    assert stored == expected, (f"the store holds {sorted(stored)} after delay(), the "
                                f"scheduler accepted {sorted(expected)}")


def replace_scenario(store: bool = False) -> Scenario:
    """delay() under an existing task_id with a changed definition: the old
    one is kept whole, or the new one replaces it whole."""

    def prepare(world: World) -> None:
        world.sched.delay("recur", 3600, 1, world.job("old"), task_id="T")

    def call(world: World) -> Any:
        return world.sched.delay("once", 0, 1, world.job("new"), task_id="T")

    def verify(world: World, interrupted: bool) -> None:
        world.check_still_executes("settle")
        world.wait_idle("after delay()")
        info = world.tasks().get("T")
        assert info is not None, "the task id is unknown after delay() under it"
        replaced = info["trigger"] == "once"
        if not interrupted:
            assert replaced and world.count("new") == 1, (
                "delay() returned, but the new definition never ran")
        if replaced and not (world.count("new") == 0 and info["status"] is S.CANCELED
                             and _canceled_by_interrupt(world, "T")):
            assert world.count("new") == 1 and info["status"] is S.COMPLETED, (
                f"the new definition replaced the old one, ran {world.count('new')} times "
                f"and reads {info['status']!r}")
        if not replaced:
            assert world.count("new") == 0, "the new definition ran, but T is the old one"
        world.advance(3601)
        world.check_still_executes("after the old due time")
        world.wait_idle("after the old due time")
        assert world.count("old") == (0 if replaced else 1), (
            f"replaced={replaced}, and the old definition ran {world.count('old')} times")
        if store:
            world.after_shutdown = lambda: _stored_trigger(world, "T",
                                                           "once" if replaced else "recur")

    return Scenario("delay() replacing a task_id" + (" with a store" if store else ""),
                    call, verify, prepare, store=store)


def _stored_trigger(world: World, task_id: str, trigger: str) -> None:
    record = world.stored().get(task_id)
    assert record is not None and record.trigger == trigger, (
        f"the scheduler ran {task_id!r} as a {trigger!r} task, the store holds {record}")


def cancel_scenario(name: str, *, queued: bool = False, store: bool = False,
                    samples: Optional[int] = 12) -> Scenario:
    """cancel(): afterwards the task is canceled whole (not scheduled,
    CANCELED, its queued run dropped, never runs) or not at all (scheduled,
    runs at its time)."""

    def prepare(world: World) -> None:
        if queued:  # both workers busy: the target's run waits in the ready heap
            for label in ("b1", "b2"):
                world.sched.delay("once", 0, 1, world.blocker(label))
            await_condition(lambda: world.count("b1") + world.count("b2") == 2,
                            "the blockers never started")
            world.target = world.sched.delay("once", 0, 1, world.job("target"))
            world.queued_future = world.sched.result[world.target].future
        else:
            world.target = world.sched.delay("recur", 10, 1, world.job("target"))

    def call(world: World) -> Any:
        world.sched.cancel(world.target)

    def verify(world: World, interrupted: bool) -> None:
        status = world.status(world.target)
        scheduled = world.target in world.sched.task
        canceled = status is S.CANCELED
        if not interrupted:
            assert canceled and not scheduled, (
                f"cancel() returned; status {status!r}, still scheduled: {scheduled}")
        assert canceled != scheduled, (f"half canceled: status {status!r}, still in "
                                       f"sched.task: {scheduled}")
        world.release.set()
        world.advance(11)
        world.check_still_executes("settle")
        world.wait_idle("after the blockers and the due time")
        if canceled:
            assert world.count("target") == 0, "a canceled task ran"
            if queued:
                assert world.queued_future.cancelled(), (
                    f"the canceled task's queued run was dropped, but its future reads "
                    f"{world.queued_future!r}")
        else:
            assert world.count("target") == 1, (
                f"a task cancel() did not cancel ran {world.count('target')} times")
        if store:
            world.after_shutdown = lambda: _stored_unless_canceled(world, canceled)

    return Scenario(name, call, verify, prepare, store=store, samples=samples)


def _stored_unless_canceled(world: World, canceled: bool) -> None:
    stored = world.target in world.stored()
    assert stored != canceled, (f"canceled={canceled}, yet the store "
                                f"{'still holds' if stored else 'lost'} the task")


def modify_scenario(store: bool = False) -> Scenario:
    """modify(): the new definition in full or the old one in full, in
    memory and in the store alike; the task keeps running on schedule."""

    def prepare(world: World) -> None:
        world.target = world.sched.delay("recur", 10, 1, world.job("target"))

    def call(world: World) -> Any:
        world.sched.modify(world.target, priority=3, retries=2, timeout=60.0)

    def verify(world: World, interrupted: bool) -> None:
        task = world.sched.task[world.target]
        new = task.priority == 3
        if not interrupted:
            assert new, "modify() returned, but the priority is the old one"
        assert (task.options.retries, task.options.timeout) == ((2, 60.0) if new else (0, None)), (
            f"half modified: priority {task.priority}, options {task.options}")
        world.advance(10)
        world.check_still_executes("settle")
        world.wait_idle("after the due time")
        assert world.count("target") == 1, (
            f"the modified task ran {world.count('target')} times at its due time")
        if store:
            world.after_shutdown = lambda: _stored_priority(world, task.priority)

    return Scenario("modify()" + (" with a store" if store else ""), call, verify, prepare,
                    store=store)


def _stored_priority(world: World, priority: int) -> None:
    record = world.stored()[world.target]
    assert record.priority == priority, (f"the scheduler runs the task with priority "
                                         f"{priority}, the store holds {record.priority}")


def pause_scenario() -> Scenario:
    """pause(task): paused (does not run at its time, runs after resume) or not."""

    def prepare(world: World) -> None:
        world.target = world.sched.delay("recur", 10, 1, world.job("target"))

    def call(world: World) -> Any:
        world.sched.pause(world.target)

    def verify(world: World, interrupted: bool) -> None:
        paused = world.tasks()[world.target]["paused"]
        if not interrupted:
            assert paused, "pause() returned, but the task does not read paused"
        world.advance(10)
        world.check_still_executes("settle")
        world.wait_idle("after the due time")
        assert world.count("target") == (0 if paused else 1), (
            f"paused={paused}, and the task ran {world.count('target')} times when due")
        world.api("resume(task)", world.sched.resume, world.target)
        world.advance(10)
        world.check_still_executes("after resume")
        world.wait_idle("after resume")
        assert world.count("target") >= 1, "the resumed task never ran"

    return Scenario("pause(task)", call, verify, prepare)


def resume_scenario() -> Scenario:
    """resume(task) of a paused one-shot that came due: it runs once, now or
    after a second resume()."""

    def prepare(world: World) -> None:
        world.target = world.sched.delay("once", 10, 1, world.job("target"))
        world.sched.pause(world.target)
        world.advance(20)
        world.check_still_executes("while paused")  # the dispatcher has fired it: parked

    def call(world: World) -> Any:
        world.sched.resume(world.target)

    def verify(world: World, interrupted: bool) -> None:
        world.check_still_executes("settle")
        world.wait_idle("after resume")
        if not interrupted:
            assert world.count("target") == 1, "resume() returned, but the one-shot never ran"
        if world.target in world.sched.task:
            world.api("resume(task) again", world.sched.resume, world.target)
        world.check_still_executes("after a second resume")
        world.wait_idle("after a second resume")
        assert world.count("target") == 1, (
            f"a resumed one-shot ran {world.count('target')} times")

    return Scenario("resume(task)", call, verify, prepare)


def pause_all_scenario() -> Scenario:
    """pause() of the whole scheduler, then resume(): the tasks run."""

    def prepare(world: World) -> None:
        world.target = world.sched.delay("recur", 10, 1, world.job("target"))

    def call(world: World) -> Any:
        world.sched.pause()

    def verify(world: World, interrupted: bool) -> None:
        world.api("resume()", world.sched.resume)
        world.advance(10)
        world.check_still_executes("after resume")
        world.wait_idle("after resume")
        assert world.count("target") == 1

    return Scenario("pause()", call, verify, prepare)


def resume_all_scenario() -> Scenario:
    """resume() of the whole scheduler holding a run due now: it runs once."""

    def prepare(world: World) -> None:
        world.sched.pause()
        world.target = world.sched.delay("once", 0, 1, world.job("target"))

    def call(world: World) -> Any:
        world.sched.resume()

    def verify(world: World, interrupted: bool) -> None:
        if not interrupted:
            world.check_still_executes("settle")
            assert world.count("target") == 1, "resume() returned; the held run never ran"
        world.api("resume() again", world.sched.resume)
        world.check_still_executes("after a second resume")
        world.wait_idle("after a second resume")
        assert world.count("target") == 1, (
            f"a held one-shot ran {world.count('target')} times after resume")

    return Scenario("resume()", call, verify, prepare)


def run_now_scenario() -> Scenario:
    """run_now(): one extra run, or none; the schedule goes on."""

    def prepare(world: World) -> None:
        world.target = world.sched.delay("recur", 3600, 1, world.job("target"))

    def call(world: World) -> Any:
        world.sched.run_now(world.target)

    def verify(world: World, interrupted: bool) -> None:
        world.check_still_executes("settle")
        world.wait_idle("after run_now()")
        extra = world.count("target")
        if not interrupted:
            assert extra == 1, f"run_now() returned; the task ran {extra} times"
        assert extra in (0, 1), f"one run_now() ran the task {extra} times"
        world.advance(3600)
        world.check_still_executes("after the due time")
        world.wait_idle("after the due time")
        assert world.count("target") == extra + 1, "the regular run did not follow"

    return Scenario("run_now()", call, verify, prepare)


def shutdown_scenario(wait: bool) -> Scenario:
    """shutdown() with two runs going, one waiting for a worker and one
    pending: a second shutdown(wait=True) returns, every run ends final,
    no thread is left, delay() is refused."""

    def prepare(world: World) -> None:
        for label in ("b1", "b2"):
            world.sched.delay("once", 0, 1, world.blocker(label))
        await_condition(lambda: world.count("b1") + world.count("b2") == 2,
                        "the blockers never started")
        world.queued = world.sched.delay("once", 0, 1, world.job("queued"))
        world.queued_future = world.sched.result[world.queued].future
        world.sched.delay("recur", 10, 1, world.job("pending"))
        world.clock.stop_waiting()  # the dispatcher sees the shutdown at once

    def call(world: World) -> Any:
        world.sched.shutdown(wait=wait)

    def verify(world: World, interrupted: bool) -> None:
        world.shutdown_and_check("after the interrupted shutdown()")
        # It ran (a worker took it before the shutdown), or it was canceled
        # with its future; the task itself may stay pending (a restart with
        # a store runs it).
        ran, future = world.count("queued"), world.queued_future
        assert (ran == 1 and future.done() and not future.cancelled()) or \
            (ran == 0 and future.cancelled()), (
                f"the run waiting for a worker at shutdown ran {ran} times; its future "
                f"reads {future!r}")
        with pytest.raises(RuntimeError):
            world.sched.delay("once", 0, 1, world.job("late"))

    return Scenario(f"shutdown(wait={wait})", call, verify, prepare, executes_after=False)


def main_thread_scenarios() -> List[Scenario]:
    """Every scenario; delay() and cancel() get every point in the bounded run."""
    return [
        delay_scenario("delay() due now", samples=None),
        delay_scenario("delay() due later", due=3600),
        delay_scenario("delay() with options", name="named", timeout=60, retries=1,
                       retry_delay=5, misfire_grace_time=100, max_instances=1),
        delay_scenario("delay() with task_id", task_id="T"),
        delay_scenario("delay() with a store, due now", store=True),
        delay_scenario("delay() with a store, due later", due=3600, store=True),
        delay_scenario("delay() with a store and task_id", task_id="T", store=True),
        replace_scenario(),
        cancel_scenario("cancel() of a pending task", samples=None),
        cancel_scenario("cancel() of a task whose run waits for a worker", queued=True,
                        samples=None),
        cancel_scenario("cancel() with a store", store=True),
        modify_scenario(),
        modify_scenario(store=True),
        pause_scenario(),
        resume_scenario(),
        pause_all_scenario(),
        resume_all_scenario(),
        run_now_scenario(),
        shutdown_scenario(True),
        shutdown_scenario(False),
    ]


def bounded_points(count: int, samples: Optional[int], exc_name: str) -> List[int]:
    """The points the bounded run injects at (see Scenario.samples)."""
    wanted = count if samples is None else min(count, samples)
    if exc_name != "KeyboardInterrupt":
        wanted = max(1, min(wanted // 3, 6))
    stride = max(1, -(-count // wanted))  # ceil
    return sample(count, stride, 0 if exc_name == "KeyboardInterrupt" else stride // 2)


def slug(text: str) -> str:
    """A test id that ``-k`` accepts: 'delay() due now' -> 'delay_due_now'."""
    kept = "".join(c if c.isalnum() else " " for c in text.replace("()", ""))
    return "_".join(kept.split())


SCENARIOS = {slug(scenario.name): scenario for scenario in main_thread_scenarios()}


@pytest.mark.parametrize("exc_name", sorted(EXCEPTIONS))
@pytest.mark.parametrize("scenario_name", list(SCENARIOS))
def test_an_interrupt_at_any_line_of_a_call_leaves_the_scheduler_whole(
        scenario_name, exc_name, tmp_path):
    """The bounded sweep: ``samples`` points spread evenly (KeyboardInterrupt
    from the first, SystemExit from half a stride on, so the two cover
    different points)."""
    scenario = SCENARIOS[scenario_name]
    points = points_of(scenario, tmp_path)
    assert points, "the call never entered the package"
    failures = sweep(scenario, EXCEPTIONS[exc_name],
                     bounded_points(len(points), scenario.samples, exc_name), tmp_path)
    if failures:
        pytest.fail(failure_report(failures), pytrace=False)


@pytest.mark.parametrize("exc_name", sorted(EXCEPTIONS))
def test_an_interrupt_at_any_line_of_adding_a_task_due_now_with_a_store_leaves_it_whole(
        exc_name, tmp_path):
    """Every point of ``add_checked`` and ``reserve_start`` (the bounded
    sweep samples a few): an interrupt between the reservation of a worker
    slot and the add left the slot reserved for good (the scheduler never
    idle), and one between the store's commit and the add left a task
    stored that the scheduler had not accepted."""
    scenario = next(scenario for scenario in SCENARIOS.values()
                    if scenario.name == "delay() with a store, due now")
    points = [point.index for point in points_of(scenario, tmp_path)
              if point.function in ("add_checked", "reserve_start")]
    assert points, "the call never reserved a slot"
    failures = sweep(scenario, EXCEPTIONS[exc_name], points, tmp_path)
    if failures:
        pytest.fail(failure_report(failures), pytrace=False)


@pytest.mark.parametrize("exc_name", sorted(EXCEPTIONS))
def test_an_interrupt_just_after_modify_stored_the_definition_still_puts_it_in_place(
        exc_name, tmp_path):
    """Every point of ``replace_checked`` (the bounded sweep samples a few):
    an interrupt between the store's commit of the new definition and the
    call that put it in place left the scheduler running the old one (its
    priority) while the store held the new one (found by the torture)."""
    scenario = next(scenario for scenario in SCENARIOS.values()
                    if scenario.name == "modify() with a store")
    points = [point.index for point in points_of(scenario, tmp_path)
              if point.function == "replace_checked"]
    assert points, "modify() never replaced a stored task"
    failures = sweep(scenario, EXCEPTIONS[exc_name], points, tmp_path)
    if failures:
        pytest.fail(failure_report(failures), pytrace=False)


# == 2 and 3. user code called back by the scheduler ===================================


@dataclass
class Site:
    """A place where the scheduler calls user code (the world's hook).

    ``trigger(world)`` arms the hook (``world.arm()``) once what precedes
    is done, makes the scheduler call it (in a thread of its own: the hook
    may block it) and returns the id of the task whose run it concerns, if
    any. ``install(world)`` puts the hook in place first; ``world`` holds
    the World's options.
    """

    name: str
    trigger: Callable[[World], Optional[str]]
    install: Callable[[World], None] = lambda world: None
    world: Dict[str, Any] = field(default_factory=dict)
    #: False when the site is a shutdown: nothing runs after it.
    executes_after: bool = True
    #: False when, while the hook blocks, other tasks are not to run (the
    #: scheduler is paused, or shutting down).
    others_run_meanwhile: bool = True
    #: Whether blocking in it or calling back into the scheduler from it is
    #: part of the contract.
    reentrant: bool = True


def _listen(kind: Any) -> Callable[[World], None]:
    def install(world: World) -> None:
        world.sched.add_listener(world.hook, kinds=[kind])
    return install


def _gated(kind: Any = None, **options: Any) -> Callable[[World], str]:
    """Trigger: the target (and a follower) queued behind a 'gate' task that
    holds a worker until ``world.gate`` opens: when the worker ends the gate
    it takes the target at once (with one worker, the target's run is in
    its hands while the callbacks of the gate's end run). With more
    workers the gate is open from the start."""
    def trigger(world: World) -> str:
        try:
            world.sched.delay("once", 0, 1, world.task(until_gate, "gate"))
            await_condition(lambda: world.count("gate") == 1, "the gate task never started")
            world.arm()
            fn = world.job("target") if kind is None else world.task(kind, "target")
            tid = world.sched.delay("once", 0, 1, fn, **options)
            world.sched.delay("once", 0, 1, world.job("follower"))
        finally:
            world.gate.set()
        return tid
    return trigger


def _one_shot(kind: Any = None, **options: Any) -> Callable[[World], str]:
    """Trigger: a one-shot due now (of a task function of ``faults``)."""
    def trigger(world: World) -> str:
        world.arm()
        fn = world.job("target") if kind is None else world.task(kind, "target")
        return world.sched.delay("once", 0, 1, fn, **options)
    return trigger


def _timing_out(register: bool = False) -> Callable[[World], str]:
    """Trigger: a one-shot with a timeout that runs until it times out;
    the test advances the clock past its deadline."""
    def trigger(world: World) -> str:
        world.arm()
        tid = world.sched.delay("once", 0, 1,
                                world.task(until_timed_out, "target", register),
                                timeout=30)
        await_condition(lambda: world.count("target") == 1, "the timing-out task never started")
        world.advance(31)
        return tid
    return trigger


def _missed(world: World) -> str:
    world.arm()
    tid = world.sched.delay("once", 10, 1, world.job("target"), misfire_grace_time=1)
    world.advance(20)
    return tid


def _done_callback(world: World) -> str:
    """Trigger: the target's future gets the hook as its done-callback while
    the target waits for ``go``, itself behind the gate (see _gated)."""
    try:
        world.sched.delay("once", 0, 1, world.task(until_gate, "gate"))
        await_condition(lambda: world.count("gate") == 1, "the gate task never started")
        world.arm()
        tid = world.sched.delay("once", 0, 1, world.task(until_go, "target"))
        world.sched.delay("once", 0, 1, world.job("follower"))
        world.sched.result[tid].future.add_done_callback(world.hook)
    finally:
        world.go.set()
        world.gate.set()
    return tid


def _on_target(call: Callable[[World, str], Any]) -> Callable[[World], str]:
    """Trigger: a control call on a pending task 'target'."""
    def trigger(world: World) -> str:
        world.arm()
        call(world, world.target)
        return world.target
    return trigger


def _add_target(world: World) -> None:
    world.target = world.sched.delay("recur", 3600, 1, world.job("target"))


def _started(world: World) -> Optional[str]:
    world.arm()
    world.sched.start()
    return None


def _shut_down(world: World) -> Optional[str]:
    world.arm()
    world.shut_down = True
    world.sched.shutdown(wait=True)
    return None


def _paused_all(world: World) -> Optional[str]:
    world.arm()
    try:
        world.sched.pause()
    finally:
        world.sched.resume()
    return None


def _resumed_all(world: World) -> Optional[str]:
    world.sched.pause()
    world.arm()
    world.sched.resume()
    return None


def _hooked_handler(world: World) -> None:
    class Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            world.hook(record)
    handler = Handler(level=logging.DEBUG)
    logger = logging.getLogger("pysched_lightning")
    logger.addHandler(handler)
    world.cleanups.append(lambda: logger.removeHandler(handler))


def _sites() -> List[Site]:
    listener_triggers = {
        K.ADDED: Site("", _one_shot()),
        K.SUBMITTED: Site("", _gated()),
        K.STARTED: Site("", _gated()),
        K.COMPLETED: Site("", _gated()),
        K.FAILED: Site("", _gated(fail)),
        K.TIMEOUT: Site("", _timing_out()),
        K.RETRY: Site("", _gated(fail, retries=1, retry_delay=0.5)),
        K.MISSED: Site("", _missed),
        K.CANCELED: Site("", _on_target(lambda w, t: w.sched.cancel(t))),
        K.REMOVED: Site("", _gated()),
        K.PAUSED: Site("", _on_target(lambda w, t: w.sched.pause(t))),
        K.RESUMED: Site("", _on_target(lambda w, t: (w.sched.pause(t), w.sched.resume(t)))),
        K.MODIFIED: Site("", _on_target(lambda w, t: w.sched.modify(t, priority=2))),
        K.SCHEDULER_STARTED: Site("", _started, world={"start": False}),
        K.SCHEDULER_SHUTDOWN: Site("", _shut_down, executes_after=False,
                                   others_run_meanwhile=False),
        K.SCHEDULER_PAUSED: Site("", _paused_all, others_run_meanwhile=False),
        K.SCHEDULER_RESUMED: Site("", _resumed_all),
    }
    sites = [Site("the task itself", _gated(calling_hook))]
    for kind, site in listener_triggers.items():
        install = _listen(kind)
        if kind in (K.CANCELED, K.PAUSED, K.RESUMED, K.MODIFIED):
            install = _chain(_add_target, install)
        sites.append(Site(f"a listener of {kind.name}", site.trigger, install,
                          world=site.world, executes_after=site.executes_after,
                          others_run_meanwhile=site.others_run_meanwhile))
    sites += [
        Site("a done-callback of a run's future", _done_callback),
        Site("a run log's write()", _one_shot(), world={"run_log": True}),
        Site("a timeout callback", _timing_out(register=True)),
        Site("a logging handler", _gated(fail), _hooked_handler),
        Site("a result's repr (with a store)", _gated(hooked_result),
             world={"store": True}),
        # The clocks are read inside every transition, under the scheduler's
        # lock: one that blocks or calls back into the scheduler stalls it by
        # design; only raising from them is tried.
        Site("timefunc", _one_shot(), world={"clock": "timefunc"}, reentrant=False),
        Site("wallfunc", _one_shot(), world={"clock": "wallfunc"}, reentrant=False),
    ]
    return sites


def _chain(*steps: Callable[[World], None]) -> Callable[[World], None]:
    def install(world: World) -> None:
        for step in steps:
            step(world)
    return install


SITES = {slug(site.name): site for site in _sites()}


# -- what the user code does ---------------------------------------------------------

REENTRIES: Dict[str, Callable[[World], Any]] = {
    "delay": lambda w: w.sched.delay("once", 0, 1, w.job("reentered")),
    "cancel": lambda w: w.sched.cancel(w.other),
    "modify": lambda w: w.sched.modify(w.other, priority=2),
    "pause": lambda w: w.sched.pause(w.other),
    "resume": lambda w: w.sched.resume(w.other),
    "run_now": lambda w: w.sched.run_now(w.other),
    "get_status": lambda w: w.sched.get_status(w.other),
    "runs": lambda w: w.sched.runs(w.other),
    "get_result": lambda w: w.sched.get_result(w.finished, timeout=DEADLINE),
    "shutdown(wait=False)": lambda w: w.sched.shutdown(wait=False),
    "shutdown(wait=True)": lambda w: w.sched.shutdown(wait=True),
}


def raising(exc_type: Any) -> Callable[[World], Callable[[], Any]]:
    def make(world: World) -> Callable[[], Any]:
        def action() -> None:
            raise exc_type(f"{exc_type.__name__} raised by user code")
        return action
    return make


def blocking(world: World) -> Callable[[], Any]:
    return lambda: world.unblock.wait(4 * DEADLINE)


def reentering(name: str) -> Callable[[World], Callable[[], Any]]:
    def make(world: World) -> Callable[[], Any]:
        def action() -> Any:
            if name.startswith("shutdown"):
                world.shut_down = True
            try:
                return REENTRIES[name](world)
            except Exception as exc:  # an ordinary error (KeyError...) is the caller's
                return exc
        return action
    return make


# -- running a site -------------------------------------------------------------------


def _prepare_reentry_targets(world: World) -> None:
    """A pending task ('other') and a finished one ('finished') for the
    calls a callback makes back into the scheduler."""
    world.other = world.sched.delay("recur", 3600, 5, world.job("other"))
    world.finished = world.sched.delay("once", 0, 5, world.job("finished"))
    if not world.sched.stopped:
        await_condition(lambda: world.status(world.finished) is S.COMPLETED,
                        "a task run before the test never completed")
        if world.run_log is not None:
            await_condition(lambda: len(world.run_log.records) >= 1,
                            "the run log never got the first run")
        world.wait_idle("before the test")


def at_site(site: Site, action_name: str, make_action: Callable[[World], Callable[[], Any]],
            tmp_path: Any, workers: int = 2) -> Optional[Failure]:
    """Make the scheduler call user code at *site*, doing *make_action*'s
    action; then check what must hold. A description of what failed, or None.
    With one worker, a run the worker holds when the hook raises has no
    other worker to hide its fate."""
    world = World(tmp_path, workers=workers, **site.world)
    if workers > 1:
        world.gate.set()  # the gate holds no worker: the others stay free
    try:
        _prepare_reentry_targets(world)
        site.install(world)
        action = make_action(world)
        world.arm = lambda: world.hook.arm(action)  # the trigger arms it when it is time
        driver = _drive(site, world)
        await_condition(world.hook.entered.is_set, f"the scheduler never called {site.name}")
        if action_name == "block" and site.others_run_meanwhile:
            _check_others_go_on(world, site)
        world.unblock.set()
        await_condition(world.hook.done.is_set,
                        f"{site.name} ({action_name}) never returned: a deadlock?")
        driver.join(DEADLINE)
        if driver.is_alive():
            note_hang([driver])
            raise Hang(f"the call that made the scheduler call {site.name} ({action_name}) "
                       f"never returned\n{thread_dump()}")
        _check_trigger_outcome(world, site, driver)
        world.clock.poke()
        await_condition(lambda: _unfinished(world) == {},
                        lambda: f"runs never ended after {site.name} ({action_name}): "
                        f"{_unfinished(world)}")
        if site.executes_after and not world.shut_down:
            world.check_idle_invariants(f"after {site.name} ({action_name})")
            world.check_still_executes()
            world.check_idle_invariants("after later tasks ran")
        world.shutdown_and_check(f"after {site.name} ({action_name})")
        return None
    except Exception as exc:
        return Failure(site.name, action_name, None, failure_message(exc))
    finally:
        world.close()


class _Driver(threading.Thread):
    """Runs the site's trigger (the hook may block it, or raise into it)."""

    def __init__(self, site: Site, world: World) -> None:
        super().__init__(name="fault-driver", daemon=True)
        self.site, self.world = site, world
        self.task_id: Optional[str] = None
        self.error: Optional[BaseException] = None

    def run(self) -> None:
        try:
            self.task_id = self.site.trigger(self.world)
        except BaseException as exc:  # judged by _check_trigger_outcome
            self.error = exc


def _drive(site: Site, world: World) -> _Driver:
    driver = _Driver(site, world)
    driver.start()
    return driver


def _check_trigger_outcome(world: World, site: Site, driver: _Driver) -> None:
    """The call that made the scheduler call the hook may only have raised
    what the hook raised (when the hook ran in its thread)."""
    error = driver.error
    if error is None:
        return
    if world.shut_down and isinstance(error, RuntimeError):
        return  # the hook shut the scheduler down: the trigger's next delay() is refused
    hook_raised = world.hook.outcome is not None and world.hook.outcome[0] == "raised" \
        and world.hook.outcome[1] is error
    if not hook_raised:
        raise AssertionError(f"the call that made the scheduler call {site.name} raised "
                             f"{type(error).__name__}: {error}")


def _unfinished(world: World) -> Dict[str, Any]:
    """Latest runs without a final status (runs of a recurring task due
    later have none yet)."""
    if world.shut_down and not world.sched.stopped:
        return {}
    return {tid: run.status for tid, run in list(world.sched.result.items())
            if not run.done}


def _check_others_go_on(world: World, site: Site) -> None:
    """While the hook blocks, unrelated tasks added now run to their end: one
    with an id of its own, one named with ``task_id`` (with a store, the
    named one waits for the store's pending writes to be committed)."""
    try:
        tid = world.api("delay() while a callback blocks", world.sched.delay, "once", 0, 1,
                        world.job("unrelated"))
        named = world.api("delay(task_id=...) while a callback blocks", world.sched.delay,
                          "once", 0, 1, world.job("unrelated-named"), task_id="unrelated")
        await_condition(lambda: world.status(tid) is S.COMPLETED
                        and world.status(named) is S.COMPLETED,
                        "the unrelated tasks did not complete")
    except AssertionError as exc:
        raise AssertionError(f"while {site.name} blocks, another task's run does not "
                             f"complete: {str(exc).splitlines()[0]}\n{thread_dump()}")


# -- the tests of sites -------------------------------------------------------------------

BASE_EXCEPTIONS = {"KeyboardInterrupt": KeyboardInterrupt, "SystemExit": SystemExit}
REENTRANT_SITES = [name for name, site in SITES.items() if site.reentrant]


@pytest.mark.parametrize("exc_name", sorted(BASE_EXCEPTIONS))
@pytest.mark.parametrize("site_name", list(SITES))
def test_a_base_exception_raised_by_user_code_leaves_the_scheduler_running(
        site_name, exc_name, tmp_path):
    failure = at_site(SITES[site_name], f"raises {exc_name}",
                      raising(BASE_EXCEPTIONS[exc_name]), tmp_path, workers=1)
    if failure is not None:
        pytest.fail(str(failure), pytrace=False)


@pytest.mark.parametrize("site_name", list(SITES))
def test_an_error_raised_by_user_code_leaves_the_scheduler_running(site_name, tmp_path):
    failure = at_site(SITES[site_name], "raises ValueError", raising(ValueError), tmp_path,
                      workers=1)
    if failure is not None:
        pytest.fail(str(failure), pytrace=False)


@pytest.mark.parametrize("site_name", REENTRANT_SITES)
def test_user_code_that_blocks_does_not_stall_the_other_workers(site_name, tmp_path):
    failure = at_site(SITES[site_name], "block", blocking, tmp_path)
    if failure is not None:
        pytest.fail(str(failure), pytrace=False)


@pytest.mark.parametrize("site_name", REENTRANT_SITES)
def test_user_code_may_call_back_into_the_scheduler(site_name, tmp_path):
    failures = []
    for call in REENTRIES:
        failure = at_site(SITES[site_name], f"calls {call}", reentering(call), tmp_path)
        if failure is not None:
            failures.append(failure)
            if len(failures) >= MAX_FAILURES:
                break
    if failures:
        pytest.fail(failure_report(failures), pytrace=False)


# -- 2b. interrupts at each line of the callback paths (threading.settrace) ----------

#: The paths from the scheduler's threads into user code (see invariants).
CALLBACK_PATHS = invariants.CALLBACK_PATHS


def _scheduler_thread(thread: threading.Thread) -> bool:
    return thread.name.startswith("pysched-")


def callback_paths_workload(world: World) -> List[str]:
    """Work that takes every callback path in the scheduler's threads: a
    run whose future has a done-callback, a failing run (logged), a run
    that times out (a timeout callback), all recorded in the store and the
    run log and heard by a listener; one after the other."""
    world.sched.add_listener(lambda event: None)
    handler = logging.NullHandler()
    logging.getLogger("pysched_lightning").addHandler(handler)
    world.cleanups.append(lambda: logging.getLogger("pysched_lightning").removeHandler(handler))
    first = world.sched.delay("once", 0, 1, world.task(until_go, "first"))
    world.sched.result[first].future.add_done_callback(lambda future: None)
    world.go.set()
    failing = world.sched.delay("once", 0, 1, world.task(fail, "failing"))
    late = world.sched.delay("once", 0, 1,
                             world.task(until_timed_out, "late", True), timeout=30)
    await_condition(lambda: world.count("late") == 1, "the timing-out task never started")
    world.advance(31)
    return [first, failing, late]


def interrupt_callback_paths(k: Optional[int], exc_type: Any, tmp_path: Any,
                             tracer_out: Optional[List[Tracer]] = None) -> Optional[Failure]:
    """The workload with *exc_type* raised at the k-th line of the callback
    paths in the scheduler's threads (None: only record them)."""
    tracer = Tracer(k, exc_type, functions=CALLBACK_PATHS, thread=_scheduler_thread)
    if tracer_out is not None:
        tracer_out.append(tracer)
    exc_name = exc_type.__bases__[0].__name__ if exc_type is not None else "-"
    with traced_new_threads(tracer):  # the pool's threads start with the first runs
        world = World(tmp_path, store=True, run_log=True, workers=1)
        try:
            tids = within(4 * DEADLINE, "the workload", callback_paths_workload, world)
        except Exception as exc:
            world.close()
            return Failure("the callback paths", exc_name, tracer.injected,
                           failure_message(exc))
    try:
        world.clock.poke()
        await_condition(lambda: all(world.status(tid) in FINAL for tid in tids),
                        lambda: f"runs never ended: "
                        f"{ {tid: world.status(tid) for tid in tids} }")
        tracer.active = False
        world.check_idle_invariants("after the workload")
        world.check_still_executes()
        world.check_idle_invariants("after later tasks ran")
        world.shutdown_and_check("at the end")
        return None
    except Exception as exc:
        return Failure("the callback paths", exc_name, tracer.injected, failure_message(exc))
    finally:
        tracer.active = False
        world.close()


CALLBACK_PATHS_STRIDE = 8


def callback_path_points(tmp_path: Any) -> int:
    tracers: List[Tracer] = []
    failure = interrupt_callback_paths(None, None, tmp_path, tracers)
    assert failure is None, f"the workload fails without any fault: {failure}"
    return tracers[0].count


@pytest.mark.parametrize("exc_name", sorted(EXCEPTIONS))
def test_an_exception_at_any_line_of_the_callback_paths_leaves_the_scheduler_running(
        exc_name, tmp_path):
    """threading.settrace: the scheduler's own threads (dispatcher, workers)
    get the exception at every CALLBACK_PATHS_STRIDE-th line of the paths
    that call user code."""
    count = callback_path_points(tmp_path)
    assert count, "the workload never took a callback path"
    offset = 0 if exc_name == "KeyboardInterrupt" else CALLBACK_PATHS_STRIDE // 2
    failures = []
    for k in sample(count, CALLBACK_PATHS_STRIDE, offset):
        failure = interrupt_callback_paths(k, EXCEPTIONS[exc_name], tmp_path)
        if failure is not None:
            failures.append(failure)
            if len(failures) >= MAX_FAILURES:
                break
    if failures:
        pytest.fail(failure_report(failures), pytrace=False)


# == the long runs ===================================================================


def _every_site_action() -> List[Any]:
    """Every (site, action) pair: raising each exception, blocking, and each
    call back into the scheduler where that is part of the contract."""
    pairs = []
    for name, site in SITES.items():
        for exc_name, exc in {**BASE_EXCEPTIONS, "ValueError": ValueError}.items():
            pairs.append((name, f"raises {exc_name}", raising(exc), 1))
        if site.reentrant:
            pairs.append((name, "block", blocking, 2))
            for call in REENTRIES:
                pairs.append((name, f"calls {call}", reentering(call), 2))
    return pairs


class Budget:
    """The torture's time budget (``--torture-seconds``): how long to go on,
    not a check."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> bool:
        return time.monotonic() < self.end


@pytest.mark.torture
@pytest.mark.timeout(0)  # bounded by the budget (each check has its own deadline)
def test_interrupts_at_every_point_then_at_random_points(torture_seconds, tmp_path):
    """Every point of every main-thread scenario and of the callback paths,
    with both exceptions; then random (scenario, point, exception) draws,
    until the budget is used. The seed of the draws is in the report."""
    budget = Budget(torture_seconds)
    failures: List[Failure] = []
    counts = {}
    for scenario in SCENARIOS.values():
        counts[scenario.name] = len(points_of(scenario, tmp_path))
        for exc in EXCEPTIONS.values():
            failures += sweep(scenario, exc, range(counts[scenario.name]), tmp_path,
                              max_failures=None, budget_end=budget.end)
    paths = callback_path_points(tmp_path)
    for exc in EXCEPTIONS.values():
        for k in range(paths):
            if not budget.left():
                break
            failure = interrupt_callback_paths(k, exc, tmp_path)
            if failure is not None:
                failures.append(failure)
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    draws = 0
    while budget.left():
        draws += 1
        exc = rng.choice(list(EXCEPTIONS.values()))
        if rng.random() < 0.8:
            scenario = rng.choice(list(SCENARIOS.values()))
            failure = inject(scenario, rng.randrange(counts[scenario.name]), exc, tmp_path)
        else:
            failure = interrupt_callback_paths(rng.randrange(paths), exc, tmp_path)
        if failure is not None:
            failures.append(failure)
    if failures:
        pytest.fail(f"random draws: seed {seed}, {draws} draws\n"
                    + failure_report(failures, limit=10), pytrace=False)


@pytest.mark.torture
@pytest.mark.timeout(0)  # bounded by the budget (each check has its own deadline)
def test_every_callback_raising_blocking_or_calling_back(torture_seconds, tmp_path):
    """Every site with every action (each listener kind, each call back into
    the scheduler), then random pairs until the budget is used."""
    budget = Budget(torture_seconds)
    pairs = _every_site_action()
    failures = []
    for name, action_name, make, workers in pairs:
        if not budget.left():
            break
        failure = at_site(SITES[name], action_name, make, tmp_path, workers)
        if failure is not None:
            failures.append(failure)
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    while budget.left():
        name, action_name, make, workers = rng.choice(pairs)
        failure = at_site(SITES[name], action_name, make, tmp_path, workers)
        if failure is not None:
            failures.append(failure)
    if failures:
        pytest.fail(f"random pairs: seed {seed}\n" + failure_report(failures, limit=10),
                    pytrace=False)


# -- random sequences of interrupted calls ----------------------------------------------


def _random_operation(world: World, rng: random.Random,
                      serial: int) -> Tuple[str, Callable[[], Any]]:
    """A public call on the world's scheduler, chosen by *rng*. One-shots
    note their label in ``world.once_labels`` (and the id they are named
    with in ``world.named``); run_now() notes its task id in
    ``world.run_now_ids``: its extra run may run whatever definition the id
    has by then."""
    sched = world.sched
    known = sorted(world.sched.task)
    target = rng.choice(known) if known else "nothing"
    label = f"r{serial}"

    def once(due: float, **options: Any) -> str:
        world.once_labels.add(label)
        world.named[label] = options.get("task_id")
        return sched.delay("once", due, rng.randint(1, 3), world.job(label), **options)

    def run_now() -> None:
        task = sched.task.get(target)
        if task is not None:
            world.once_labels.discard(task.fn.args[1])
        world.run_now_ids.add(target)
        sched.run_now(target)

    choices = [
        ("delay once now", lambda: once(0)),
        ("delay once later", lambda: once(rng.choice((5, 50)))),
        ("delay recur", lambda: sched.delay("recur", rng.choice((7, 30)), 1,
                                            world.job(label))),
        ("delay named", lambda: once(rng.choice((0, 5)), task_id=rng.choice(("A", "B")))),
        (f"cancel {target}", lambda: sched.cancel(target)),
        (f"modify {target}", lambda: sched.modify(target, priority=rng.randint(1, 3))),
        (f"pause {target}", lambda: sched.pause(target)),
        (f"resume {target}", lambda: sched.resume(target)),
        ("pause all", lambda: sched.pause()),
        ("resume all", lambda: sched.resume()),
        (f"run_now {target}", run_now),
    ]
    return rng.choice(choices)


def random_sequence(seed: int, tmp_path: Any, length: int = 8) -> Optional[str]:
    """*length* random calls in the main thread, about half of them
    interrupted at a random point; then the scheduler must still be whole:
    nothing RUNNING forever, every slot free, every one-shot it knows has
    run (or was canceled), none ran twice, later tasks run, shutdown
    returns. A description of what failed (with the calls made), or None."""
    rng = random.Random(seed)
    world = World(tmp_path, store=rng.random() < 0.3)
    world.once_labels, world.named, world.run_now_ids = set(), {}, set()
    log = []
    try:
        for serial in range(length):
            what, call = _random_operation(world, rng, serial)
            k = rng.randrange(400) if rng.random() < 0.5 else None
            exc = rng.choice(list(EXCEPTIONS.values()))
            tracer = Tracer(k, exc)
            try:
                interrupted, _ = traced_call(call, tracer)
                outcome = (f"interrupted: {exc.__bases__[0].__name__} at {tracer.injected}"
                           if interrupted else "returned")
            except (KeyError, ValueError, RuntimeError) as error:
                outcome = f"raised {type(error).__name__}"
            log.append(f"{what}: {outcome}")
            world.advance(rng.choice((0, 0, 6)))
        world.api("resume()", world.sched.resume)
        for task_id in list(world.sched.task):
            try:
                world.api("resume(task)", world.sched.resume, task_id)
            except KeyError:
                pass
        world.advance(100)
        world.check_still_executes("settle")
        world.check_idle_invariants("after the calls")
        for tid, info in world.tasks().items():
            if info["trigger"] == "once" and tid not in world.probes:
                assert info["status"] in (S.COMPLETED, S.CANCELED), (
                    f"the one-shot {tid!r}, known to the scheduler, reads {info['status']!r} "
                    f"after its time passed")
        twice = {label: world.count(label) for label in world.once_labels
                 if world.count(label) > 1 and world.named.get(label) not in world.run_now_ids}
        assert not twice, f"one-shots ran more than once: {twice}"
        world.check_still_executes()
        world.shutdown_and_check("at the end")
        return None
    except Exception as exc:
        return (f"seed {seed}: {failure_message(exc).splitlines()[0]}\n  calls: "
                + "\n         ".join(log))
    finally:
        world.close()


@pytest.mark.torture
@pytest.mark.timeout(0)  # bounded by the budget (each check has its own deadline)
def test_random_sequences_of_interrupted_calls(torture_seconds, tmp_path):
    budget = Budget(torture_seconds)
    first = random.randrange(1 << 32)
    failures = []
    seed = first
    while budget.left():
        failure = random_sequence(seed, tmp_path)
        if failure is not None:
            failures.append(failure)
        seed += 1
    if failures:
        pytest.fail(f"{len(failures)} of {seed - first} sequences failed (seeds from "
                    f"{first}):\n" + "\n\n".join(failures[:10]), pytrace=False)


def test_a_short_random_sequence_of_interrupted_calls_leaves_the_scheduler_whole(tmp_path):
    """The bounded version: a few fixed seeds."""
    failures = [failure for failure in (random_sequence(seed, tmp_path) for seed in range(6))
                if failure is not None]
    if failures:
        pytest.fail("\n\n".join(failures), pytrace=False)


def reproduce(scenario: str, exc_name: str, k: int, tmp_path: Any = None) -> Optional[str]:
    """One injection, as a failure report names it, for a debugging session:
    ``python -c "import sys; sys.path[:0] = ['tests']; import test_faults as t;
    print(t.reproduce('delay_due_now', 'KeyboardInterrupt', 68))"``."""
    import tempfile
    folder = tmp_path or tempfile.mkdtemp()
    failure = inject(SCENARIOS[scenario], k, EXCEPTIONS[exc_name], folder)
    return None if failure is None else str(failure)
