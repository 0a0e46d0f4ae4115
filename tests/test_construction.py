"""Bad ``Scheduler(...)`` arguments are refused at construction, naming the
value, and leave nothing behind: no thread, no open store, no store lock.
Good ones still work."""
from __future__ import annotations

import concurrent.futures
import re
import threading

import psutil
import pytest

import pysched_lightning as psl
from pysched_lightning.durability.stores import open_store
from conftest import wait_for

pytestmark = pytest.mark.usefixtures("no_leaked_threads")

# (argument, value, exception): a value of the wrong kind is a TypeError, one
# of the right kind but out of range a ValueError; bools and non-integral
# counts may be either.
EITHER = (TypeError, ValueError)
BAD = [
    ("executor", "threads", TypeError),
    ("executor", psl.ThreadPoolExecutor, TypeError),             # the class, not a pool
    ("executor", concurrent.futures.ThreadPoolExecutor, TypeError),
    ("process_executor", 1, TypeError),
    ("process_executor", psl.ProcessPoolExecutor, TypeError),
    ("history", 0, ValueError),
    ("history", -1, ValueError),
    ("history", True, EITHER),
    ("history", 2.5, EITHER),
    ("history", None, EITHER),
    ("max_async", 0, ValueError),
    ("max_async", -3, ValueError),
    ("max_async", "10", EITHER),
    ("default_timeout", -1, ValueError),
    ("default_timeout", 0, ValueError),
    ("default_timeout", float("nan"), ValueError),
    ("default_timeout", "x", TypeError),
    ("timefunc", None, TypeError),
    ("timefunc", "monotonic", TypeError),
    ("delayfunc", 1, TypeError),
    ("wallfunc", "now", TypeError),
    ("store", 5, TypeError),
    ("store", object(), TypeError),
    ("store", "redis://x", ValueError),
    ("store", "", ValueError),
    ("run_log", 5, TypeError),
    ("run_log", "", ValueError),
]


def ident(case):
    name, value, _ = case
    shown = repr(value) if type(value).__repr__ is not object.__repr__ else type(value).__name__
    return f"{name}={shown}"  # (no address: the same id in every process)


def threads():
    return {t for t in threading.enumerate() if t.is_alive()}


def open_files_under(directory):
    return sorted(f.path for f in psutil.Process().open_files()
                  if f.path.startswith(str(directory)))


def answer():
    return 42


def assert_store_is_free(db):
    """No scheduler holds *db*: a reader sees no holder, and a new scheduler
    takes the store at once (it runs a task rather than waiting as a standby)."""
    assert open_store(db).holder() is None
    second = psl.Scheduler(store=db)
    try:
        assert second.store.holder() is not None
        second.start()
        tid = second.delay('once', 0, 1, answer)
        assert second.get_result(tid, timeout=5) == 42
    finally:
        second.shutdown()


@pytest.mark.parametrize("case", BAD, ids=[ident(c) for c in BAD])
def test_bad_argument_is_refused_and_leaves_nothing(case, tmp_path):
    name, value, error = case
    db = str(tmp_path / "jobs.db")
    kwargs = {name: value}
    if name != "store":
        kwargs["store"] = db  # a store that must not stay locked
    before = threads()
    with pytest.raises(error) as info:
        psl.Scheduler(**kwargs)
    message = str(info.value)
    assert name in message
    if value != "":
        assert repr(value) in message or str(value) in message
    # while the traceback (and so the half-made scheduler) is still alive
    assert threads() == before
    assert open_files_under(tmp_path) == []
    assert_store_is_free(db)


def test_unusable_store_path_is_refused_naming_it(tmp_path):
    directory = tmp_path / "a-directory"
    directory.mkdir()
    with pytest.raises(Exception) as info:  # whichever, as long as it says which file
        psl.Scheduler(store=str(directory))
    assert str(directory) in str(info.value)


def test_unusable_run_log_is_refused_before_the_store_is_opened(tmp_path):
    db = str(tmp_path / "jobs.db")
    directory = tmp_path / "logs"
    directory.mkdir()
    before = threads()
    with pytest.raises((OSError, ValueError)) as info:
        psl.Scheduler(store=db, run_log=str(directory))  # a directory, not a file
    assert str(directory) in str(info.value)
    assert threads() == before
    assert open_files_under(tmp_path) == []
    assert_store_is_free(db)


@pytest.mark.parametrize("which", ["store path", "store URL", "run_log"])
def test_a_missing_folder_is_refused_naming_it_and_nothing_is_made(which, tmp_path):
    """A typo in a path must not create folders (nor the other file)."""
    folder = tmp_path / "no" / "such"
    kwargs = {"store": str(tmp_path / "jobs.db"), "run_log": str(tmp_path / "runs.log")}
    kwargs.update({"store path": {"store": str(folder / "jobs.db")},
                   "store URL": {"store": f"sqlite:///{folder}/jobs.db"},
                   "run_log": {"run_log": str(folder / "runs.log")}}[which])
    before = threads()
    with pytest.raises(FileNotFoundError, match=re.escape(repr(str(folder)))):
        psl.Scheduler(**kwargs)
    assert threads() == before
    assert list(tmp_path.iterdir()) == []


def test_timefunc_that_gives_no_number_is_refused_naming_it(tmp_path):
    def broken_clock():
        return "noon"

    with pytest.raises((TypeError, ValueError)) as info:
        psl.Scheduler(timefunc=broken_clock, store=str(tmp_path / "jobs.db"))
    assert "timefunc" in str(info.value)
    assert "'noon'" in str(info.value)
    assert_store_is_free(str(tmp_path / "jobs.db"))


def test_bad_arguments_after_good_ones_do_not_shut_the_given_executor(tmp_path):
    pool = concurrent.futures.ThreadPoolExecutor(1)
    try:
        with pytest.raises(ValueError):
            psl.Scheduler(executor=pool, history=0)
        assert pool.submit(answer).result(timeout=5) == 42
    finally:
        pool.shutdown()


# ------------------------------------------------------------- good arguments

class ListLog:
    """A run log object: anything with write(record)."""

    def __init__(self):
        self.records = []
        self.lock = threading.Lock()

    def write(self, record):
        with self.lock:
            self.records.append(dict(record))


def test_good_arguments_still_work(tmp_path):
    pool = concurrent.futures.ThreadPoolExecutor(2)
    db = tmp_path / "jobs.db"
    log = ListLog()
    sched = psl.Scheduler(executor=pool, store=db, run_log=log, history=1, max_async=1,
                          default_timeout=30)
    try:
        sched.start()
        tid = sched.delay('once', 0, 1, answer, task_id='answer')
        assert sched.get_result(tid, timeout=10) == 42
        assert [r.id for r in open_store(str(db)).load_tasks()] == ['answer']
        wait_for(lambda: log.records)
        assert [(r['task_id'], r['status']) for r in log.records] == [('answer', 'Completed')]
    finally:
        sched.shutdown()
    # the scheduler shuts down the executor it was given, as upstream did
    with pytest.raises(RuntimeError):
        pool.submit(answer)


@pytest.mark.parametrize("spelling", ["memory", "sqlite relative", "sqlite absolute",
                                      "str path", "pathlib path"])
def test_store_spellings(spelling, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec, used = {  # the file actually used: absolute, whatever the spelling
        "memory": ("memory://", None),
        "sqlite relative": ("sqlite:///a.db", tmp_path / "a.db"),
        "sqlite absolute": (f"sqlite:///{tmp_path}/b.db", tmp_path / "b.db"),  # four slashes
        "str path": (str(tmp_path / "c.db"), tmp_path / "c.db"),
        "pathlib path": (tmp_path / "d.db", tmp_path / "d.db"),
    }[spelling]
    sched = psl.Scheduler(store=spec)
    try:
        sched.start()
        tid = sched.delay('once', 0, 1, answer, task_id='answer')
        assert sched.get_result(tid, timeout=10) == 42
        assert [r.id for r in sched.store.load_tasks()] == ['answer']
        assert getattr(sched.store, "path", None) == (used and str(used))
    finally:
        sched.shutdown()
    if spelling != "memory":
        assert len(list(tmp_path.glob("*.db"))) == 1
