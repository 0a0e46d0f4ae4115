"""The tasks the model-based test schedules, and the execution log they write.

The tasks are module-level functions, so a scheduler with a store keeps them
by import reference and a scheduler made after a restart finds them again.
What they do is decided by their arguments alone (``job(label, fail_on)``
fails exactly on the attempts listed in ``fail_on``), so a test can predict
every outcome.

Every execution is appended to ``SESSION.log``, a plain list that outlives
the schedulers of one example: it is the oracle that says what really ran,
across restarts. The session also counts the calls of the done-callbacks
attached to each run's future, and holds the gates that the threaded
variant uses to keep a run going until the test lets it finish.
"""
from __future__ import annotations

import threading
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

import pysched_lightning as psl

from invariants import is_manual_run


class TaskFailure(Exception):
    """What a task raises on the attempts it is told to fail."""


class Execution(NamedTuple):
    """One execution of a task, as the task saw it."""

    label: str
    task_id: str
    run_number: int
    attempt: int
    manual: bool
    #: The run's due time on the wall clock (POSIX seconds).
    scheduled: float
    #: The scheduler clock when the task began.
    at: float
    failed: bool
    #: The ``psl.Run`` it executed as (kept to check it once it is over).
    run: Any
    thread: str


class FutureWatch:
    """The done-callback attached to one run's future: it counts its calls."""

    def __init__(self, run: Any, reenter: Optional[Any] = None) -> None:
        self.run = run
        self.calls = 0
        self.outcome: Optional[str] = None
        #: A callable that calls back into the scheduler, or None.
        self.reenter = reenter
        self.reentry_failed: Optional[str] = None

    def __call__(self, future: Any) -> None:
        # The outcome first: another thread that sees the call counted
        # reads it (the invariants, checked while runs go on).
        if future.cancelled():
            self.outcome = "cancelled"
        elif future.exception() is not None:
            self.outcome = "exception"
        else:
            self.outcome = "result"
        self.calls += 1
        if self.reenter is not None:
            self.reentry_failed = call_back_in_thread(self.reenter)


def call_back_in_thread(call: Any, patience: float = 1.0) -> Optional[str]:
    """Call *call* (a call into the scheduler) from another thread and wait
    for it: None when it returned, else why not. A call made where the
    scheduler's lock is held would block, so it cannot return while this
    waits; a separate thread turns that deadlock into a finding that does
    not hang the test (the call completes once the lock is released)."""
    done = threading.Event()
    error: List[BaseException] = []

    def target() -> None:
        try:
            call()
        except BaseException as exc:  # noqa: B902 - reported, never swallowed
            error.append(exc)
        finally:
            done.set()

    threading.Thread(target=target, name="model-reentry", daemon=True).start()
    if not done.wait(patience):
        return (f"a call back into the scheduler made from here did not return within "
                f"{patience} s: the caller holds a scheduler lock")
    if error and not isinstance(error[0], (KeyError, RuntimeError)):
        return f"the call back raised {error[0]!r}"
    return None


class Gate:
    """Keeps one execution going until the test opens it (threaded variant)."""

    def __init__(self, execution: Execution) -> None:
        self.execution = execution
        self.key = (execution.label, execution.attempt, execution.manual,
                    round(execution.scheduled, 3))
        self.opened = threading.Event()
        #: The scheduler clock when the test opened it (the run's end).
        self.released_at: Optional[float] = None
        #: The thread that waits at it.
        self.thread = threading.get_ident()


class Session:
    """What one example of the state machine shares with its tasks."""

    def __init__(self, now: Any, gated: bool = False) -> None:
        #: The scheduler clock, read when a task begins.
        self.now = now
        self.log: List[Execution] = []
        self.watches: Dict[int, FutureWatch] = {}
        #: True: every execution waits at its gate until the test opens it.
        self.gated = gated
        self.gates: List[Gate] = []
        self.lock = threading.Lock()
        #: Problems seen by the tasks themselves (e.g. no current run).
        self.problems: List[str] = []
        #: Armed by the test: makes the next watched run's done-callback call
        #: back into the scheduler (given the task id, returns the call).
        self.reenter_next: Optional[Any] = None

    def watch(self, run: Any) -> FutureWatch:
        """Attach a counting done-callback to *run*'s future (once per run)."""
        with self.lock:
            watch = self.watches.get(id(run))
            if watch is not None:
                return watch
            factory, self.reenter_next = self.reenter_next, None
            reenter = factory(run.task_id) if factory is not None else None
            watch = self.watches[id(run)] = FutureWatch(run, reenter)
        run.future.add_done_callback(watch)
        return watch

    def all_watches(self) -> List[FutureWatch]:
        with self.lock:
            return list(self.watches.values())

    def reentry_failures(self) -> List[str]:
        return [f"a future's done-callback: {watch.reentry_failed}"
                for watch in self.all_watches() if watch.reentry_failed]

    def record(self, label: str, run: Any, failed: bool) -> Execution:
        scheduled = run.scheduled.timestamp() if run.scheduled is not None else float("nan")
        execution = Execution(label, run.task_id, run.run_number, run.attempt,
                              is_manual_run(run), scheduled, self.now(), failed, run,
                              threading.current_thread().name)
        with self.lock:
            self.log.append(execution)
        return execution

    def wait_at_gate(self, execution: Execution) -> None:
        gate = Gate(execution)
        with self.lock:
            self.gates.append(gate)
        gate.opened.wait()

    def open_gates(self, which: Optional[List[Gate]] = None) -> None:
        with self.lock:
            gates = [g for g in self.gates if not g.opened.is_set()] if which is None \
                else which
        for gate in gates:
            gate.released_at = self.now()
            gate.opened.set()

    def gate_of(self, execution: Execution) -> Optional[Gate]:
        with self.lock:
            for gate in self.gates:
                if gate.execution is execution:
                    return gate
        return None

    def blocked_threads(self) -> List[int]:
        """The threads waiting at a gate the test has not opened."""
        with self.lock:
            return [gate.thread for gate in self.gates if not gate.opened.is_set()]

    def waiting_gates(self) -> List[Gate]:
        with self.lock:
            return [gate for gate in self.gates if not gate.opened.is_set()]


#: The session of the example being run (examples run one at a time).
SESSION: Optional[Session] = None


def job(label: str, fail_on: Tuple[int, ...] = ()) -> str:
    """The model's task: logs its execution, then fails on the attempts listed."""
    session = SESSION
    run = psl.current_run()
    if session is None or run is None:
        if session is not None:
            session.problems.append(f"task {label!r} ran with psl.current_run() None")
        raise TaskFailure("no session or no current run")
    session.watch(run)
    failed = run.attempt in fail_on
    execution = session.record(label, run, failed)
    if session.gated:
        session.wait_at_gate(execution)
    if failed:
        raise TaskFailure(f"{label} attempt {run.attempt} fails on purpose")
    return f"{label} run {run.run_number} attempt {run.attempt}"


def sentinel() -> None:
    """A task that never needs to run (a placeholder far in the future)."""
