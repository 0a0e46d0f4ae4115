"""Stores: the protocol's behaviour on both stores, then SQLite's file, lock
and crash guarantees with real files and real processes."""
from __future__ import annotations

import linecache
import os
import pathlib
import queue
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from pysched_lightning.runs import TaskStatus
from pysched_lightning.stores import (RUN_FIELDS, MemoryStore, SQLiteStore, Store,
                                      StoreLockedError, TaskRecord, open_store)
from conftest import wait_for

ROOT = pathlib.Path(__file__).resolve().parents[1]
INTERRUPTED = "interrupted: the scheduler process stopped during this run"


@pytest.fixture(params=["memory", "sqlite"])
def store(request, tmp_path):
    made = MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "jobs.db")
    yield made
    made.close()


@pytest.fixture
def other(store, tmp_path):
    """A second contender for *store*'s hold: the same MemoryStore object, or
    a second SQLiteStore object on the same file."""
    if isinstance(store, MemoryStore):
        yield store
    else:
        second = SQLiteStore(store.path)
        yield second
        second.close()


def record(task_id="t1", **changes):
    """A TaskRecord with every field set to something other than its default."""
    fields = dict(id=task_id, name=f"name of {task_id}", trigger="recur", interval="[3, 4]",
                  priority=2.5, fn_ref=None, fn_pickle=b"\x80\x05fn\x00", args=b"\x80args",
                  kwargs=b"\x80kwargs", options=b"\x80options", schedule=b"\x80trigger",
                  next_run=1_700_000_000.25, paused=True, runs=7, missed=2,
                  status=int(TaskStatus.ERROR), created=1_600_000_000.5,
                  updated=1_650_000_000.75)
    fields.update(changes)
    return TaskRecord(**fields)


def finished(task_id="t1", scheduled=100.0, attempt=0, **changes):
    """A complete run record, as the scheduler passes it to finish_run."""
    run = dict(task_id=task_id, name=f"name of {task_id}", run=1, attempt=attempt,
               status=TaskStatus.COMPLETED, scheduled=scheduled, started=scheduled + 1,
               finished=scheduled + 3, duration=2.0, exit_code=0, result="'done'",
               error=None, traceback=None, output="out tail", stderr="err tail")
    run.update(changes)
    return run


def keys(runs):
    return [(r["task_id"], r["scheduled"], r["attempt"]) for r in runs]


# -- the protocol, on both stores ------------------------------------------

def test_both_stores_satisfy_the_protocol(store):
    assert isinstance(store, Store)
    assert open_store(store) is store


def test_save_and_load_round_trip_every_field(store):
    pickled = record("p")
    imported = record("i", fn_ref="jobs:report", fn_pickle=None, schedule=None,
                      next_run=None, paused=False, created=1_600_000_001.0)
    store.save_task(pickled)
    store.save_task(imported)
    loaded = store.load_tasks()
    assert loaded == [pickled, imported]  # every field; oldest created first
    assert [r.stored_as for r in loaded] == ["pickle", "import"]
    assert type(loaded[0].paused) is bool and type(loaded[0].priority) is float
    assert all(type(r.status) is int and type(r.runs) is int for r in loaded)


def test_save_task_replaces_and_load_returns_copies(store):
    store.save_task(record(priority=1))
    store.save_task(record(priority=9, name="renamed"))
    [loaded] = store.load_tasks()
    assert (loaded.priority, loaded.name) == (9.0, "renamed")
    loaded.name = "changed in memory only"
    assert store.load_tasks()[0].name == "renamed"


def test_update_task_changes_only_the_given_fields(store):
    store.save_task(record())
    store.update_task("t1", next_run=1234.5, runs=8, missed=3, status=TaskStatus.COMPLETED,
                      paused=False, updated=1_700_000_001.0)
    assert store.load_tasks() == [record(next_run=1234.5, runs=8, missed=3, status=0,
                                         paused=False, updated=1_700_000_001.0)]
    store.update_task("t1", next_run=None)
    assert store.load_tasks()[0].next_run is None
    store.update_task("unknown", runs=1)  # a task canceled meanwhile: nothing happens
    assert [r.id for r in store.load_tasks()] == ["t1"]
    with pytest.raises(TypeError, match="'colour'"):
        store.update_task("t1", colour="red")
    with pytest.raises(TypeError, match="'id'"):
        store.update_task("t1", id="t2")


def test_remove_task_keeps_its_run_history(store):
    store.save_task(record("t1"))
    store.save_task(record("t2"))
    store.finish_run(finished("t1"))
    store.remove_task("t1")
    store.remove_task("never there")
    assert [r.id for r in store.load_tasks()] == ["t2"]
    assert keys(store.runs()) == [("t1", 100.0, 0)]


def test_claim_run_is_refused_for_a_key_claimed_already(store):
    assert store.claim_run("t1", 100.0, 0, 1, "job") is True
    assert store.claim_run("t1", 100, 0, 1, "job") is False      # 100 == 100.0
    assert store.claim_run("t1", 100.0, 1, 1, "job") is True     # a retry: next attempt
    assert store.claim_run("t1", 100.5, 0, 2, "job") is True     # the next scheduled time
    assert store.claim_run("t2", 100.0, 0, 1, "other") is True   # another task
    before = time.time()
    [claimed] = store.runs("t2")
    assert claimed["status"] == TaskStatus.RUNNING
    assert (claimed["name"], claimed["run"], claimed["finished"]) == ("other", 1, None)
    assert claimed["started"] <= before


def test_claim_run_from_many_threads_claims_each_key_once(store):
    claimed = []
    start = threading.Barrier(4)

    def contend():
        start.wait()
        claimed.extend(k for k in range(200) if store.claim_run("t", float(k), 0, k, "t"))

    threads = [threading.Thread(target=contend) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == list(range(200))
    assert len(store.runs()) == 200


def test_finish_run_completes_the_claimed_run(store):
    store.claim_run("t1", 100.0, 0, 1, "name of t1")
    claimed_start = store.runs()[0]["started"]
    store.finish_run(finished(status=TaskStatus.ERROR, exit_code=3, result=None,
                              error="ValueError: bad", traceback="Traceback...\n"))
    [run] = store.runs()
    assert run == finished(status=1, exit_code=3, result=None, error="ValueError: bad",
                           traceback="Traceback...\n")
    assert type(run["status"]) is int and type(run["scheduled"]) is float
    assert list(run) == list(RUN_FIELDS)
    # A record without name/run/started keeps what the claim recorded.
    store.claim_run("t1", 200.0, 0, 2, "name of t1")
    claimed_start = store.runs(limit=1)[0]["started"]
    store.finish_run(dict(task_id="t1", scheduled=200, attempt=0, status=TaskStatus.TIMEOUT))
    latest = store.runs(limit=1)[0]
    assert (latest["name"], latest["run"], latest["started"], latest["status"]) == \
        ("name of t1", 2, claimed_start, 5)
    assert len(store.runs()) == 2


def test_finish_run_inserts_an_unclaimed_run(store):
    store.finish_run(finished(scheduled=100, status=TaskStatus.CANCELED, extra="ignored"))
    assert store.runs() == [finished(status=4)]
    assert store.claim_run("t1", 100.0, 0, 1, "x") is False
    with pytest.raises(KeyError, match="attempt"):
        store.finish_run({"task_id": "t1", "scheduled": 1.0})


def test_runs_newest_first_with_limit_and_task_filter(store):
    for task_id, scheduled, attempt in [("a", 10.0, 0), ("b", 30.0, 0), ("a", 20.0, 0),
                                        ("a", 20.0, 1), ("b", 5.0, 0)]:
        store.finish_run(finished(task_id, scheduled, attempt))
    everything = [("b", 30.0, 0), ("a", 20.0, 1), ("a", 20.0, 0), ("a", 10.0, 0), ("b", 5.0, 0)]
    assert keys(store.runs()) == everything  # same scheduled time: the later insert first
    assert keys(store.runs(limit=2)) == everything[:2]
    assert keys(store.runs("a")) == [k for k in everything if k[0] == "a"]
    assert keys(store.runs("a", limit=1)) == [("a", 20.0, 1)]
    assert store.runs(limit=0) == [] and store.runs("nobody") == []
    with pytest.raises(ValueError, match="-1"):
        store.runs(limit=-1)


def test_purge_runs_deletes_runs_over_before_the_time(store):
    store.finish_run(finished("old", 10.0, finished=50.0))
    store.finish_run(finished("new", 10.0, finished=150.0))
    store.claim_run("died", 20.0, 0, 1, "died")
    store.mark_interrupted()
    store.claim_run("running", 10.0, 0, 1, "running")  # still running: kept
    store.finish_run(dict(task_id="never started", scheduled=30.0, attempt=0, status=4))
    assert store.purge_runs(100.0) == 2  # old; never started (no times but scheduled 30)
    assert sorted(r["task_id"] for r in store.runs()) == ["died", "new", "running"]
    assert store.purge_runs(100.0) == 0
    # An interrupted run has no finished time: it ended when it was claimed.
    assert store.purge_runs(time.time() + 1) == 2
    assert [r["task_id"] for r in store.runs()] == ["running"]


def test_clear_deletes_every_task_and_run(store):
    store.save_task(record("t1"))
    store.save_task(record("t2"))
    store.claim_run("t1", 1.0, 0, 1, "t1")
    store.finish_run(finished("t2"))
    store.clear()
    assert store.load_tasks() == [] and store.runs() == []
    store.save_task(record("t3"))  # still usable
    assert [r.id for r in store.load_tasks()] == ["t3"]


def test_batch_commits_together(store):
    with store.batch():
        store.save_task(record("t1"))
        store.claim_run("t1", 1.0, 0, 1, "t1")
        with store.batch():  # nested: joins the outer transaction
            store.update_task("t1", runs=8)
    assert store.load_tasks()[0].runs == 8
    assert len(store.runs()) == 1


def test_batch_is_atomic_on_an_exception(store):
    store.save_task(record("kept", runs=1))
    store.finish_run(finished("kept", 1.0))
    with pytest.raises(RuntimeError, match="boom"):
        with store.batch():
            store.save_task(record("new"))
            store.update_task("kept", runs=99)
            store.remove_task("kept")
            store.claim_run("new", 1.0, 0, 1, "new")
            store.finish_run(finished("kept", 1.0, status=1))
            store.purge_runs(1e12)
            store.mark_interrupted()
            store.clear()
            store.save_task(record("after clear"))
            raise RuntimeError("boom")
    assert store.load_tasks() == [record("kept", runs=1)]
    assert store.runs() == [finished("kept", 1.0)]


def test_nested_batch_failing_alone_rolls_back_only_its_part(store):
    with store.batch():
        store.save_task(record("outer"))
        with pytest.raises(KeyError):
            with store.batch():
                store.save_task(record("inner"))
                raise KeyError("inner fails")
        store.update_task("outer", runs=3)
    assert [(r.id, r.runs) for r in store.load_tasks()] == [("outer", 3)]


def test_a_batch_excludes_other_threads_until_it_ends(store):
    entered, written = threading.Event(), threading.Event()

    def write_meanwhile():
        entered.wait()
        store.save_task(record("from another thread"))
        written.set()

    def blocked_in_save_task():
        frame = sys._current_frames().get(writer.ident)
        return (frame is not None and frame.f_code.co_name == "save_task"
                and linecache.getline(frame.f_code.co_filename, frame.f_lineno)
                .strip().startswith("with"))

    writer = threading.Thread(target=write_meanwhile)
    writer.start()
    with pytest.raises(RuntimeError):
        with store.batch():
            store.save_task(record("in the batch"))
            entered.set()
            wait_for(blocked_in_save_task)  # waits for the batch, not rolled back with it
            assert not written.is_set()
            raise RuntimeError("roll back")
    writer.join(5)
    assert [r.id for r in store.load_tasks()] == ["from another thread"]


def test_stores_are_safe_from_many_threads(store):
    def work(n):
        for i in range(30):
            task_id = f"w{n}-{i}"
            if i % 2:
                with store.batch():
                    store.save_task(record(task_id))
                    store.claim_run(task_id, float(i), 0, i, task_id)
            else:
                store.save_task(record(task_id))
                store.claim_run(task_id, float(i), 0, i, task_id)
            store.update_task(task_id, runs=i)
            store.finish_run(finished(task_id, float(i)))
            store.runs(task_id)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.load_tasks()) == 120
    assert len(store.runs()) == 120
    assert all(r["status"] == 0 for r in store.runs())


def test_mark_interrupted_turns_running_runs_into_errors(store):
    store.claim_run("t1", 1.0, 0, 1, "t1")
    store.claim_run("t2", 2.0, 0, 1, "t2")
    store.finish_run(finished("t2", 2.0))
    assert store.mark_interrupted() == 1
    interrupted = store.runs("t1")[0]
    assert (interrupted["status"], interrupted["error"]) == (TaskStatus.ERROR, INTERRUPTED)
    assert store.runs("t2")[0]["status"] == TaskStatus.COMPLETED
    assert store.mark_interrupted() == 0


def test_acquire_holder_release(store, other):
    assert store.holder() is None
    assert store.acquire("scheduler-1") is True
    assert store.holder() == other.holder() == "scheduler-1"
    assert other.acquire("scheduler-2") is False      # not reentrant, not shared
    assert store.acquire("scheduler-1 again") is False
    store.release()
    assert store.holder() is None and other.holder() is None
    assert other.acquire("scheduler-2") is True
    assert store.holder() == "scheduler-2"
    other.release()
    other.release()  # releasing twice is fine
    with pytest.raises(TypeError):
        store.acquire(None)


def test_a_standby_acquire_returns_once_the_holder_releases(store, other):
    assert store.acquire("active")
    got = []
    standby = threading.Thread(target=lambda: got.append(other.acquire("standby", wait=True)))
    standby.start()
    assert got == [] and standby.is_alive()
    assert store.holder() == "active"
    store.release()
    standby.join(5)
    assert got == [True]
    assert store.holder() == "standby"
    other.release()


def test_closing_a_store_ends_a_waiting_acquire(tmp_path):
    for holder, waiter in [(MemoryStore(),) * 2,
                           (SQLiteStore(tmp_path / "j.db"), SQLiteStore(tmp_path / "j.db"))]:
        assert holder.acquire("active")
        got = []
        standby = threading.Thread(target=lambda: got.append(waiter.acquire("standby", True)))
        standby.start()
        waiter.close()
        standby.join(5)
        assert got == [False] and not standby.is_alive()
        holder.close()
        holder.close()


def test_store_locked_error_is_a_runtime_error():
    assert issubclass(StoreLockedError, RuntimeError)


# -- SQLite: the file --------------------------------------------------------

def test_sqlite_file_is_in_wal_mode_and_reopens_with_its_data(tmp_path):
    path = tmp_path / "sub" / "dir" / "jobs.db"  # parents are created
    store = SQLiteStore(path)
    store.save_task(record())
    store.finish_run(finished())
    assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    store.close()
    store.close()
    reader = sqlite3.connect(path)
    assert reader.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert reader.execute("PRAGMA user_version").fetchone()[0] == 1
    reader.close()
    with SQLiteStore(str(path)) as again:
        assert again.load_tasks() == [record()]
        assert again.runs() == [finished(status=0)]
        assert repr(again) == f"<SQLiteStore {str(path)!r}>"
        assert again.path == str(path) and again.lock_path == f"{path}.lock"
    assert "closed" in repr(again)


def test_sqlite_clear_keeps_the_file(tmp_path):
    with SQLiteStore(tmp_path / "jobs.db") as store:
        store.save_task(record())
        store.clear()
    assert (tmp_path / "jobs.db").exists()
    with SQLiteStore(tmp_path / "jobs.db") as store:
        assert store.load_tasks() == []


def test_sqlite_refuses_a_newer_schema_and_a_non_database(tmp_path):
    newer = tmp_path / "newer.db"
    conn = sqlite3.connect(newer)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(sqlite3.DatabaseError, match="newer"):
        SQLiteStore(newer)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database, not at all" * 100)
    with pytest.raises(sqlite3.DatabaseError, match="junk.db"):
        SQLiteStore(junk)
    with pytest.raises(ValueError):
        SQLiteStore(":memory:")
    with pytest.raises(TypeError):
        SQLiteStore(42)


def test_a_dropped_store_does_not_keep_the_lock(tmp_path):
    first = SQLiteStore(tmp_path / "jobs.db")
    assert first.acquire("dropped")
    del first
    with SQLiteStore(tmp_path / "jobs.db") as second:
        assert second.acquire("next")


# -- SQLite: other processes -------------------------------------------------

class Child:
    """A Python child process running *code*; its stdout lines arrive in a queue."""

    def __init__(self, code: str, *args: str) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
        self.proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env)
        self.lines: "queue.Queue[str | None]" = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def expect(self, wanted: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {wanted!r} from the child within {timeout} s")
            if line is None:
                raise AssertionError(f"the child ended before {wanted!r}: {self.proc.stderr.read()}")
            if line.startswith(wanted):
                return line

    def send(self, text: str) -> None:
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def kill(self) -> list:
        """SIGKILL; return the lines it had written that were not read yet."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._reader.join(10)
        rest = []
        while (line := self.lines.get_nowait()) is not None:
            rest.append(line)
        return rest

    def finish(self, timeout: float = 10.0) -> list:
        self.proc.wait(timeout)
        self._reader.join(timeout)
        lines = []
        while (line := self.lines.get_nowait()) is not None:
            lines.append(line)
        assert self.proc.returncode == 0, self.proc.stderr.read()
        return lines

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            stream.close()


@pytest.fixture
def children():
    made = []

    def start(code, *args):
        made.append(Child(code, *args))
        return made[-1]
    yield start
    for child in made:
        child.close()


HOLDER = """
    import sys, time
    from pysched_lightning.stores import SQLiteStore, TaskRecord
    store = SQLiteStore(sys.argv[1])
    assert store.acquire("child-scheduler")
    store.save_task(TaskRecord("from-child", "n", "once", "1", 1, None, b"f", b"a", b"k",
                               b"o", None, 5.0))
    store.claim_run("from-child", 5.0, 0, 1, "n")
    print("ready", flush=True)
    time.sleep(60)
"""


def test_lock_excludes_another_process_and_is_freed_when_it_is_killed(tmp_path, children):
    path = str(tmp_path / "jobs.db")
    child = children(HOLDER, path)
    child.expect("ready")
    store = SQLiteStore(path)
    try:
        assert store.acquire("parent") is False
        assert store.holder() == "child-scheduler"
        # Reading needs no hold, while another process holds it.
        assert [r.id for r in store.load_tasks()] == ["from-child"]
        assert store.runs()[0]["status"] == TaskStatus.RUNNING
        child.kill()
        assert store.holder() is None  # the lock file names a dead process
        assert store.acquire("parent") is True
        assert store.holder() == "parent"
        assert store.mark_interrupted() == 1
    finally:
        store.close()


def test_a_standby_process_takes_over_when_the_holder_is_killed(tmp_path, children):
    path = str(tmp_path / "jobs.db")
    holder = children(HOLDER, path)
    holder.expect("ready")
    standby = children("""
        import sys
        from pysched_lightning.stores import SQLiteStore
        store = SQLiteStore(sys.argv[1])
        print("waiting", flush=True)
        print("acquired", store.acquire("standby", wait=True), flush=True)
    """, path)
    standby.expect("waiting")
    assert standby.proc.poll() is None
    holder.kill()
    assert standby.finish() == ["acquired True"]


CRASHER = """
    import os, sys
    from pysched_lightning.stores import SQLiteStore, TaskRecord
    store = SQLiteStore(sys.argv[1])
    store.mark_interrupted()  # as a scheduler does on start
    i = int(sys.argv[2])
    while True:
        i += 1
        task_id = f"t{i}"
        record = TaskRecord(task_id, "n", "recur", "1", 1, None, b"f" * 200, b"a", b"k",
                            b"o" * 300, b"s", float(i), created=float(i))
        if i % 5 == 0:
            with store.batch():
                store.save_task(record)
                store.claim_run(task_id, float(i), 0, 1, "n")
                store.update_task(task_id, runs=1)
        else:
            store.save_task(record)
            store.update_task(task_id, next_run=i + 1.0, runs=i)
            store.claim_run(task_id, float(i), 0, 1, "n")
        os.write(1, f"saved {task_id} .\\n".encode())  # one write: a whole line or none
        store.finish_run({"task_id": task_id, "scheduled": float(i), "attempt": 0,
                          "status": 0, "output": "x" * 500})
"""


def test_a_store_killed_mid_write_loads_every_accepted_task(tmp_path, children):
    path = str(tmp_path / "jobs.db")
    reported = []
    for round_ in range(3):  # each round reopens the file the last one left
        child = children(CRASHER, path, str(round_ * 1_000_000))
        with SQLiteStore(path) as reader:
            for n in range(300):
                reported.append(child.expect("saved").split()[1])
                if n % 100 == 0:  # reading while another process writes never errors
                    reader.load_tasks()
                    reader.runs(limit=10)
            reported += [line.split()[1] for line in child.kill() if line.endswith(" .")]
    with SQLiteStore(path) as store:
        loaded = {r.id: r for r in store.load_tasks()}
        assert set(reported) <= set(loaded)
        assert all(r.options == b"o" * 300 for r in loaded.values())
        runs = store.runs()
        assert {r["task_id"] for r in runs} >= set(reported)
        assert store._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        store.mark_interrupted()
        assert not [r for r in store.runs() if r["status"] == TaskStatus.RUNNING]
        # At most the run in flight when each child was killed.
        assert sum(r["error"] == INTERRUPTED for r in store.runs()) <= 3


RACER = """
    import sys
    from pysched_lightning.stores import SQLiteStore
    store = SQLiteStore(sys.argv[1])
    print("ready", flush=True)
    sys.stdin.readline()
    won = [k for k in range(300) if store.claim_run("race", float(k), 0, k, "race")]
    print("won", *won, flush=True)
"""


def test_two_processes_racing_claim_run_claim_each_key_once(tmp_path, children):
    path = str(tmp_path / "jobs.db")
    SQLiteStore(path).close()  # the schema exists before they race
    racers = [children(RACER, path) for _ in range(2)]
    for racer in racers:
        racer.expect("ready")
    for racer in racers:
        racer.send("go")
    won = [[int(k) for k in racer.finish()[-1].split()[1:]] for racer in racers]
    assert sorted(won[0] + won[1]) == list(range(300))
    with SQLiteStore(path) as store:
        assert len(store.runs("race")) == 300


# -- open_store ----------------------------------------------------------------

def test_open_store_urls_and_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    opened = []

    def opens(spec):
        made = open_store(spec)
        opened.append(made)
        return made

    try:
        assert open_store(None) is None
        relative = opens("sqlite:///data/jobs.db")
        assert isinstance(relative, SQLiteStore)
        assert relative.path == str(tmp_path / "data" / "jobs.db")
        absolute = opens(f"sqlite:///{tmp_path}/abs/jobs.db")  # four slashes
        assert absolute.path == str(tmp_path / "abs" / "jobs.db")
        assert opens("plain.db").path == str(tmp_path / "plain.db")
        assert opens(tmp_path / "pathlike.db").path == str(tmp_path / "pathlike.db")
        assert isinstance(opens("memory://"), MemoryStore)
        assert opens(relative) is relative
    finally:
        for made in opened:
            made.close()
    with pytest.raises(ValueError, match="postgres") as error:
        open_store("postgres://user:secret@db.example/jobs")
    assert "sqlite:///" in str(error.value) and "secret" not in str(error.value)
    for bad in ["sqlite://jobs.db", "sqlite://", "sqlite:///:memory:", "sqlite:///j.db?x=1",
                "memory://x", ""]:
        with pytest.raises(ValueError):
            open_store(bad)
    with pytest.raises(TypeError, match="42"):
        open_store(42)
    assert not (tmp_path / "jobs.db").exists()
