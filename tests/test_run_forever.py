"""``run_forever()``: the blocking mode for scripts and daemons. A signal
(SIGTERM, SIGINT) or ``shutdown()`` from another thread ends it with a clean
shutdown: the running run finishes and is recorded, the store is released."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading

import pytest

import pysched_lightning as psl
from pysched_lightning.durability.stores import open_store
from conftest import wait_for

# A daemon as a user writes it: a task that takes a while, then run_forever().
# The task says it started (once run_forever() handles signals) and finishes
# once the test lets it ("go"), so the signal is sure to arrive while it runs.
# A listener notes the shutdown; what the script sees after run_forever()
# returns is written to "after".
DAEMON = textwrap.dedent("""
    import json, os, signal, sys, time
    import pysched_lightning as psl
    from pysched_lightning.stores import open_store

    work = sys.argv[1]

    def path(name):
        return os.path.join(work, name)

    def job():
        # report "started" only once run_forever() has put its handlers in place
        deadline = time.monotonic() + 30
        while any(a == b for a, b in zip(handlers, current_handlers())) \\
                and time.monotonic() < deadline:
            time.sleep(0.005)
        open(path("started"), "w").close()
        deadline = time.monotonic() + 30
        while not os.path.exists(path("go")):
            if time.monotonic() > deadline:
                raise RuntimeError("never told to go on")
            time.sleep(0.01)
        with open(path("out"), "a") as out:
            out.write("job done\\n")
        return "finished"

    def note_shutdown(event):
        open(path("shutting-down"), "w").close()

    def current_handlers():
        return [repr(signal.getsignal(s)) for s in (signal.SIGINT, signal.SIGTERM)]

    handlers = current_handlers()
    sched = psl.Scheduler(store=path("jobs.db"), run_log=path("runs.log"))
    sched.add_listener(note_shutdown, kinds=[psl.EventKind.SCHEDULER_SHUTDOWN])
    sched.delay('once', 0, 1, job, task_id='job')
    sched.run_forever()
    after = {
        "stopped": sched.stopped,
        "holder": open_store(path("jobs.db")).holder(),
        "handlers restored": handlers == current_handlers(),
    }
    with open(path("after"), "w") as f:
        json.dump(after, f)
""")


# A signal that comes while run_forever() starts the scheduler: here the
# SCHEDULER_STARTED listener (called inside start(), in the main thread) sends
# it, which stands for a service manager stopping the daemon at that moment.
SIGNALLED_AT_START = textwrap.dedent("""
    import json, os, signal, sys
    import pysched_lightning as psl
    from pysched_lightning.stores import open_store

    work, signum = sys.argv[1], int(sys.argv[2])
    db = os.path.join(work, "jobs.db")
    sched = psl.Scheduler(store=db)
    sched.add_listener(lambda event: os.kill(os.getpid(), signum),
                       kinds=[psl.EventKind.SCHEDULER_STARTED])
    sched.delay('once', 3600, 1, print, args=("later",), task_id='later')
    sched.run_forever()
    with open(os.path.join(work, "after"), "w") as f:
        json.dump({"stopped": sched.stopped, "holder": open_store(db).holder()}, f)
""")


def exists(path):
    return lambda: os.path.exists(path)


def alive_and(proc, predicate):
    """predicate(), failing at once (with the child's stderr) if it died."""
    def check():
        if proc.poll() is not None:
            pytest.fail(f"the daemon exited with {proc.returncode}: "
                        f"{proc.stderr.read().decode(errors='replace')}")
        return predicate()
    return check


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_ends_run_forever_with_a_clean_shutdown(tmp_path, signum):
    script = tmp_path / "daemon.py"
    script.write_text(DAEMON)
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.Popen([sys.executable, str(script), str(work)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(alive_and(proc, exists(work / "started")), timeout=30)
        proc.send_signal(signum)
        wait_for(alive_and(proc, exists(work / "shutting-down")), timeout=30)
        (work / "go").touch()  # the run in progress may finish now
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err.decode(errors="replace")
    assert (work / "out").read_text() == "job done\n"

    after = json.loads((work / "after").read_text())
    assert after == {"stopped": True, "holder": None, "handlers restored": True}

    store = open_store(str(work / "jobs.db"))
    rows = store.runs('job')
    assert [(r['status'], r['result']) for r in rows] == [(int(psl.TaskStatus.COMPLETED),
                                                          "'finished'")]
    assert rows[0]['finished'] is not None
    assert store.holder() is None

    lines = [json.loads(line) for line in (work / "runs.log").read_text().splitlines()]
    assert [(line['task_id'], line['status']) for line in lines] == [('job', 'Completed')]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_while_run_forever_starts_the_scheduler(tmp_path, signum):
    script = tmp_path / "daemon.py"
    script.write_text(SIGNALLED_AT_START)
    proc = subprocess.run([sys.executable, str(script), str(tmp_path), str(int(signum))],
                          capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    after = json.loads((tmp_path / "after").read_text())
    assert after == {"stopped": True, "holder": None}
    assert [r.id for r in open_store(str(tmp_path / "jobs.db")).load_tasks()] == ['later']


def test_run_forever_in_a_thread_returns_when_another_thread_shuts_down(
        tmp_path, no_leaked_threads):
    handlers = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    sched = psl.Scheduler(store=str(tmp_path / "jobs.db"))
    returned = threading.Event()

    def serve():
        sched.run_forever()
        returned.set()

    thread = threading.Thread(target=serve, name="serve")
    thread.start()
    try:
        tid = sched.delay('recur', 0.02, 1, lambda: "tick")
        wait_for(lambda: sched.get_task(tid)['runs'] >= 2)
        assert not returned.is_set() and not sched.stopped
    finally:
        sched.shutdown()
    thread.join(timeout=10)
    assert returned.is_set() and not thread.is_alive()
    assert sched.stopped
    # a thread cannot take signals: run_forever() left the handlers alone
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers
    assert open_store(str(tmp_path / "jobs.db")).holder() is None


def test_run_forever_returns_when_a_task_shuts_the_scheduler_down(no_leaked_threads):
    """The main thread blocks in run_forever(); a task decides it is time to stop."""
    handlers = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    sched = psl.Scheduler()
    done = []

    def last_job():
        done.append("ran")
        sched.shutdown()

    sched.delay('once', 0, 1, last_job, task_id='last')
    sched.run_forever()
    assert done == ["ran"]
    assert sched.stopped
    assert sched.get_status('last') is psl.TaskStatus.COMPLETED
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers


def test_run_forever_after_shutdown_is_refused(no_leaked_threads):
    sched = psl.Scheduler()
    sched.start()
    sched.shutdown()
    with pytest.raises(RuntimeError):
        sched.run_forever()
