"""Process pools that survive dying workers, and killable one-process runs.

Every test uses real worker processes; a crash is a real ``os._exit``, a
real SIGKILL or a real segfault.
"""
from __future__ import annotations

import concurrent.futures
import ctypes
import logging
import multiprocessing
import os
import pickle
import signal
import threading
import time
import traceback

import psutil
import pytest

import pysched_lightning as psl
from conftest import process_gone, wait_for
from pysched_lightning.records.errors import WorkerCrashedError
from pysched_lightning.execution.processes import KillableProcesses, ProcessPool

# ------------------------------------------------------------------ calls
# (module level, so that worker processes can unpickle them)


def pid():
    return os.getpid()


def exit_3():
    os._exit(3)


def sigkill_self():
    os.kill(os.getpid(), signal.SIGKILL)


def segfault():
    ctypes.string_at(0)


def fail_in_worker(value):
    marker = "raised in the worker"
    raise ValueError(f"{marker}: {value!r}")


_GREETING = None


def greet(word):
    global _GREETING
    _GREETING = word


def greeting():
    return _GREETING


def wait_for_file(path):
    """Block until *path* exists (the test creates it), then return our pid."""
    deadline = time.monotonic() + 30
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path} never appeared")
        time.sleep(0.005)
    return os.getpid()


def meet(folder, count):
    """Wait until *count* workers have called this at once; return our pid
    (so *count* calls on *count* workers return every worker's pid)."""
    open(os.path.join(folder, str(os.getpid())), "w").close()
    deadline = time.monotonic() + 30
    while len(os.listdir(folder)) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {os.listdir(folder)} arrived")
        time.sleep(0.005)
    return os.getpid()


def sleep_then_pid(seconds):
    time.sleep(seconds)
    return os.getpid()


def _refuse_to_load():
    raise RuntimeError("this result cannot be unpickled")


class Unloadable:
    """A result that pickles in the worker and fails to unpickle in the parent."""

    def __reduce__(self):
        return _refuse_to_load, ()


def unloadable():
    return Unloadable()


# ---------------------------------------------------------------- helpers

CRASHES = [
    pytest.param(exit_3, 3, None, "exit code 3", id="os._exit(3)"),
    pytest.param(sigkill_self, -9, "SIGKILL", "signal SIGKILL (exit code -9)", id="SIGKILL"),
    pytest.param(segfault, -11, "SIGSEGV", "signal SIGSEGV (exit code -11)", id="segfault"),
]


def make_executor(kind):
    if kind == "loky":
        return None  # ProcessPool makes its own loky pool
    if kind == "psl":
        return psl.ProcessPoolExecutor(2)
    # spawn: forking a multi-threaded test process is unsafe
    return concurrent.futures.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn"))


def make_pool(kind):
    executor = make_executor(kind)
    return ProcessPool(max_workers=2) if executor is None else ProcessPool(executor)


def pool_warnings(caplog):
    return [r for r in caplog.records
            if r.name.startswith("pysched_lightning") and r.levelno == logging.WARNING]


# ------------------------------------------------------------ ProcessPool

@pytest.mark.parametrize("kind", ["loky", "psl", "stdlib"])
def test_a_dying_worker_fails_its_call_naming_how_it_died_and_later_calls_run(
        kind, caplog, no_leaked_threads):
    caplog.set_level(logging.WARNING, logger="pysched_lightning")
    with make_pool(kind) as pool:
        kind_before = type(pool.executor)
        for fn, exitcode, sig, text in [p.values for p in CRASHES]:
            crashed_pool = pool.executor
            with pytest.raises(WorkerCrashedError) as info:
                pool.submit(fn).result(timeout=60)
            assert (info.value.exitcode, info.value.signal) == (exitcode, sig)
            assert text in str(info.value)
            assert pool.submit(pid).result(timeout=60) != os.getpid()
            assert pool.executor is not crashed_pool
            assert type(pool.executor) is kind_before
            assert pool.capacity == 2
        assert len(pool_warnings(caplog)) == 3
        assert "exit code 3" in pool_warnings(caplog)[0].getMessage()


@pytest.mark.parametrize("kind", ["loky", "stdlib"])
def test_calls_in_flight_when_a_worker_dies_all_settle_and_the_pool_is_replaced_once(
        kind, tmp_path, caplog, no_leaked_threads):
    caplog.set_level(logging.WARNING, logger="pysched_lightning")
    go = tmp_path / "go"
    with make_pool(kind) as pool:
        assert pool.submit(pid).result(timeout=60)  # the workers are up
        first = pool.executor
        crasher = pool.submit(exit_3)
        waiting = [pool.submit(wait_for_file, (str(go),)) for _ in range(12)]
        with pytest.raises(WorkerCrashedError, match="exit code 3"):
            crasher.result(timeout=60)
        go.write_text("go")
        crashed, completed = [], []
        for future in waiting:
            try:
                completed.append(future.result(timeout=60))
            except WorkerCrashedError as exc:
                assert exc.exitcode == 3
                crashed.append(exc)
        # The pool holds at most a few calls beyond its workers; the others
        # never reached a worker and ran on the new pool.
        assert completed and len(crashed) + len(completed) == 12
        assert pool.executor is not first
        warnings = pool_warnings(caplog)
        assert len(warnings) == 1 and "exit code 3" in warnings[0].getMessage()
        assert pool.submit(pid).result(timeout=60) != os.getpid()


@pytest.mark.parametrize("kind", ["loky", "stdlib"])
def test_the_new_pool_keeps_the_options_of_the_broken_one(kind):
    if kind == "loky":
        executor = psl.ProcessPoolExecutor(1, initializer=greet, initargs=("hello",))
    else:
        executor = concurrent.futures.ProcessPoolExecutor(
            1, mp_context=multiprocessing.get_context("spawn"), initializer=greet,
            initargs=("hello",))
    with ProcessPool(executor) as pool:
        assert pool.submit(greeting).result(timeout=60) == "hello"
        with pytest.raises(WorkerCrashedError):
            pool.submit(exit_3).result(timeout=60)
        assert pool.executor is not executor and type(pool.executor) is type(executor)
        assert pool.submit(greeting).result(timeout=60) == "hello"
        assert pool.capacity == 1


def test_send_calls_back_with_the_outcome_without_a_future(no_leaked_threads):
    outcomes = []
    arrived = threading.Event()

    def done(result, exc):
        outcomes.append((result, exc))
        if len(outcomes) == 3:
            arrived.set()

    pool = ProcessPool(max_workers=1)
    try:
        assert pool.send(pid, (), None, done) is None
        pool.send(fail_in_worker, (7,), {}, done)
        pool.send(exit_3, (), None, done)
        assert arrived.wait(60)
        (value, none), (no_value, failure), (lost, crash) = outcomes
        assert value != os.getpid() and none is None
        assert no_value is None and isinstance(failure, ValueError)
        assert "fail_in_worker" in "".join(traceback.format_exception(failure))
        assert lost is None and isinstance(crash, WorkerCrashedError) and crash.exitcode == 3
    finally:
        pool.shutdown(wait=True)
    with pytest.raises(RuntimeError):
        pool.send(pid, (), None, done)


def test_a_remote_exception_keeps_its_traceback_naming_the_function():
    with ProcessPool(max_workers=1) as pool:
        future = pool.submit(fail_in_worker, (3,))
        with pytest.raises(ValueError, match="raised in the worker: 3"):
            future.result(timeout=60)
        exc = future.exception()
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    assert "fail_in_worker" in text
    assert 'raise ValueError(f"{marker}: {value!r}")' in text
    assert __file__ in text


def test_a_result_that_cannot_be_unpickled_fails_its_call_but_not_the_next(caplog):
    caplog.set_level(logging.WARNING, logger="pysched_lightning")
    with ProcessPool(max_workers=1) as pool:
        with pytest.raises(concurrent.futures.process.BrokenProcessPool) as info:
            pool.submit(unloadable).result(timeout=60)
        assert not isinstance(info.value, WorkerCrashedError)
        assert pool.submit(pid).result(timeout=60) != os.getpid()
        assert len(pool_warnings(caplog)) == 1


@pytest.mark.parametrize("wait", [True, False])
def test_shutdown_leaves_no_worker_process_behind(wait, tmp_path, no_leaked_threads):
    pool = ProcessPool(max_workers=2)

    def worker_pids(folder):
        folder.mkdir()
        calls = [pool.submit(meet, (str(folder), 2)) for _ in range(2)]
        return {call.result(timeout=60) for call in calls}

    pids = worker_pids(tmp_path / "first")
    with pytest.raises(WorkerCrashedError):  # and a broken pool on the way
        pool.submit(sigkill_self).result(timeout=60)
    pids |= worker_pids(tmp_path / "second")
    assert len(pids) == 4
    pool.shutdown(wait=wait)
    if wait:
        assert [p for p in pids if not process_gone(p)] == []
    else:
        wait_for(lambda: all(process_gone(p) for p in pids), timeout=10)
    with pytest.raises(RuntimeError):
        pool.submit(pid)


def pid_then_sleep(pid_file, seconds):
    """Leave our pid in *pid_file* (through a rename), then sleep."""
    with open(pid_file + ".tmp", "w") as out:
        out.write(str(os.getpid()))
    os.rename(pid_file + ".tmp", pid_file)
    time.sleep(seconds)
    return os.getpid()


def pid_then_hold_the_gil(pid_file, seconds):
    """Leave our pid in *pid_file*, then add numbers for minutes in C code
    that never lets another thread of this process run (``sum`` over a
    range holds the GIL throughout)."""
    pid_then_sleep(pid_file, 0)
    return sum(range(10 ** 13))


def read_pid(pid_file):
    wait_for(lambda: os.path.exists(pid_file), timeout=60)
    with open(pid_file) as kept:
        return int(kept.read())


@pytest.mark.parametrize("kind", ["loky", "psl", "stdlib"])
def test_kill_ends_the_calls_in_the_workers_at_once_and_no_pool_replaces_it(
        kind, tmp_path, no_leaked_threads):
    """What shutdown does once its grace is over: a call that would sleep for
    minutes fails at once, its worker is gone, and the pool takes no more."""
    pool = make_pool(kind)
    pid_file = str(tmp_path / "worker.pid")
    call = pool.submit(pid_then_sleep, (pid_file, 300))
    worker = read_pid(pid_file)
    try:
        pool.kill()
        with pytest.raises(Exception):
            call.result(timeout=30)
        pool.shutdown(wait=True)
        assert process_gone(worker)
        with pytest.raises(RuntimeError):
            pool.submit(pid)
    finally:
        if not process_gone(worker):
            os.kill(worker, signal.SIGKILL)
        pool.shutdown(wait=True)


# A scheduler in a process of its own, running a hard task (with a timeout
# or not) that leaves its worker's pid in a file, then sleeps or holds the GIL.
_SCHEDULER_WITH_A_HARD_TASK = r"""
import sys, time
import pysched_lightning as psl
import test_processes
timeout = float(sys.argv[2]) if sys.argv[2] != "none" else None
sched = psl.Scheduler()
sched.delay("once", 0, 1, getattr(test_processes, sys.argv[3]), args=(sys.argv[1], 300),
            hard=True, timeout=timeout)
sched.start()
time.sleep(300)
"""


@pytest.mark.parametrize("timeout, task", [
    (None, "pid_then_sleep"), (300, "pid_then_sleep"), (None, "pid_then_hold_the_gil"),
], ids=["pool", "own-process", "holding-the-gil"])
def test_a_hard_task_and_its_pool_processes_die_with_a_sigkilled_scheduler(
        tmp_path, timeout, task):
    """SIGKILL while a hard task runs: its worker process, and the pool's
    resource trackers with it, exit within seconds instead of finishing a
    run whose outcome nobody takes, even while the task holds the GIL (the
    worker's own watch thread cannot run then)."""
    import subprocess
    import sys
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [os.path.dirname(here), here, os.environ.get("PYTHONPATH")])))
    pid_file = str(tmp_path / "worker.pid")
    scheduler = subprocess.Popen(
        [sys.executable, "-c", _SCHEDULER_WITH_A_HARD_TASK, pid_file, str(timeout).lower(),
         task], env=env)
    children = []
    try:
        worker = read_pid(pid_file)
        children = psutil.Process(scheduler.pid).children(recursive=True)
        names = " ".join(" ".join(child.cmdline()) for child in children)
        assert worker in [child.pid for child in children]
        assert "resource_tracker" in names  # (the ones that lived on, too)
        scheduler.kill()
        assert scheduler.wait(10) == -signal.SIGKILL
        wait_for(lambda: all(process_gone(child.pid) for child in children), timeout=15)
    finally:
        if scheduler.poll() is None:
            scheduler.kill()
            scheduler.wait()
        for child in children:
            if not process_gone(child.pid):
                child.kill()


def test_bad_arguments_are_refused_naming_the_value():
    with pytest.raises(ValueError, match="0"):
        ProcessPool(max_workers=0)
    threads = concurrent.futures.ThreadPoolExecutor(1)
    try:
        with pytest.raises(TypeError, match="ThreadPoolExecutor"):
            ProcessPool(threads)
    finally:
        threads.shutdown()
    executor = psl.ProcessPoolExecutor(1)
    try:
        with pytest.raises(ValueError, match="max_workers=2"):
            ProcessPool(executor, max_workers=2)
    finally:
        executor.shutdown()


def test_worker_crashed_error_pickles_with_its_details():
    error = WorkerCrashedError(-9)
    assert error.signal == "SIGKILL"
    assert str(error) == "the worker process died with signal SIGKILL (exit code -9)"
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), copy.exitcode, copy.signal, str(copy)) == \
        (WorkerCrashedError, -9, "SIGKILL", str(error))
    assert isinstance(copy, RuntimeError)
    assert "unknown" in str(WorkerCrashedError())


# ----------------------------------------------------- KillableProcesses

def test_kill_returns_at_once_and_the_process_is_gone(no_leaked_threads):
    processes = KillableProcesses()
    try:
        future, handle = processes.submit(sleep_then_pid, (60,))
        assert psutil.pid_exists(handle.pid) and handle.pid != os.getpid()
        assert processes.kill(handle) is True
        wait_for(lambda: process_gone(handle.pid), timeout=2.0)
        with pytest.raises(WorkerCrashedError, match="killed on request") as info:
            future.result(timeout=10)
        assert info.value.signal == "SIGKILL"
        assert processes.kill(handle) is False  # once is enough
        # the next call gets a new process
        future, handle2 = processes.submit(pid)
        assert future.result(timeout=60) == handle2.pid != handle.pid
    finally:
        processes.shutdown(wait=True)


def test_an_idle_worker_is_reused_and_a_finished_call_is_not_killed():
    processes = KillableProcesses()
    try:
        future, first = processes.submit(pid)
        assert future.result(timeout=60) == first.pid
        assert processes.kill(first) is False  # it finished: nothing to kill
        future, second = processes.submit(pid)
        assert future.result(timeout=60) == second.pid == first.pid
        assert not process_gone(first.pid)
    finally:
        processes.shutdown(wait=True)
    assert process_gone(first.pid)


def test_a_worker_that_dies_on_its_own_is_not_reused(no_leaked_threads):
    processes = KillableProcesses()
    try:
        future, handle = processes.submit(sigkill_self)
        with pytest.raises(WorkerCrashedError, match="SIGKILL") as info:
            future.result(timeout=60)
        assert "killed on request" not in str(info.value)
        future, handle2 = processes.submit(pid)
        assert future.result(timeout=60) == handle2.pid != handle.pid
        future, handle3 = processes.submit(fail_in_worker, (5,))
        with pytest.raises(ValueError, match="raised in the worker: 5"):
            future.result(timeout=60)
    finally:
        processes.shutdown(wait=True)
    assert process_gone(handle2.pid)


def test_killable_shutdown_without_wait_kills_running_calls(no_leaked_threads):
    processes = KillableProcesses()
    future, handle = processes.submit(sleep_then_pid, (60,))
    processes.shutdown(wait=False)
    wait_for(lambda: process_gone(handle.pid), timeout=10)
    with pytest.raises(Exception):
        future.result(timeout=10)
    with pytest.raises(RuntimeError):
        processes.submit(pid)


# ------------------------------------------- through the scheduler (regressions)

@pytest.mark.parametrize("timeout", [None, 30], ids=["pool", "killable"])
@pytest.mark.parametrize("dies, says", [(exit_3, "exit code 3"), (sigkill_self, "SIGKILL"),
                                        (segfault, "SIGSEGV")])
def test_a_hard_task_that_kills_its_worker_fails_alone_and_later_hard_tasks_run(
        dies, says, timeout):
    """One crashed worker process used to break every later hard task:
    each failed with TerminatedWorkerError, forever."""
    with psl.Scheduler(process_executor=psl.ProcessPoolExecutor(1)) as sched:
        bad = sched.delay('once', 0, 1, dies, hard=True, timeout=timeout)
        with pytest.raises(WorkerCrashedError, match=says):
            sched.get_result(bad, timeout=60)
        assert sched.get_status(bad) is psl.TaskStatus.ERROR
        assert says in sched.runs(bad)[0].error
        for _ in range(3):
            good = sched.delay('once', 0, 1, greet, args=("again",), hard=True,
                               timeout=timeout)
            assert sched.get_result(good, timeout=60) == greet("again")


def test_a_hard_task_past_its_timeout_is_killed_and_the_dispatcher_goes_on(tmp_path):
    """Killing a timed-out hard task blocked the dispatcher while the process
    was shut down; now the kill happens in the background."""
    with psl.Scheduler(process_executor=psl.ProcessPoolExecutor(1)) as sched:
        slow = sched.delay('once', 0, 1, sleep_then_pid, args=(60,), hard=True, timeout=0.5)
        with pytest.raises(TimeoutError):
            sched.get_result(slow, timeout=60)
        assert sched.get_result(sched.delay('once', 0, 1, lambda: 'on time'),
                                timeout=10) == 'on time'


def square(x):
    return x * x


def test_each_run_of_a_quick_hard_task_gets_its_own_outcome():
    """Runs of a quick function share messages to the worker processes;
    each run still gets its own result, or its own exception."""
    with psl.Scheduler(process_executor=psl.ProcessPoolExecutor(2)) as sched:
        assert sched.get_result(sched.delay('once', 0, 1, square, args=(1,), hard=True),
                                timeout=60) == 1
        with pytest.raises(ValueError):  # both functions are now known to be quick
            sched.get_result(sched.delay('once', 0, 1, fail_in_worker, args=(0,),
                                         hard=True), timeout=60)
        sched.pause()  # they go out together, at resume()
        ids = [sched.delay('once', 0, 1, fail_in_worker if i % 7 == 0 else square,
                           args=(i,), hard=True) for i in range(120)]
        sched.resume()
        for i, task_id in enumerate(ids):
            if i % 7 == 0:
                with pytest.raises(ValueError, match=f"raised in the worker: {i}$"):
                    sched.get_result(task_id, timeout=60)
                assert sched.get_status(task_id) is psl.TaskStatus.ERROR
                assert "fail_in_worker" in sched.runs(task_id)[0].traceback
            else:
                assert sched.get_result(task_id, timeout=60) == i * i


def test_a_slow_hard_run_never_holds_back_the_outcome_of_a_quick_one(tmp_path):
    go = tmp_path / "go"
    with psl.Scheduler(process_executor=psl.ProcessPoolExecutor(2)) as sched:
        sched.get_result(sched.delay('once', 0, 1, square, args=(1,), hard=True), timeout=60)
        sched.pause()
        slow = sched.delay('once', 0, 1, wait_for_file, args=(str(go),), hard=True)
        quick = [sched.delay('once', 0, 2, square, args=(i,), hard=True) for i in range(20)]
        sched.resume()
        for i, task_id in enumerate(quick):
            assert sched.get_result(task_id, timeout=30) == i * i
        assert sched.get_status(slow) is psl.TaskStatus.RUNNING
        go.write_text("go")
        assert sched.get_result(slow, timeout=60) != os.getpid()


def test_a_quick_hard_task_with_a_short_timeout_completes_when_it_needs_a_new_process():
    """A hard task's deadline started before its process did: a microsecond
    function with timeout=0.1 timed out whenever it needed a new process (a
    fresh scheduler's first hard run with a timeout waits for one to start,
    which takes longer than that). The timeout counts the run's own time,
    not the start of its process (nor the process's first import of the
    package, which a call sent there needs: about 0.15 s here)."""
    with psl.Scheduler() as sched:
        tid = sched.delay('once', 0, 1, os.getpid, hard=True, timeout=0.1)
        assert sched.get_result(tid, timeout=60) != os.getpid()
