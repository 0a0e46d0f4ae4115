"""A KeyboardInterrupt inside ``delay()`` on the main thread, at each line.

SIGINT lands in the main thread, between any two lines of whatever it runs,
``delay()`` included. A ``sys.settrace`` driver raises KeyboardInterrupt at
the n-th line the package executes in ``delay()``, for each n, on a fresh
scheduler each time (the first few lines that go wrong are reported). Whatever the line, the scheduler must stay whole: the
interrupted ``delay()`` either added its task or did not, but a task it
added runs (or ends), no run is left RUNNING without executing, no worker
slot is lost, and later tasks still run.
"""
from __future__ import annotations

import dis
import os
import sys
import threading

import pytest

import pysched_lightning as psl
from conftest import wait_for
from invariants import leaked_slots, runs_going

PACKAGE = os.path.dirname(psl.__file__) + os.sep

#: Stop looking after this many interrupt points went wrong (each costs a wait).
MAX_FAILURES = 4
#: How long a task the interrupted delay() added may take to run or end.
SETTLE_SECONDS = 2.0


class InterruptAtLine:
    """A ``sys.settrace`` driver for the calling thread: raises
    KeyboardInterrupt at the *at*-th line the package executes (None: never;
    then it only counts). ``where`` names the line it raised at."""

    def __init__(self, at=None):
        self.at = at
        self.lines = 0
        self.where = None

    def __enter__(self):
        self._previous = sys.gettrace()
        sys.settrace(self._call)
        return self

    def __exit__(self, *exc_info):
        sys.settrace(self._previous)
        return False

    def _call(self, frame, event, arg):
        return self._line if frame.f_code.co_filename.startswith(PACKAGE) else None

    def _line(self, frame, event, arg):
        if event == "line" and not _no_signal_lands_here(frame):
            if self.lines == self.at:
                code = frame.f_code
                self.where = f"{os.path.basename(code.co_filename)}:{frame.f_lineno} " \
                             f"({code.co_name})"
                self.lines += 1
                raise KeyboardInterrupt  # the trace function is unset with it
            self.lines += 1
        return self._line


_INSTRUCTIONS = {}


def _no_signal_lands_here(frame):
    """True at a line event where a real signal cannot raise: a ``try:`` line
    (a NOP, before the ``try`` or ``with`` around it protects anything) and
    the end of a ``with`` block just before it calls ``__exit__``. An
    exception raised there by a trace function would skip ``__exit__`` and
    leave a lock held, while a real KeyboardInterrupt is only noticed by
    instructions that check for signals, after or before those spots. The
    next line event stands for the same moment."""
    code = frame.f_code
    instructions = _INSTRUCTIONS.get(code)
    if instructions is None:
        listed = list(dis.get_instructions(code))
        instructions = _INSTRUCTIONS[code] = (
            listed, {ins.offset: index for index, ins in enumerate(listed)})
    listed, index_of = instructions
    index = index_of.get(frame.f_lasti)
    if index is None:
        return False
    names = [(ins.opname, ins.argval) for ins in listed[index:index + 3]]
    none = ("LOAD_CONST", None)
    # 3.11-3.13: LOAD_CONST None x3, CALL; 3.10: LOAD_CONST None, DUP_TOP x2,
    # CALL_FUNCTION (3.9 reports no line event there)
    return names[0][0] == "NOP" or \
        names in ([none, none, none], [none, ("DUP_TOP", None), ("DUP_TOP", None)])


class Calls:
    """A task body that counts its calls."""

    def __init__(self):
        self.lock = threading.Lock()
        self.count = 0

    def __call__(self):
        with self.lock:
            self.count += 1


SCENARIOS = {
    "a one-shot due now": lambda sched, work: sched.delay('once', 0, 1, work),
    "a named one-shot due soon": lambda sched, work: sched.delay('once', 0.01, 1, work,
                                                                  task_id="named"),
    "a recurring task": lambda sched, work: sched.delay('recur', 0.01, 1, work),
}


def _lines_executed(scenario):
    """How many lines of the package ``delay()`` executes in this scenario."""
    sched = psl.Scheduler(executor=psl.ThreadPoolExecutor(2))
    sched.start()
    try:
        with InterruptAtLine() as counter:
            SCENARIOS[scenario](sched, Calls())
    finally:
        sched.shutdown(wait=True, timeout=5)
    return counter.lines


def _spread(total):
    """0..total-1 in bit-reversed order (0, half, a quarter, three quarters...):
    the first interrupt points tried are spread over the whole of delay(), so
    the few failures reported show its different parts."""
    width = max(1, (total - 1).bit_length())
    return sorted(range(total), key=lambda n: int(format(n, f"0{width}b")[::-1], 2))


def _settled(sched, task_id, work):
    """True when a task the interrupted delay() added runs: a one-shot ends
    (whatever its status), a recurring one runs again and again (a run left
    RUNNING without executing would hold it back)."""
    if sched.get_task(task_id)['trigger'] == 'recur':
        try:
            wait_for(lambda: work.count >= 2, timeout=SETTLE_SECONDS)
        except AssertionError:
            return False
        return True
    try:
        sched.get_result(task_id, timeout=SETTLE_SECONDS)
    except TimeoutError:
        return False
    except Exception:  # it failed or was canceled: it ended
        pass
    return True


def _problems_after_interrupt(sched, work):
    """What is wrong with *sched* after an interrupted delay()."""
    problems = []
    for task_id in list(sched.task):
        if not _settled(sched, task_id, work):
            problems.append(f"task {task_id} did not run or end within {SETTLE_SECONDS} s: "
                            f"{sched.get_status_str(task_id)}, "
                            f"next run {sched.get_task(task_id)['next_run_time']}")
    for task_id in list(sched.task):
        sched.cancel(task_id)  # a recurring task would keep its slot busy
    try:
        wait_for(lambda: runs_going(sched) == 0, timeout=SETTLE_SECONDS)
    except AssertionError:
        problems.append(f"{runs_going(sched)} run(s) RUNNING forever")
    else:
        if leaked_slots(sched):
            problems.append(f"worker slots lost with nothing running: {leaked_slots(sched)}")
    try:
        alive = sched.get_result(sched.delay('once', 0, 1, lambda: "alive"),
                                 timeout=SETTLE_SECONDS)
    except Exception as exc:  # TimeoutError: nothing runs any more
        problems.append(f"a later task did not run: {exc!r}")
    else:
        if alive != "alive":
            problems.append(f"a later task returned {alive!r}")
    return problems


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_an_interrupt_at_any_line_of_delay_leaves_no_task_stuck_and_no_slot_lost(scenario):
    """Interrupted between two lines of delay(), the scheduler kept a task
    that never fired (in the timetable but not in the timer heap), one that
    fired only at the dispatcher's next 30 s check (pushed, but the
    dispatcher not woken), or a run RUNNING that never executed (its worker
    slot taken for good), so shutdown waited for it and later tasks lacked a
    worker. Each line is tried on a fresh scheduler; the first few that go
    wrong are reported (tried spread over delay(), not in order)."""
    total = _lines_executed(scenario)
    assert total > 20  # the driver sees delay()'s lines
    failures = []
    for at in _spread(total):
        sched = psl.Scheduler(executor=psl.ThreadPoolExecutor(2))
        sched.start()
        work = Calls()
        try:
            with InterruptAtLine(at) as driver:
                try:
                    SCENARIOS[scenario](sched, work)
                except KeyboardInterrupt:
                    pass
            problems = _problems_after_interrupt(sched, work)
        finally:
            sched.shutdown(wait=True, timeout=2)
        if problems:
            failures.append(f"interrupted at line {at} of {total}, {driver.where}: "
                            + "; ".join(problems))
            if len(failures) >= MAX_FAILURES:
                break
    assert not failures, "\n".join(failures)
