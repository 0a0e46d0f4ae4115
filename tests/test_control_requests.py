"""A scheduler applies the control requests its store holds (what a
dashboard on the store writes): real SQLite files, real schedulers in this
process and in others, requests written through a second connection."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading

import pytest

import pysched_lightning as psl
import pysched_lightning.core.requests as requests_module
from conftest import wait_for
from control_node import marks_of
from pysched_lightning.durability.stores import MemoryStore, SQLiteStore
from pysched_lightning.durability.stores.controls import ABANDONED

pytestmark = pytest.mark.usefixtures("no_leaked_threads")  # the polling thread ends too

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(ROOT, "tests")


def answered(store, request_id):
    """The request once it has an answer (waits for it)."""
    return wait_for(lambda: (lambda r: r if r["state"] in ("done", "failed") else None)(
        store.control_request(request_id)))


@pytest.fixture
def running(tmp_path):
    """A started scheduler on a SQLite file, its task 'report' (every hour)
    counting its runs, and a dashboard's connection to the file."""
    path = str(tmp_path / "jobs.db")
    runs = []
    sched = psl.Scheduler(store=path)
    sched.delay("recur", 3600, 1, lambda: runs.append(1), task_id="report")
    sched.start()
    dashboard = SQLiteStore(path, read_only=True, control=True)
    try:
        yield sched, dashboard, runs
    finally:
        dashboard.close()
        sched.shutdown()


def test_pause_resume_run_now_and_cancel_are_applied_and_answered(running):
    sched, dashboard, runs = running
    paused = answered(dashboard, dashboard.request_control("pause", "report", "test"))
    assert (paused["state"], paused["ok"], paused["message"]) == (
        "done", True, "paused task 'report'")
    assert sched.get_task("report")["paused"]
    resumed = answered(dashboard, dashboard.request_control("resume", "report", "test"))
    assert resumed["ok"] and not sched.get_task("report")["paused"]
    ran = answered(dashboard, dashboard.request_control("run_now", "report", "test"))
    assert ran["ok"] and ran["message"] == "started an extra run of task 'report'"
    wait_for(lambda: runs == [1])
    canceled = answered(dashboard, dashboard.request_control("cancel", "report", "test"))
    assert canceled["ok"] and "report" not in sched.task
    assert sched.store.task("report") is None


def test_a_request_for_an_unknown_task_fails_naming_it(running):
    sched, dashboard, _ = running
    failed = answered(dashboard, dashboard.request_control("pause", "nope", "test"))
    assert (failed["state"], failed["ok"], failed["message"]) == (
        "failed", False, "no task 'nope'")
    assert not sched.get_task("report")["paused"]


def test_requests_are_applied_in_the_order_they_were_made(running):
    sched, dashboard, _ = running
    ids = [dashboard.request_control(action, "report", "test")
           for action in ("pause", "resume", "pause")]
    assert all(answered(dashboard, i)["ok"] for i in ids)
    assert sched.get_task("report")["paused"]


def test_a_scheduler_on_a_memory_store_applies_requests_too():
    store = MemoryStore()
    with psl.Scheduler(store=store) as sched:
        sched.delay("recur", 3600, 1, int, task_id="t")
        request = store.request_control("pause", "t", "test")
        assert answered(store, request)["ok"]


def test_shutdown_stops_the_polling_thread_and_no_request_is_taken_after(tmp_path):
    path = str(tmp_path / "jobs.db")
    sched = psl.Scheduler(store=path)
    sched.delay("recur", 3600, 1, int, task_id="t")
    sched.start()
    assert any(t.name == "pysched-control" for t in threading.enumerate())
    sched.shutdown()
    assert not any(t.name == "pysched-control" for t in threading.enumerate())
    with SQLiteStore(path) as store:
        request = store.request_control("pause", "t", "test")
        assert store.control_request(request)["state"] == "pending"


def test_wake_polls_at_once(monkeypatch):
    monkeypatch.setattr(requests_module, "POLL_SECONDS", 3600.0)  # only the first poll, or wake
    store = MemoryStore()
    woken = []
    store.listen_control = woken.append  # a store that notifies (e.g. PostgreSQL's LISTEN)
    sched = psl.Scheduler(store=store)
    try:
        sched.delay("recur", 3600, 1, int, task_id="t")
        first = store.request_control("pause", "t", "test")
        sched.start()
        assert answered(store, first)["ok"]  # the poll at start
        second = store.request_control("resume", "t", "test")
        woken[0]()
        assert answered(store, second)["ok"] and not sched.get_task("t")["paused"]
    finally:
        sched.shutdown()


def test_only_the_active_scheduler_applies_requests_not_its_standby(tmp_path):
    path = str(tmp_path / "jobs.db")
    active = psl.Scheduler(store=path)
    active.delay("recur", 3600, 1, int, task_id="t")
    active.start()
    standby = psl.Scheduler(store=path)
    standby.start()
    dashboard = SQLiteStore(path, read_only=True, control=True)
    try:
        assert standby.stopped is False and active.store.holder() is not None
        ids = [dashboard.request_control(action, "t", "test")
               for action in ("pause", "resume") * 3]
        assert all(answered(dashboard, i)["ok"] for i in ids)
        with contextlib.closing(SQLiteStore(path, read_only=True)) as reader:
            takers = {row[0] for row in reader._conn.execute(
                "SELECT taken_by FROM control_requests")}
        assert takers == {active.store.holder()}
        first_holder = active.store.holder()
        active.shutdown()
        # The standby takes over, and with the store its requests.
        request = dashboard.request_control("pause", "t", "test")
        assert answered(dashboard, request)["ok"]
        assert standby.get_task("t")["paused"]
        assert standby.store.holder() not in (None, first_holder)
    finally:
        dashboard.close()
        active.shutdown()
        standby.shutdown()


def _node(path, marks, *mode):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, TESTS]))
    return subprocess.Popen(
        [sys.executable, "-c", "import control_node; control_node.main()", path, marks, *mode],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_scheduler_in_another_process_applies_the_requests(tmp_path):
    path, marks = str(tmp_path / "jobs.db"), str(tmp_path / "marks")
    node = _node(path, marks)
    try:
        assert node.stdout.readline().strip() == "ready", node.stderr.read()
        with SQLiteStore(path, read_only=True, control=True) as dashboard:
            wait_for(lambda: dashboard.task("report") is not None)
            assert answered(dashboard, dashboard.request_control("run_now", "report", "t"))["ok"]
            wait_for(lambda: len(marks_of(marks)) == 1)
            assert answered(dashboard, dashboard.request_control("pause", "report", "t"))["ok"]
            assert dashboard.task("report").paused
    finally:
        node.send_signal(signal.SIGTERM)
        node.communicate(timeout=60)
    assert node.returncode == 0


def test_a_request_taken_by_a_killed_scheduler_is_not_lost_and_no_run_is_run_twice(
        tmp_path, monkeypatch):
    path, marks = str(tmp_path / "jobs.db"), str(tmp_path / "marks")
    SQLiteStore(path).close()
    with SQLiteStore(path, read_only=True, control=True) as dashboard:
        run_now = dashboard.request_control("run_now", "report", "test")
        pause = dashboard.request_control("pause", "report", "test")
    node = _node(path, marks, "hang")  # applies the run now, never answers
    try:
        wait_for(lambda: len(marks_of(marks)) == 1, timeout=30)
        with SQLiteStore(path, read_only=True) as reader:
            assert [reader.control_request(i)["state"] for i in (run_now, pause)] == [
                "taken", "taken"]
    finally:
        node.kill()  # SIGKILL: between applying a request and answering it
        node.communicate(timeout=60)
    monkeypatch.setattr(requests_module, "STALE_AFTER", 0.5)  # not 30 s in a test
    with psl.Scheduler(store=path) as sched:
        store = sched.store
        failed, done = answered(store, run_now), answered(store, pause)
        assert (failed["state"], failed["message"]) == ("failed", ABANDONED)
        assert (done["state"], done["ok"]) == ("done", True)
        assert sched.get_task("report")["paused"]
    assert len(marks_of(marks)) == 1  # the run now ran once, in the killed process


def test_a_shutdown_racing_start_never_joins_a_thread_not_started():
    """A SIGTERM right after start(): shutdown() from another thread found
    the requests' thread made but not started, and its join() raised
    (``cannot join thread before it is started``); the shutdown never ended."""
    failures = []
    for _ in range(40):
        sched = psl.Scheduler(store=MemoryStore())

        def stop():
            while sched.stopped:  # until start() is under way: then at once
                pass
            try:
                sched.shutdown(wait=True)
            except BaseException as exc:  # reported by the assertion below
                failures.append(exc)
        stopper = threading.Thread(target=stop)
        stopper.start()
        sched.start()
        stopper.join(10)
        assert not stopper.is_alive()
        sched.shutdown()
    assert failures == []
