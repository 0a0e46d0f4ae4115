"""A virtual clock that moves only when the test says so, and an executor
that runs each run in the thread that hands it over.

``GatedClock.now`` is the scheduler's ``timefunc``. Each scheduler gets a
``Sleeper`` of its own as ``delayfunc``: the dispatcher calls it with the
seconds it wants to wait, and it *blocks* until the test moves the clock or
pokes it (after an API call that may have changed what is due next). So
time never passes behind the test's back, and a dispatcher that sits in its
sleeper again, after the test's last poke, has handled everything that was
due: with ``InlinePool`` every run executes in the dispatcher's thread (or
in the test's own, inside the API call), so that moment is quiescence.

``advance(sched_sleeper, seconds)`` moves time event by event: each time to
the moment the dispatcher asked to be woken, never past the target, so
every run starts exactly at its due time. ``jump`` moves it in one step,
like a process that was suspended: everything due in between is late.
"""
from __future__ import annotations

import concurrent.futures
import threading
import time
from typing import Callable, List, Optional

#: How long (real seconds) the dispatcher may take to come back to wait
#: after a poke before the test calls it a hang.
QUIESCENCE_PATIENCE = 5.0


class SchedulerHang(AssertionError):
    """The dispatcher did not come back to wait: a deadlock or a busy loop."""


class GatedClock:
    """Virtual time (``now``), moved only by ``set_time``; sleepers block on it."""

    def __init__(self, start: float) -> None:
        self.cond = threading.Condition()
        self.t = float(start)
        #: Bumped by every move and every poke: a sleeper waits for a change.
        self.generation = 0

    def now(self) -> float:
        return self.t

    def set_time(self, t: float) -> None:
        with self.cond:
            if t < self.t:
                raise ValueError("the virtual clock never goes back")
            self.t = t
            self.generation += 1
            self.cond.notify_all()

    def poke(self) -> None:
        """Wake the sleepers without moving time (they re-check what is due)."""
        with self.cond:
            self.generation += 1
            self.cond.notify_all()

    def sleeper(self) -> "Sleeper":
        return Sleeper(self)


class Sleeper:
    """One scheduler's ``delayfunc``: blocks until the clock moves or is poked."""

    def __init__(self, clock: GatedClock) -> None:
        self.clock = clock
        #: The generation at which the dispatcher began to wait (None: not waiting).
        self.waiting_since: Optional[int] = None
        #: When the dispatcher asked to be woken (scheduler clock).
        self.wake_at: Optional[float] = None
        #: Set for shutdown: the sleeper returns at once from then on.
        self.released = False
        #: Calls with a wait <= 0: a dispatcher that asks for none spins.
        self.zero_waits = 0

    def __call__(self, seconds: float) -> None:
        cond = self.clock.cond
        with cond:
            if self.released:
                return
            if seconds <= 0:
                self.zero_waits += 1
                return
            generation = self.clock.generation
            self.waiting_since, self.wake_at = generation, self.clock.t + seconds
            cond.notify_all()
            try:
                while self.clock.generation == generation and not self.released:
                    cond.wait()
            finally:
                self.waiting_since = self.wake_at = None

    def release(self) -> None:
        """From now on return at once (the scheduler shuts down)."""
        with self.clock.cond:
            self.released = True
            self.clock.cond.notify_all()

    def is_waiting(self) -> bool:
        """True when the dispatcher waits here since the clock's last change."""
        return self.waiting_since == self.clock.generation


def settle(clock: GatedClock, sleeper: Sleeper, parked: Callable[[], bool],
           alive: Callable[[], bool], busy: Callable[[], bool] = lambda: False,
           patience: float = QUIESCENCE_PATIENCE) -> None:
    """Poke the dispatcher and wait until it waits again: in its sleeper (for
    a time) or parked on its condition (nothing scheduled), with ``busy()``
    false (no scheduler thread doing anything). Raises SchedulerHang."""
    clock.poke()
    deadline = time.monotonic() + patience
    with clock.cond:
        while True:
            waiting = sleeper.is_waiting() or parked()
            if waiting and not busy():
                return
            if not alive():
                raise SchedulerHang("the dispatcher thread is dead")
            if time.monotonic() > deadline:
                raise SchedulerHang(f"the scheduler did not come back to wait within "
                                    f"{patience} s (a deadlock or a busy loop)")
            clock.cond.wait(0.001)


def advance(clock: GatedClock, sleeper: Sleeper, seconds: float,
            quiet: Callable[[], None]) -> None:
    """Move time forward by *seconds*, stopping at every moment the
    dispatcher asked to be woken; *quiet()* waits for quiescence."""
    target = clock.t + seconds
    quiet()
    while True:
        wake_at = sleeper.wake_at if sleeper.is_waiting() else None
        if wake_at is not None and wake_at < target:
            clock.set_time(max(wake_at, clock.t))
        else:
            clock.set_time(target)
            quiet()
            return
        quiet()


class InlinePool(concurrent.futures.ThreadPoolExecutor):
    """A "thread pool" of one worker that runs each submitted call at once in
    the submitting thread. The scheduler drives it exactly as its own thread
    pool (its worker loop pulls the next ready run after each), but every run
    happens in the dispatcher's thread or in the caller of ``delay()``,
    ``resume()``..., so the test knows when all due work is done."""

    def __init__(self) -> None:
        super().__init__(max_workers=1)

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[override]
        future: concurrent.futures.Future = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: B902 - handed to the future
            future.set_exception(exc)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        return None


def stacks() -> str:
    """Every thread's stack, to show where a hang sits."""
    import sys
    import traceback
    frames = sys._current_frames()
    parts: List[str] = []
    for thread in threading.enumerate():
        frame = frames.get(thread.ident or -1)
        if frame is None:
            continue
        parts.append(f"--- {thread.name}\n" + "".join(traceback.format_stack(frame)[-12:]))
    return "\n".join(parts)
