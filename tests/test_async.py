"""``async def`` tasks: they run to completion on the scheduler's own event
loop, with results, tracebacks, timeouts, retries and priorities as for any
task, and never leave a coroutine unawaited or a thread behind."""
from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import gc
import threading
import warnings

import pytest

import pysched_lightning as psl
from pysched_lightning.durability.stores import open_store
from conftest import InlineExecutor, pending_events, wait_for

Status = psl.TaskStatus
Kind = psl.EventKind


# ------------------------------------------------------------------ task bodies

async def add(a, b):
    await asyncio.sleep(0)
    return a + b


async def fails():
    await asyncio.sleep(0)
    raise LookupError("no such page")


FAILS_LINE = fails.__code__.co_firstlineno + 2


async def loop_and_thread():
    """Which loop and thread a coroutine runs on."""
    await asyncio.sleep(0)
    return id(asyncio.get_running_loop()), threading.get_ident()


async def whoami(pause=0.0):
    """The run a coroutine sees, before and after it yields to others."""
    before = psl.current_run()
    await asyncio.sleep(pause)
    after = psl.current_run()
    return ((before.task_id, before.run_number, before.attempt),
            (after.task_id, after.run_number, after.attempt))


class AsyncCallable:
    """An object whose ``__call__`` is a coroutine function."""

    def __init__(self, factor):
        self.factor = factor

    async def __call__(self, value):
        await asyncio.sleep(0)
        return value * self.factor


def returns_coroutine(a, b):
    """A plain function handing back a coroutine, as wrappers often do."""
    return add(a, b)


def returns_failing_coroutine():
    return fails()


async def fetch_page(url):
    await asyncio.sleep(0)
    return url


# --------------------------------------------------------------------- fixtures

@pytest.fixture(autouse=True)
def no_unawaited_coroutines():
    """Fail a test after which Python warns that a coroutine was never awaited."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
        gc.collect()
    unawaited = [str(w.message) for w in caught
                 if issubclass(w.category, RuntimeWarning) and "never awaited" in str(w.message)]
    assert unawaited == []


@pytest.fixture
def sched(no_leaked_threads):
    """A started scheduler, shut down (and its threads gone) after the test."""
    scheduler = psl.Scheduler()
    scheduler.start()
    yield scheduler
    scheduler.shutdown(wait=True, timeout=5)


def make_gate():
    """A threading.Event and a coroutine function that waits for it without
    blocking the loop (so it holds an async slot until released)."""
    gate = threading.Event()

    async def hold():
        while not gate.is_set():
            await asyncio.sleep(0.005)
        return "released"
    return gate, hold


# ------------------------------------------------------------------- the basics

def test_coroutine_function_runs_to_completion(sched):
    tid = sched.delay('once', 0, 1, add, args=(2, 3))
    assert sched.get_result(tid, timeout=10) == 5
    assert sched.get_status(tid) is Status.COMPLETED
    run = sched.runs(tid)[0]
    assert run.status is Status.COMPLETED and run.result == 5
    assert not asyncio.iscoroutine(sched.result[tid]['future'].result())


def test_the_caller_needs_no_event_loop(sched):
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()  # this test runs in plain synchronous code
    tid = sched.delay('once', 0, 1, add, args=(1, 1))
    assert sched.get_result(tid, timeout=10) == 2


def test_caller_inside_its_own_asyncio_run(no_leaked_threads):
    """A program already inside asyncio.run() schedules coroutines; they run
    on the scheduler's loop, not on the caller's (which is blocked here)."""
    async def main():
        own_loop = id(asyncio.get_running_loop())
        scheduler = psl.Scheduler()
        scheduler.start()
        try:
            tid = scheduler.delay('once', 0, 1, loop_and_thread)
            # a blocking wait: if the task needed this loop, it would never run
            loop_id, thread_id = scheduler.get_result(tid, timeout=10)
        finally:
            scheduler.shutdown(wait=True, timeout=5)
        return own_loop, loop_id, thread_id

    own_loop, loop_id, thread_id = asyncio.run(main())
    assert loop_id != own_loop
    assert thread_id != threading.get_ident()


def test_coroutines_share_one_long_lived_loop(sched):
    first = sched.delay('once', 0, 1, loop_and_thread)
    one = sched.get_result(first, timeout=10)
    second = sched.delay('once', 0, 1, loop_and_thread)
    two = sched.get_result(second, timeout=10)
    assert one == two


def test_exception_keeps_a_traceback_naming_the_coroutine_line(sched):
    failed = sched.subscribe([Kind.FAILED])
    tid = sched.delay('once', 0, 1, fails)
    with pytest.raises(LookupError, match="no such page"):
        sched.get_result(tid, timeout=10)
    assert sched.get_status(tid) is Status.ERROR
    run = sched.runs(tid)[0]
    assert run.status is Status.ERROR and isinstance(run.exception, LookupError)
    assert run.error == "LookupError: no such page"
    assert f'{__file__}", line {FAILS_LINE}, in fails' in run.traceback
    event = failed.get(timeout=10)
    assert event.task_id == tid and f"line {FAILS_LINE}, in fails" in event.traceback


def test_bad_arguments_to_a_coroutine_function_fail_the_run(sched):
    tid = sched.delay('once', 0, 1, add, args=(1,))  # b is missing
    with pytest.raises(TypeError, match="b"):
        sched.get_result(tid, timeout=10)
    assert sched.get_status(tid) is Status.ERROR


# ------------------------------------------------------------ timeouts, retries

def _sleeps_until_cancelled(cancelled: threading.Event):
    """A coroutine function that sleeps a minute and sets ``cancelled`` when
    it is cancelled, so a test can see the cancellation reach it."""
    async def waits_forever():
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise
    return waits_forever


def test_timeout_cancels_the_coroutine(sched):
    cancelled = threading.Event()
    waits_forever = _sleeps_until_cancelled(cancelled)
    timeouts = sched.subscribe([Kind.TIMEOUT])
    tid = sched.delay('once', 0, 1, waits_forever, timeout=0.2)
    with pytest.raises(TimeoutError):
        sched.get_result(tid, timeout=10)
    assert sched.get_status(tid) is Status.TIMEOUT
    assert sched.runs(tid)[0].status is Status.TIMEOUT
    wait_for(cancelled.is_set)
    assert timeouts.get(timeout=10).task_id == tid


def test_default_timeout_applies_to_coroutines(no_leaked_threads):
    cancelled = threading.Event()
    waits_forever = _sleeps_until_cancelled(cancelled)
    scheduler = psl.Scheduler(default_timeout=0.2)
    scheduler.start()
    try:
        tid = scheduler.delay('once', 0, 1, waits_forever)
        with pytest.raises(TimeoutError):
            scheduler.get_result(tid, timeout=10)
        wait_for(cancelled.is_set)
    finally:
        scheduler.shutdown(wait=True, timeout=5)


def test_a_coroutine_that_swallows_its_cancellation_still_timed_out(sched):
    async def stubborn():
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            return "I ignore cancellation"

    tid = sched.delay('once', 0, 1, stubborn, timeout=0.2)
    with pytest.raises(TimeoutError):
        sched.get_result(tid, timeout=10)
    assert sched.get_status(tid) is Status.TIMEOUT
    assert sched.runs(tid)[0].status is Status.TIMEOUT


def test_retries_until_the_coroutine_succeeds(sched):
    attempts = []

    async def flaky():
        attempts.append(psl.current_run().attempt)
        await asyncio.sleep(0)
        if len(attempts) < 3:
            raise ConnectionError(f"attempt {len(attempts)} failed")
        return "third time lucky"

    retried = sched.subscribe([Kind.RETRY])
    tid = sched.delay('once', 0, 1, flaky, retries=3, retry_delay=0.01)
    wait_for(lambda: sched.get_status(tid) is Status.COMPLETED)
    assert sched.get_result(tid, timeout=10) == "third time lucky"
    assert attempts == [1, 2, 3]
    runs = sched.runs(tid)
    assert [(r.attempt, r.status) for r in runs] == [
        (3, Status.COMPLETED), (2, Status.ERROR), (1, Status.ERROR)]
    assert len(pending_events(retried)) == 2


def test_a_timed_out_attempt_is_retried(sched):
    attempts = []

    async def slow_first():
        attempts.append(1)
        if len(attempts) == 1:
            await asyncio.sleep(60)
        return "second attempt"

    tid = sched.delay('once', 0, 1, slow_first, timeout=0.2, retries=1)
    wait_for(lambda: sched.get_status(tid) is Status.COMPLETED)
    assert sched.get_result(tid, timeout=10) == "second attempt"
    assert [(r.attempt, r.status) for r in sched.runs(tid)] == [
        (2, Status.COMPLETED), (1, Status.TIMEOUT)]


def test_retries_exhausted_end_in_error(sched):
    tid = sched.delay('once', 0, 1, fails, retries=2)
    wait_for(lambda: sched.get_status(tid) is Status.ERROR)
    with pytest.raises(LookupError):
        sched.get_result(tid, timeout=10)
    assert [r.attempt for r in sched.runs(tid)] == [3, 2, 1]


# ------------------------------------------------------------------ priorities

def test_urgent_coroutine_overtakes_queued_lax_ones(no_leaked_threads):
    gate, hold = make_gate()
    order = []

    async def record(tag):
        order.append(tag)
        await asyncio.sleep(0)

    scheduler = psl.Scheduler(max_async=1)
    scheduler.start()
    try:
        holder = scheduler.delay('once', 0, 1, hold)
        wait_for(lambda: scheduler.get_status(holder) is Status.RUNNING)
        queued = [scheduler.delay('once', 0, 5, record, args=(f"lax{i}",)) for i in range(3)]
        queued.append(scheduler.delay('once', 0, 1, record, args=("urgent",)))
        # all four are due and wait for the one async slot
        wait_for(lambda: all(scheduler.get_task(t)['next_run_time'] is None for t in queued))
        gate.set()
        wait_for(lambda: len(order) == 4)
        assert order == ["urgent", "lax0", "lax1", "lax2"]
    finally:
        gate.set()
        scheduler.shutdown(wait=True, timeout=5)


def test_max_async_bounds_coroutines_running_at_once(no_leaked_threads):
    gate = threading.Event()
    running, peak = [], []

    async def counted():
        running.append(1)
        peak.append(len(running))
        while not gate.is_set():
            await asyncio.sleep(0.005)
        running.pop()

    scheduler = psl.Scheduler(max_async=2)
    scheduler.start()
    try:
        tids = [scheduler.delay('once', 0, 1, counted) for _ in range(5)]
        wait_for(lambda: len(running) == 2)
        assert sum(scheduler.get_status(t) is Status.RUNNING for t in tids) == 2
        gate.set()
        wait_for(lambda: all(scheduler.get_status(t) is Status.COMPLETED for t in tids))
        assert max(peak) == 2
    finally:
        gate.set()
        scheduler.shutdown(wait=True, timeout=5)


# ------------------------------------------------------- what counts as async

def test_partial_of_a_coroutine_function(sched):
    tid = sched.delay('once', 0, 1, functools.partial(add, 10), args=(5,))
    assert sched.get_result(tid, timeout=10) == 15
    nested = sched.delay('once', 0, 1, functools.partial(functools.partial(add, 1), 2))
    assert sched.get_result(nested, timeout=10) == 3


def test_object_with_async_call(sched):
    tid = sched.delay('once', 0, 1, AsyncCallable(3), args=(7,))
    assert sched.get_result(tid, timeout=10) == 21


def test_bound_async_method(sched):
    class Client:
        async def get(self, path):
            await asyncio.sleep(0)
            return f"GET {path}"

    tid = sched.delay('once', 0, 1, Client().get, args=("/health",))
    assert sched.get_result(tid, timeout=10) == "GET /health"


@pytest.mark.parametrize("executor", [None, InlineExecutor],
                         ids=["default pool", "another concurrent.futures executor"])
def test_plain_function_returning_a_coroutine_is_awaited(executor, no_leaked_threads):
    scheduler = psl.Scheduler(executor=executor() if executor else None)
    scheduler.start()
    try:
        tid = scheduler.delay('once', 0, 1, returns_coroutine, args=(20, 22))
        result = scheduler.get_result(tid, timeout=10)
        if asyncio.iscoroutine(result):
            result.close()  # keep the warning of this failure out of later tests
            pytest.fail(f"the run's result is the coroutine itself: {result!r}")
        assert result == 42
        bad = scheduler.delay('once', 0, 1, returns_failing_coroutine)
        with pytest.raises(LookupError, match="no such page"):
            scheduler.get_result(bad, timeout=10)
        assert scheduler.get_status(bad) is Status.ERROR
    finally:
        scheduler.shutdown(wait=True, timeout=5)


def test_current_run_inside_a_coroutine(sched):
    tid = sched.delay('once', 0, 1, whoami, task_id='who')
    before, after = sched.get_result(tid, timeout=10)
    assert before == after == ('who', 1, 1)


def test_interleaved_coroutines_each_see_their_own_run(sched):
    # both are suspended in their sleep at the same time
    a = sched.delay('once', 0, 1, whoami, args=(0.05,), task_id='a')
    b = sched.delay('once', 0, 1, whoami, args=(0.05,), task_id='b')
    assert sched.get_result(a, timeout=10) == (('a', 1, 1), ('a', 1, 1))
    assert sched.get_result(b, timeout=10) == (('b', 1, 1), ('b', 1, 1))
    assert psl.current_run() is None


# ------------------------------------------------------------ schedules, store

def test_recurring_coroutine(sched):
    seen = []

    async def tick():
        await asyncio.sleep(0)
        seen.append(psl.current_run().run_number)

    tid = sched.delay('recur', 0.05, 1, tick)
    wait_for(lambda: len(seen) >= 3)
    sched.cancel(tid)
    assert seen[:3] == [1, 2, 3]
    runs = sched.runs(tid)
    assert len(runs) >= 3
    assert all(r.status is Status.COMPLETED for r in runs)
    assert [r.run_number for r in runs] == sorted((r.run_number for r in runs), reverse=True)


def test_coroutine_depending_on_a_thread_task(sched):
    gate = threading.Event()
    first = sched.delay('once', 0, 1, gate.wait, args=(10,))
    second = sched.delay('once', 0, 1, add, args=(1, 2), depend_on=first)
    assert sched.get_status(second) is Status.SUSPENDED
    gate.set()
    assert sched.get_result(second, timeout=10) == 3


def test_async_tasks_with_a_sqlite_store(tmp_path, no_leaked_threads):
    url = f"sqlite:///{tmp_path}/jobs.db"
    scheduler = psl.Scheduler(store=url)
    scheduler.start()
    try:
        ok = scheduler.delay('once', 0, 1, add, args=(2, 3), task_id='async-add')
        bad = scheduler.delay('once', 0, 1, fails, task_id='async-fails')
        assert scheduler.get_result(ok, timeout=10) == 5
        with pytest.raises(LookupError):
            scheduler.get_result(bad, timeout=10)
        assert scheduler.get_task(ok)['stored_as'] == 'import'
        run = scheduler.runs(ok)[0]
        assert isinstance(run, psl.Run) and run.status is Status.COMPLETED and run.result == 5
        failed = scheduler.runs(bad)[0]
        assert failed.status is Status.ERROR and f"line {FAILS_LINE}, in fails" in failed.traceback
    finally:
        scheduler.shutdown(wait=True, timeout=5)

    rows = open_store(url).runs('async-add')
    assert [(r['status'], r['result']) for r in rows] == [(int(Status.COMPLETED), '5')]

    again = psl.Scheduler(store=url)
    again.start()
    try:
        again.delay('once', 0, 1, add, args=(2, 3), task_id='async-add')
        assert again.get_result('async-add', timeout=10) == 5
        assert len(again.runs('async-add')) == 1
    finally:
        again.shutdown(wait=True, timeout=5)


# ------------------------------------------------------------------ refusals

@pytest.mark.parametrize("fn, args, named", [
    (fetch_page, ("https://example.org",), "fetch_page"),
    (functools.partial(fetch_page, "https://example.org"), (), "fetch_page"),
    (AsyncCallable(2), (1,), "AsyncCallable"),
], ids=["async def", "partial", "async __call__"])
def test_hard_coroutine_function_is_refused_at_delay(sched, fn, args, named):
    with pytest.raises(TypeError, match=named):
        sched.delay('once', 0, 1, fn, args=args, hard=True, task_id='refused')
    assert 'refused' not in sched.task
    with pytest.raises(KeyError):
        sched.get_task('refused')


def test_async_generator_function_is_refused_at_delay(sched):
    """Calling it makes an async generator, not a coroutine: there is nothing
    to run to completion, so it cannot be a task (it must not "complete"
    with the generator object as its result)."""
    async def poll_feed():
        yield "item"

    with pytest.raises(TypeError, match="poll_feed"):
        sched.delay('once', 0, 1, poll_feed, task_id='feed')
    assert 'feed' not in sched.task


def test_hard_coroutine_function_is_refused_by_the_task_decorator(sched):
    @psl.task(sched, 'once', 0, 1, hard=True)
    async def crawl():
        return None

    with pytest.raises(TypeError, match="crawl"):
        crawl.delay()
    assert dict(sched.task) == {}


# --------------------------------------------------- cancel, shutdown, leftovers

def test_cancel_a_queued_coroutine(no_leaked_threads):
    gate, hold = make_gate()
    ran = []

    async def never():
        ran.append(1)

    scheduler = psl.Scheduler(max_async=1)
    scheduler.start()
    try:
        holder = scheduler.delay('once', 0, 1, hold)
        wait_for(lambda: scheduler.get_status(holder) is Status.RUNNING)
        queued = scheduler.delay('once', 0, 1, never)
        wait_for(lambda: scheduler.get_task(queued)['next_run_time'] is None)
        scheduler.cancel(queued)
        assert scheduler.get_status(queued) is Status.CANCELED
        gate.set()
        assert scheduler.get_result(holder, timeout=10) == "released"
    finally:
        gate.set()
        scheduler.shutdown(wait=True, timeout=5)
    assert ran == []


def test_shutdown_timeout_cancels_running_coroutines(no_leaked_threads):
    cancelled = threading.Event()
    long_job = _sleeps_until_cancelled(cancelled)
    async def waiting():
        return "never started"

    scheduler = psl.Scheduler(max_async=1)
    scheduler.start()
    tid = scheduler.delay('once', 0, 1, long_job)
    wait_for(lambda: scheduler.get_status(tid) is Status.RUNNING)
    queued = [scheduler.delay('once', 0, 2, waiting) for _ in range(3)]
    scheduler.shutdown(wait=True, timeout=0.2)
    assert cancelled.is_set()
    assert scheduler.get_status(tid) is Status.INTERRUPTED  # (its own timeout never passed)
    for q in queued:  # never started: they will not run
        with pytest.raises(concurrent.futures.CancelledError):
            scheduler.get_result(q, timeout=5)


def test_coroutine_scheduled_but_never_started(no_leaked_threads):
    scheduler = psl.Scheduler()
    scheduler.delay('once', 0, 1, add, args=(1, 2))
    scheduler.delay('recur', 60, 1, fetch_page, args=("u",))
    scheduler.shutdown(wait=True)


def test_event_loop_thread_is_gone_after_shutdown(no_leaked_threads):
    scheduler = psl.Scheduler()
    scheduler.start()
    tid = scheduler.delay('once', 0, 1, loop_and_thread)
    _, loop_thread = scheduler.get_result(tid, timeout=10)
    assert any(t.ident == loop_thread for t in threading.enumerate())
    scheduler.shutdown(wait=True)
    assert not any(t.ident == loop_thread and t.is_alive() for t in threading.enumerate())


# --------------------------------------------------- a coroutine that is cancelled

async def awaits_a_cancelled_task():
    """Awaits a task that something else cancels, as code using
    ``asyncio.wait_for`` or a task group may: it raises
    ``asyncio.CancelledError``."""
    inner = asyncio.ensure_future(asyncio.sleep(3600))
    await asyncio.sleep(0)
    inner.cancel()
    await inner


def test_a_coroutine_ended_by_asyncio_cancellation_is_canceled_not_an_error(sched):
    """The coroutine runner caught ``concurrent.futures.CancelledError``,
    which asyncio's is not (it is a BaseException since Python 3.8): a
    cancelled coroutine ended as ERROR, and get_result() raised asyncio's
    CancelledError, a BaseException that ``except Exception`` does not
    catch (and which an async caller takes for its own cancellation). It
    ends CANCELED, and get_result() raises concurrent.futures'
    CancelledError, as for any canceled run."""
    tid = sched.delay('once', 0, 1, awaits_a_cancelled_task)
    with pytest.raises(BaseException) as raised:
        sched.get_result(tid, timeout=10)
    assert sched.get_status(tid) is Status.CANCELED
    assert type(raised.value) is concurrent.futures.CancelledError
