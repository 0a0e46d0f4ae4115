"""Shared test helpers: a virtual clock, an inline executor, condition waits."""
from __future__ import annotations

import concurrent.futures
import os
import tempfile
import threading
import time

import pytest
from hypothesis.configuration import set_hypothesis_home_dir

# Hypothesis keeps files of its own (a cache of constants) in its home
# directory, ``.hypothesis/`` in the working directory by default: never in
# the repository, whichever test files run. (The tests that search keep no
# example database: ``database=None``.)
set_hypothesis_home_dir(os.path.join(tempfile.gettempdir(), "psl-hypothesis"))


class VirtualClock:
    """``timefunc``/``delayfunc`` pair: sleeping advances virtual time at once."""

    def __init__(self, start: float = 1000.0) -> None:
        self._lock = threading.Lock()
        self.t = start
        self.slept = []

    def now(self) -> float:
        with self._lock:
            return self.t

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.slept.append(seconds)
            self.t += seconds
        time.sleep(0)  # let workers run between virtual steps

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.t += seconds


class HeldClock:
    """A virtual clock that stops at a limit the test moves (``run_until``):
    the dispatcher cannot run ahead of the test. (As conftest's
    ``VirtualClock``, sleeping advances virtual time at once, up to the limit.)"""

    def __init__(self, start=1000.0):
        self._lock = threading.Lock()
        self.t = self.limit = start

    def now(self):
        with self._lock:
            return self.t

    def sleep(self, seconds):
        with self._lock:
            step = max(0.0, min(seconds, self.limit - self.t))
            self.t += step
        time.sleep(0 if step else 0.001)  # at the limit: wait for the test

    def run_until(self, limit):
        with self._lock:
            self.limit = limit

    def advance(self, seconds):
        """Time jumps (a stall): the limit moves with it."""
        with self._lock:
            self.t += seconds
            self.limit = max(self.limit, self.t)


class InlineExecutor(concurrent.futures.Executor):
    """Runs each submitted call at once in the submitting thread."""

    _max_workers = 1

    def submit(self, fn, *args, **kwargs):
        future = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future


def virtual(clock, executor=None, **kwargs):
    """A scheduler on the virtual clock; runs execute inline unless told
    otherwise. Its wall clock follows the real one, shifted by the virtual
    time; ``wallfunc=clock.now`` makes it the virtual clock itself (then
    ``secs(run.started)`` is a virtual time)."""
    import pysched_lightning as psl
    return psl.Scheduler(executor=executor or InlineExecutor(), timefunc=clock.now,
                         delayfunc=clock.sleep, **kwargs)


def secs(moment):
    """A run's time (an aware datetime) as POSIX seconds."""
    return None if moment is None else moment.timestamp()


def pending_events(events):
    """Everything a subscription queue holds right now."""
    import queue
    got = []
    while True:
        try:
            got.append(events.get_nowait())
        except queue.Empty:
            return got


def process_gone(process) -> bool:
    """*process* (a pid or a ``psutil.Process``) has ended: gone, or a
    zombie whose exit status alone is left."""
    import psutil
    try:
        if not isinstance(process, psutil.Process):
            process = psutil.Process(process)
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.005):
    """Wait until predicate() is truthy, or fail after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {predicate}")
        time.sleep(interval)


def messages_of_a_failing_run(caplog, level, fn, raises, until, **options):
    """Run *fn* (which raises *raises*) once, due now, on a real scheduler
    with *options*; return its task id and the log messages at *level* once
    one of them contains *until*."""
    import logging
    import pysched_lightning as psl
    caplog.set_level(getattr(logging, level), logger="pysched_lightning")
    sched = psl.Scheduler()
    sched.start()
    try:
        tid = sched.delay("once", 0, 1, fn, **options)
        with pytest.raises(raises):
            sched.get_result(tid, timeout=10)
        wait_for(lambda: any(until in m for m in caplog.messages))
    finally:
        sched.shutdown()
    return tid, caplog.messages


#: The modules whose tests run longest (the searching tests, the nodes, the
#: documentation's examples): collected first, so that the workers of
#: pytest-xdist start on them and the run ends on short tests, not on one
#: long test while the other workers idle.
_LONG_FIRST = frozenset({"test_faults.py", "test_model.py", "test_torture.py",
                         "test_cluster.py", "test_docs.py"})


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: item.path.name not in _LONG_FIRST)  # (stable: order kept)


def pytest_addoption(parser):
    parser.addoption("--torture-seconds", type=float, default=300.0,
                     help="how long each long run of a searching test (-m torture) goes on")


@pytest.fixture
def torture_seconds(request):
    """How long a test marked ``torture`` searches (``--torture-seconds``)."""
    return request.config.getoption("--torture-seconds")


@pytest.fixture
def clock():
    return VirtualClock()


@pytest.fixture
def no_leaked_threads():
    """Fail if a test leaves threads (other than loky's trackers) behind."""
    before = set(threading.enumerate())
    yield
    def extra():
        return [t for t in threading.enumerate()
                if t not in before and t.is_alive()
                and "QueueFeederThread" not in t.name]
    deadline = time.monotonic() + 5
    while extra() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert extra() == []


@pytest.fixture
def postgres_url(request):
    """The URL of an empty PostgreSQL database for this test alone, dropped
    after it (a fresh database costs ~50 ms; nodes in other processes may
    share it through the URL)."""
    from services import create_database, drop_database, require_postgres
    admin = require_postgres()
    name = f"psl_test_{os.getpid()}_{os.urandom(4).hex()}"
    url = create_database(admin, name)
    try:
        yield url
    finally:
        drop_database(admin, name)


@pytest.fixture
def unwritable_folder(tmp_path):
    """A folder in which this process may make no file: read-only
    permissions, or, for root (whom permissions do not stop), the immutable
    attribute (chattr +i)."""
    import subprocess
    from services import missing
    folder = tmp_path / "read-only"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    try:
        done = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, text=True)
    except FileNotFoundError:
        missing("running as root, whom permissions do not stop, without chattr")
    if done.returncode != 0:
        missing(f"running as root, whom permissions do not stop, and chattr +i is "
                f"refused here: {done.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
