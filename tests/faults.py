"""Fault injection machinery for ``test_faults.py``.

- ``Tracer``: a ``sys.settrace`` driver. Run once, it records the line (and
  return) events inside the package; given an index k, it raises an
  exception at the k-th one: a Ctrl-C landing between two statements of the
  library, deterministically. ``sys.settrace`` traces the calling thread
  only; ``threading.settrace`` (``traced_new_threads``) traces the threads
  started afterwards: the scheduler's dispatcher and workers.
- ``ManualClock``: the scheduler's ``timefunc``/``delayfunc``; time moves when
  the test says so, so a task due in an hour is run on demand.
- ``within``/``await_condition``: every check has a deadline; a hang fails with
  a dump of every thread's stack, and the process is made able to exit even
  though the deadlocked threads never end.
- ``World``: a started scheduler on a manual clock with what a scenario needs
  (task functions that log their runs, blockers, a store in tmp_path), and
  the checks that follow every injection.
"""
from __future__ import annotations

import contextlib
import dis
import functools
import inspect
import itertools
import os
import re
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from typing import (Any, Callable, Dict, FrozenSet, Iterator, List, Optional, Sequence, Set,
                    Tuple)

import pysched_lightning as psl
from pysched_lightning.stores import open_store

import invariants

S = psl.TaskStatus

PACKAGE_DIR = os.path.dirname(os.path.abspath(psl.__file__)) + os.sep

#: Busy-wait loops whose number of turns depends on other threads holding a
#: lock: their lines are not counted, so an index names the same point in
#: the library whatever the other threads were doing.
UNCOUNTED = invariants.BUSY_WAIT_FUNCTIONS

#: Seconds a call or a condition gets before it counts as a hang. Everything
#: checked here settles in milliseconds; this is only the alarm (a slow
#: machine may raise it: PSL_FAULTS_DEADLINE=10).
DEADLINE = float(os.environ.get("PSL_FAULTS_DEADLINE", "3"))

#: The statuses a run ends with.
FINAL = frozenset({S.COMPLETED, S.ERROR, S.CANCELED, S.TIMEOUT, S.MISSED, S.INTERRUPTED})


class InjectedKeyboardInterrupt(KeyboardInterrupt):
    """A Ctrl-C raised by the tracer (a subclass, to tell it from a real one)."""


class InjectedSystemExit(SystemExit):
    """A ``sys.exit()`` raised by the tracer or by a user callback."""


INJECTED = (InjectedKeyboardInterrupt, InjectedSystemExit)


# -- the tracer -----------------------------------------------------------------


@dataclass(frozen=True)
class Point:
    """One counted trace event: where an injection lands."""

    index: int
    event: str
    path: str
    line: int
    function: str
    thread: str

    def __str__(self) -> str:
        return (f"k={self.index} ({self.event} event at pysched_lightning/{self.path}:"
                f"{self.line} in {self.function}(), thread {self.thread})")


def _range_exits(code: Any) -> FrozenSet[int]:
    """Offsets of *code* where execution leaves a ``try`` or ``with`` body
    on its normal path: the first instruction after the body, before its
    ``finally`` copy or its ``__exit__`` call.

    CPython (3.11+) reports a line event there (the ``with`` line again, the
    ``finally`` body's first line), but no asynchronous exception can land
    there: signals are checked after calls and at backward jumps, which are
    inside the body. An exception raised there would skip the ``__exit__``
    or ``finally`` that Python guarantees (a lock taken by ``with`` would
    stay held): a point no real Ctrl-C reaches, so it is not counted. The
    equivalent real point, the end of the body's last call, is its
    'return' event. The same holds for the entry of a ``with`` statement's
    handler, where an exception leaves its body: ``__exit__`` is called
    next. (Before 3.11 there is no exception table: no filter.)
    """
    exits = _RANGE_EXITS.get(code)
    if exits is None:
        exits = _RANGE_EXITS[code] = frozenset(_find_range_exits(code))
    return exits


def _find_range_exits(code: Any) -> Set[int]:
    parse = getattr(dis, "_parse_exception_table", None)
    if parse is None or not code.co_exceptiontable:
        return set()
    entries = parse(code)
    instructions = list(dis.get_instructions(code))
    following = {ins.offset: after.offset for ins, after in zip(instructions, instructions[1:])}
    nops = {ins.offset for ins in instructions if ins.opname == "NOP"}

    def handlers(offset: int) -> List[int]:
        """The handlers an exception raised at *offset* goes through: the
        innermost, then the one covering that handler's code, and so on."""
        chain: List[int] = []
        while True:
            entry = next((e for e in entries if e.start <= offset < e.end), None)
            if entry is None or entry.target in chain:
                return chain
            chain.append(entry.target)
            offset = entry.target

    found = set()
    for entry in entries:
        for ins in instructions:
            if not entry.start <= ins.offset < entry.end:
                continue
            for nxt in _successors(ins, following):
                # Left the body without its handler: the instructions from
                # here (through the NOPs of a line that only jumps) until
                # one its handler covers again.
                while nxt is not None and entry.target not in handlers(nxt):
                    found.add(nxt)
                    nxt = following.get(nxt) if nxt in nops else None
    # A 'with' body left by an exception: its handler calls __exit__ at once
    # (PUSH_EXC_INFO, WITH_EXCEPT_START). The line event at its entry is no
    # point a real interrupt reaches either; one raised there skips __exit__.
    opnames = {ins.offset: ins.opname for ins in instructions}
    for entry in entries:
        if opnames.get(entry.target) == "PUSH_EXC_INFO" \
                and opnames.get(following.get(entry.target, -1)) == "WITH_EXCEPT_START":
            found.add(entry.target)
    return found


_NO_FALL_THROUGH = frozenset({"JUMP_FORWARD", "JUMP_BACKWARD", "JUMP_BACKWARD_NO_INTERRUPT",
                              "JUMP_ABSOLUTE", "RETURN_VALUE", "RETURN_CONST", "RAISE_VARARGS",
                              "RERAISE"})


def _successors(ins: Any, following: Dict[int, int]) -> List[int]:
    """Where execution may go after *ins* (normal paths only)."""
    nexts = []
    if ins.opname not in _NO_FALL_THROUGH and ins.offset in following:
        nexts.append(following[ins.offset])
    if ins.opcode in dis.hasjrel or ins.opcode in dis.hasjabs:
        nexts.append(ins.argval)
    return nexts


_RANGE_EXITS: Dict[Any, FrozenSet[int]] = {}
_GENERATOR_FLAGS = inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR


class Tracer:
    """Counts trace events in the package's code; raises at the k-th.

    A 'line' event is the moment before a statement runs, a 'return' event
    the moment a function returns to its caller: raising there is an
    interrupt that lands between two statements, or just after a call.
    Not counted: the lines of busy waits (their count depends on other
    threads), the exits of ``with``/``try`` bodies (see ``_range_exits``),
    and a generator's returns (a yield; a close by the collector).

    Without *inject_at* it records every counted point (``points``). With
    it, it raises ``exc_type`` at that event and records it as ``injected``.
    *events*: which events count ('line', 'return'). *functions*: count only
    in these (file name, function name) pairs (the paths of one kind of
    work; the file's name without its folder). *thread*: count only in the
    threads it accepts. The threads traced share one count (a lock orders
    it).
    """

    def __init__(self, inject_at: Optional[int] = None, exc_type: Any = None, *,
                 events: Sequence[str] = ("line", "return"),
                 functions: Optional[Set[Tuple[str, str]]] = None,
                 thread: Optional[Callable[[threading.Thread], bool]] = None) -> None:
        self.inject_at = inject_at
        self.exc_type = exc_type
        self.events = frozenset(events)
        self.functions = functions
        self.thread = thread
        self.points: List[Point] = []
        self.injected: Optional[Point] = None
        self.count = 0
        #: Cleared to stop counting (the traced work is over).
        self.active = True
        self._lock = threading.Lock()

    def global_trace(self, frame: Any, event: str, arg: Any) -> Any:
        code = frame.f_code
        filename = code.co_filename
        if not filename.startswith(PACKAGE_DIR) or code.co_name in UNCOUNTED:
            return None
        if self.functions is not None and \
                (os.path.basename(filename), code.co_name) not in self.functions:
            return None
        if self.thread is not None and not self.thread(threading.current_thread()):
            return None
        return self.local_trace

    def local_trace(self, frame: Any, event: str, arg: Any) -> Any:
        if event not in self.events or self.injected is not None or not self.active:
            return self.local_trace
        if event == "line" and frame.f_lasti in _range_exits(frame.f_code):
            return self.local_trace  # unreachable by a real interrupt (see _range_exits)
        if event == "return" and frame.f_code.co_flags & _GENERATOR_FLAGS:
            return self.local_trace  # a yield, or a generator closed by the collector
        with self._lock:
            if self.injected is not None:
                return self.local_trace
            index = self.count
            self.count += 1
            if self.inject_at is None:
                self.points.append(self._point(index, event, frame))
                return self.local_trace
            if index != self.inject_at:
                return self.local_trace
            self.injected = self._point(index, event, frame)
        raise self.exc_type(f"injected at {self.injected}")

    @staticmethod
    def _point(index: int, event: str, frame: Any) -> Point:
        code = frame.f_code
        return Point(index, event, code.co_filename[len(PACKAGE_DIR):], frame.f_lineno,
                     code.co_name, threading.current_thread().name)


@contextlib.contextmanager
def traced_here(tracer: Tracer) -> Iterator[Tracer]:
    """Trace the calling thread only."""
    sys.settrace(tracer.global_trace)
    try:
        yield tracer
    finally:
        sys.settrace(None)


@contextlib.contextmanager
def traced_new_threads(tracer: Tracer) -> Iterator[Tracer]:
    """Trace the threads started inside the block (not the calling one)."""
    threading.settrace(tracer.global_trace)
    try:
        yield tracer
    finally:
        threading.settrace(None)  # type: ignore[arg-type]


def sample(count: int, stride: int, offset: int = 0) -> List[int]:
    """Every *stride*-th index of *count*, from *offset* (deterministic)."""
    stride = max(1, stride)
    return list(range(offset % stride if count > stride else 0, count, stride))


# -- deadlines and hangs ----------------------------------------------------------


_stuck: List[threading.Thread] = []
_exit_hook_installed = False


def thread_dump() -> str:
    """Every thread's stack, for the failure message of a hang."""
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    parts = []
    for ident, frame in sys._current_frames().items():
        stack = "".join(traceback.format_stack(frame))
        parts.append(f"--- thread {names.get(ident, '?')} ({ident}):\n{stack}")
    return "\n".join(parts)


def note_hang(threads: Sequence[threading.Thread] = ()) -> None:
    """A hang was seen: threads deadlocked in the scheduler (its pool's
    workers are not daemons, nor is its closer) would keep the interpreter
    from exiting after pytest is done. If any is still alive then, the
    process ends at once with status 1 (the hang already failed a test)."""
    global _exit_hook_installed
    _stuck.extend(threads)
    _stuck.extend(t for t in threading.enumerate()
                  if t is not threading.main_thread() and not t.daemon)
    if _exit_hook_installed:
        return
    _exit_hook_installed = True

    def exit_if_stuck() -> None:  # runs first at interpreter exit (see threading._shutdown)
        if any(thread.is_alive() for thread in _stuck):
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(1)
    threading._register_atexit(exit_if_stuck)  # type: ignore[attr-defined]


class Hang(AssertionError):
    """A call or a condition did not come within its deadline."""


def within(seconds: float, what: str, fn: Callable[..., Any], *args: Any,
           **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` in a daemon thread; its result, or its
    exception raised here; ``Hang`` with every thread's stack if it does not
    return within *seconds*."""
    box: Dict[str, Any] = {}

    def call() -> None:
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # handed to the caller, whatever it is
            box["error"] = exc
    thread = threading.Thread(target=call, name=f"fault-check {what}", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        dump = thread_dump()
        note_hang([thread])
        raise Hang(f"{what} did not return within {seconds} s (a deadlock?)\n{dump}")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def await_condition(predicate: Callable[[], Any], what: Any,
                    seconds: float = DEADLINE) -> Any:
    """Wait until ``predicate()`` is truthy (it must not block); ``Hang``
    with every thread's stack if it is not within *seconds*. *what* says
    what was awaited (a callable: made at the failure)."""
    deadline = time.monotonic() + seconds
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            dump = thread_dump()
            note_hang()
            text = what() if callable(what) else what
            raise Hang(f"{text}: not within {seconds} s\n{dump}")
        time.sleep(0.0005)


# -- the clock --------------------------------------------------------------------


class ManualClock:
    """``timefunc``/``delayfunc`` for the scheduler: short waits (up to a
    second: the journal's linger, a short retry delay) pass at once; longer
    ones only when the test calls ``advance()``, or ``poke()``s the
    dispatcher to look again. Without either, the dispatcher looks again
    after a few real milliseconds (a ``delayfunc`` does not hear the
    notifications that wake it otherwise)."""

    SHORT = 1.0
    REAL_POLL = 0.02

    def __init__(self, start: float = 1000.0) -> None:
        self._cond = threading.Condition()
        self.t = start
        self._generation = 0
        #: Set before a shutdown: the dispatcher's waits end at once, so it
        #: sees the shutdown without waiting for a poll.
        self.stopping = False

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        with self._cond:
            if seconds <= 0:
                pass
            elif seconds <= self.SHORT:
                self.t += seconds
                return
            elif not self.stopping:
                generation = self._generation
                self._cond.wait_for(lambda: self._generation != generation, self.REAL_POLL)
                return
        time.sleep(0.001)  # due now and nothing to do: do not spin

    def advance(self, seconds: float) -> None:
        with self._cond:
            self.t += seconds
            self._generation += 1
            self._cond.notify_all()

    def poke(self) -> None:
        with self._cond:
            self._generation += 1
            self._cond.notify_all()

    def stop_waiting(self) -> None:
        """From now on the dispatcher's waits end at once (before a shutdown)."""
        self.stopping = True
        self.poke()


# -- a scheduler to break -------------------------------------------------------------


_world_numbers = itertools.count()
#: The live worlds by key, for the task functions (which the store pickles).
_WORLDS: Dict[str, "World"] = {}


def _note_run(key: str, label: str) -> str:
    _WORLDS[key].ran.append(label)
    return label


def _block(key: str, label: str) -> str:
    world = _WORLDS[key]
    world.ran.append(label)
    deadline = time.monotonic() + 4 * DEADLINE
    while not world.release.wait(0.002) and time.monotonic() < deadline:
        if world.shut_down or world.sched.stopped:
            break
    return label


def fail(key: str, label: str) -> None:
    _WORLDS[key].ran.append(label)
    raise ValueError(f"{label} fails on purpose")


def until_timed_out(key: str, label: str, register: bool = False) -> str:
    """Runs until the scheduler marks the run timed out; with *register*,
    the world's hook is its timeout callback."""
    world = _WORLDS[key]
    run = psl.current_run()
    if register:
        run.add_timeout_callback(world.hook)
    world.ran.append(label)
    deadline = time.monotonic() + 4 * DEADLINE
    while not run.timed_out and time.monotonic() < deadline and not world.shut_down:
        time.sleep(0.002)
    return label


def until_go(key: str, label: str) -> str:
    world = _WORLDS[key]
    world.ran.append(label)
    world.go.wait(4 * DEADLINE)
    return label


def until_gate(key: str, label: str) -> str:
    world = _WORLDS[key]
    world.ran.append(label)
    world.gate.wait(4 * DEADLINE)
    return label


def hooked_result(key: str, label: str) -> "HookedRepr":
    _WORLDS[key].ran.append(label)
    return HookedRepr(key)


def calling_hook(key: str, label: str) -> str:
    world = _WORLDS[key]
    world.ran.append(label)
    world.hook()
    return label


class HookedRepr:
    """A task's result whose ``repr()`` is the world's hook (user code the
    scheduler runs when it builds the run's record)."""

    def __init__(self, key: str) -> None:
        self.key = key

    def __repr__(self) -> str:
        world = _WORLDS.get(self.key)
        if world is not None:
            world.hook()
        return "<HookedRepr>"


class Hook:
    """User code the scheduler calls back (a listener, a done-callback, a run
    log's write...). Armed with an action, the first call does it (raise,
    block, call the scheduler); every other call does nothing."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._action: Optional[Callable[[], Any]] = None
        self.entered = threading.Event()
        self.done = threading.Event()
        #: The thread that called it, and what the action did.
        self.thread: Optional[str] = None
        self.outcome: Any = None

    def arm(self, action: Callable[[], Any]) -> None:
        self._action = action

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        with self._lock:
            action, self._action = self._action, None
        if action is None:
            return
        self.thread = threading.current_thread().name
        self.entered.set()
        try:
            self.outcome = ("returned", action())
        except BaseException as exc:
            self.outcome = ("raised", exc)
            raise
        finally:
            self.done.set()


class HookedRunLog:
    """A run log object whose ``write()`` calls the hook."""

    def __init__(self, hook: Hook) -> None:
        self.hook = hook
        self.records: List[Dict[str, Any]] = []

    def write(self, record: Dict[str, Any]) -> None:
        self.records.append(record)
        self.hook(record)

    def close(self) -> None:
        pass


class HookedClock:
    """``timefunc`` or ``wallfunc`` that reads the manual clock and calls the
    hook (the read it interrupts, if the hook raises, is that of whichever
    thread reads first once it is armed)."""

    def __init__(self, clock: "ManualClock", hook: Hook, wall: bool) -> None:
        self.clock, self.hook = clock, hook
        self.base = time.time() - clock.now() if wall else 0.0

    def __call__(self) -> float:
        self.hook()
        return self.base + self.clock.now()


class World:
    """A started scheduler on a manual clock, and the checks that follow a fault.

    Task functions made by ``job(label)`` append *label* to ``ran`` when
    they run; ``blocker(label)`` ones also wait until ``release`` is set.
    ``hook`` is user code the scheduler may call: with *run_log* it is the
    run log's ``write()``, with *clock* ('timefunc' or 'wallfunc') that
    clock; a test installs it where else it wants (a listener...).
    """

    def __init__(self, tmp_path: Any = None, *, store: bool = False, workers: int = 2,
                 run_log: bool = False, start: bool = True,
                 clock: Optional[str] = None) -> None:
        self.threads_before = set(threading.enumerate())
        self.key = f"world-{os.getpid()}-{next(_world_numbers)}"
        self.clock = ManualClock()
        self.hook = Hook()
        self.ran: List[str] = []
        #: The ids of the probe tasks check_still_executes() added.
        self.probes: Set[str] = set()
        _WORLDS[self.key] = self
        self.release = threading.Event()
        #: Lets a blocked callback go on (see Hook), and a task wait for it.
        self.unblock = threading.Event()
        self.go = threading.Event()
        self.gate = threading.Event()
        #: Undone at close (a logging handler a test added...).
        self.cleanups: List[Callable[[], None]] = []
        self.store_path = None
        if store:  # a file of its own: a store an earlier fault left locked is not reused
            self.store_path = os.path.join(str(tmp_path), f"{self.key}.db")
        options: Dict[str, Any] = {}
        if clock == "wallfunc":
            options["wallfunc"] = HookedClock(self.clock, self.hook, wall=True)
        timefunc = HookedClock(self.clock, self.hook, wall=False) if clock == "timefunc" \
            else self.clock.now
        self.run_log = HookedRunLog(self.hook) if run_log else None
        self.sched = psl.Scheduler(executor=psl.ThreadPoolExecutor(workers),
                                   timefunc=timefunc, delayfunc=self.clock.sleep,
                                   store=self.store_path, run_log=self.run_log, **options)
        self.shut_down = False
        if start:
            self.sched.start()

    # -- task functions -----------------------------------------------------------

    def job(self, label: str) -> Callable[[], str]:
        """A task function that notes *label* in ``ran`` (storable: a partial
        of a module-level function)."""
        return functools.partial(_note_run, self.key, label)

    def task(self, kind: Callable[..., Any], label: str, *args: Any) -> Callable[[], Any]:
        """A task function of this module's (``_fail``, ``_until_go``...) for this world."""
        return functools.partial(kind, self.key, label, *args)

    def blocker(self, label: str) -> Callable[[], str]:
        """A task function that notes *label*, then runs until ``release`` is
        set or the scheduler stops (so that a shutdown(wait=True) in the
        main thread can end)."""
        return functools.partial(_block, self.key, label)

    def count(self, label: str) -> int:
        return self.ran.count(label)

    # -- reading through the public API, with deadlines -------------------------------

    def api(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return within(DEADLINE, what, fn, *args, **kwargs)

    def tasks(self) -> Dict[str, Dict[str, Any]]:
        """``get_all()`` by id."""
        return {info["id"]: info for info in self.api("get_all()", self.sched.get_all)}

    def status(self, task_id: str) -> Optional[psl.TaskStatus]:
        """The task's status, None when the scheduler does not know the id."""
        try:
            return self.api(f"get_status({task_id!r})", self.sched.get_status, task_id)
        except KeyError:
            return None

    def wait_idle(self, what: str) -> None:
        """Wait until no run executes and nobody holds the state lock."""
        await_condition(lambda: invariants.running_count(self.sched) == 0
                        and not invariants.state_lock_held(self.sched),
                        lambda: f"{what}: the scheduler never became idle "
                        f"(running={invariants.running_count(self.sched)}, "
                        f"lock held: {invariants.state_lock_held(self.sched)}, "
                        f"lanes={invariants.lanes(self.sched)})")

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    # -- the checks after a fault ------------------------------------------------

    def check_still_executes(self, label: str = "probe") -> None:
        """A task added now runs (delay() starts it itself), and so does one
        that the dispatcher must fire (its thread is alive and not stuck)."""
        direct = self.job(f"{label}-now")
        fired = self.job(f"{label}-dispatched")
        self.probes.add(self.api("delay() of a probe", self.sched.delay, "once", 0, 1, direct))
        self.probes.add(self.api("delay() of a probe", self.sched.delay, "once", 0.5, 1, fired))
        self.clock.poke()
        await_condition(lambda: self.count(f"{label}-now") == 1,
                        "a task added after the fault, due now, never ran: "
                        "the scheduler no longer executes")
        await_condition(lambda: self.count(f"{label}-dispatched") == 1,
                        "a task due 0.5 s after the fault never ran: the dispatcher "
                        f"no longer fires (alive: {invariants.dispatcher_alive(self.sched)})")

    def check_idle_invariants(self, what: str) -> None:
        """Once nothing runs: every worker slot is free and no task reads
        RUNNING. (Checked at a quiet moment: a retry or a manual run due
        meanwhile may start between two readings, so the check waits for a
        moment when all of them agree, and fails when none comes.)"""
        seen: Dict[str, Any] = {"problems": None}

        def quiet_and_whole() -> bool:
            if invariants.state_lock_held(self.sched) or invariants.running_count(self.sched):
                seen["problems"] = (f"{invariants.running_count(self.sched)} run(s) going; "
                                    f"lanes {invariants.lanes(self.sched)}")
                return False
            leaks = invariants.slot_leaks(self.sched)
            running = {tid: info["status"] for tid, info in self.tasks().items()
                       if info["status"] is S.RUNNING}
            if invariants.running_count(self.sched):
                return False  # something started meanwhile: look again
            problems = []
            if leaks:
                problems.append(f"worker slots are taken (kind, free, capacity): {leaks}; "
                                f"lanes {invariants.lanes(self.sched)}")
            if running:
                problems.append(f"tasks read RUNNING: {running}")
            seen["problems"] = "; ".join(problems)
            return not problems
        await_condition(quiet_and_whole,
                        lambda: f"{what}: the scheduler is never idle and whole: "
                        f"{seen['problems']}")

    def shutdown_and_check(self, what: str, wait: bool = True) -> None:
        """shutdown(wait=True) returns; afterwards ``stopped`` is True, every
        latest run is final, and no thread of the scheduler is left."""
        self.shut_down = True
        self.release.set()
        self.unblock.set()
        self.go.set()
        self.gate.set()
        self.clock.stop_waiting()
        self.api("shutdown(wait=True)", self.sched.shutdown, wait=wait)
        assert self.sched.stopped is True, f"{what}: stopped reads False after shutdown()"
        if not wait:
            self.api("shutdown(wait=True) after shutdown(wait=False)", self.sched.shutdown,
                     wait=True)
        self.check_runs_final(what)
        self.check_no_thread_left(what)

    def close(self) -> None:
        """Best effort after a failed check: shut down (never hanging the
        test run), forget the world."""
        self.unblock.set()
        self.go.set()
        self.gate.set()
        for cleanup in self.cleanups:
            cleanup()
        if not self.shut_down:
            self.shut_down = True
            self.release.set()
            self.clock.stop_waiting()
            try:
                within(DEADLINE, "shutdown(wait=True) after a failed check",
                       self.sched.shutdown, wait=True)
            except BaseException:
                pass
        _WORLDS.pop(self.key, None)

    def stored(self) -> Dict[str, Any]:
        """The store's task records by id, read as a separate reader would."""
        store = open_store(self.store_path, read_only=True)
        try:
            return {record.id: record for record in store.load_tasks()}
        finally:
            store.close()

    def check_runs_final(self, what: str) -> None:
        pending = {tid: run.status for tid, run in list(self.sched.result.items())
                   if run.status not in FINAL}
        assert pending == {}, (f"{what}: after shutdown(wait=True) these latest runs are "
                               f"not final: {pending}")

    def check_no_thread_left(self, what: str) -> None:
        def left() -> List[threading.Thread]:
            return [t for t in threading.enumerate()
                    if t not in self.threads_before and t.is_alive()
                    and not t.name.startswith("fault-")
                    and "QueueFeederThread" not in t.name]
        deadline = time.monotonic() + DEADLINE
        while left() and time.monotonic() < deadline:
            time.sleep(0.005)
        stuck = left()
        if stuck:
            note_hang(stuck)
        assert stuck == [], (f"{what}: threads left behind after shutdown: "
                             f"{[t.name for t in stuck]}\n{thread_dump()}")


@dataclass
class Failure:
    """What one injection broke."""

    scenario: str
    exc_name: str
    point: Optional[Point]
    message: str

    @property
    def summary(self) -> str:
        """The first line of the message, task ids and counts masked:
        failures with the same summary are usually one defect reached from
        several points."""
        line = self.message.strip().splitlines()[0] if self.message.strip() else "?"
        line = re.sub(r"'[0-9a-f]{6}-\d+'", "<id>", line)
        line = re.sub(r"0x[0-9a-f]+", "0x...", line)
        return re.sub(r"world-\d+-\d+", "<world>", line)

    def __str__(self) -> str:
        where = f" at {self.point}" if self.point is not None else ""
        return f"{self.scenario}: {self.exc_name}{where}:\n  {self.message}"


def failure_report(failures: Sequence[Failure], limit: int = 3) -> str:
    """The failures grouped by summary: each with its points, and the full
    message of the first ``limit`` of them."""
    groups: Dict[str, List[Failure]] = {}
    for failure in failures:
        groups.setdefault(f"{failure.scenario} / {failure.summary}", []).append(failure)
    parts = []
    for key, group in groups.items():
        points = ", ".join(f"{f.exc_name} {f.point}" if f.point is not None else f.exc_name
                           for f in group[:10])
        more = f" and {len(group) - 10} more" if len(group) > 10 else ""
        parts.append(f"[{len(group)}x] {key}\n    at: {points}{more}")
    details = "\n\n".join(str(f) for f in failures[:limit])
    return "\n".join(parts) + "\n\nFirst failures in full:\n" + details
