"""DaskExecutor on a real LocalCluster: two worker processes, one thread each.

Workers coordinate with the test through files in tmp_path (same machine):
a task touches a file when it starts and waits for a gate file, so the
tests wait on conditions, never on the clock.
"""
from __future__ import annotations

import concurrent.futures
import inspect
import logging
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time
import uuid

import psutil
import pytest

import pysched_lightning as psl
from conftest import wait_for
from pysched_lightning.contrib.dask import DaskExecutor, as_dask_executor
from services import missing

ROOT = pathlib.Path(__file__).resolve().parent.parent

# --- functions the workers run (importable: tests/ is on the workers' path) ---


def where(label=None):
    return os.getpid(), label


def token():
    return uuid.uuid4().hex


def fail_here(message):
    raise ValueError(f"{message} in process {os.getpid()}")


def _wait_for_file(path: pathlib.Path, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def blocker(folder):
    """Starts, waits for the test to open the gate, then says it finished."""
    folder = pathlib.Path(folder)
    (folder / "started").touch()
    opened = _wait_for_file(folder / "gate")
    (folder / "finished").touch()
    return "blocker" if opened else "gate never opened"


def record(log, label):
    with open(log, "a") as out:
        out.write(label + "\n")
    return label


def once_per_kill(folder):
    """The first execution waits to be killed; the rescheduled one completes."""
    folder = pathlib.Path(folder)
    earlier = list(folder.glob("start-*"))
    (folder / f"start-{os.getpid()}").touch()
    if not earlier:
        _wait_for_file(folder / "never", timeout=60)
        return "not killed"
    (folder / f"done-{os.getpid()}").touch()
    return os.getpid()


# --- fixtures ---


def _live_children():
    """This process's live descendants, but for multiprocessing's resource
    tracker (it stays until the interpreter exits)."""
    alive = []
    for child in psutil.Process().children(recursive=True):
        try:
            if (child.status() != psutil.STATUS_ZOMBIE
                    and "resource_tracker" not in " ".join(child.cmdline())):
                alive.append(child)
        except psutil.NoSuchProcess:
            pass
    return alive


@pytest.fixture(scope="module")
def dask_installed():
    try:
        import distributed  # noqa: F401
    except ImportError:
        missing("dask.distributed is not installed (pip install -e '.[dask]')")


@pytest.fixture(scope="module")
def cluster(dask_installed):
    from distributed import LocalCluster
    before = {p.pid for p in _live_children()}
    cluster = LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                           dashboard_address="127.0.0.1:0", silence_logs=logging.CRITICAL)
    yield cluster
    cluster.close()
    # Every worker process is gone (the nannies reaped them), the restarted one too.
    wait_for(lambda: not [p for p in _live_children() if p.pid not in before])


@pytest.fixture(scope="module")
def client(cluster):
    from distributed import Client
    client = Client(cluster, set_as_default=False)
    yield client
    client.close()


def worker_pids(client):
    return set(client.run(os.getpid).values())


def known_to_scheduler(client, key):
    return client.run_on_scheduler(lambda dask_scheduler: key in dask_scheduler.tasks)


# --- tests ---


def test_asking_about_other_executors_does_not_import_dask():
    code = ("import sys\n"
            "import pysched_lightning as psl\n"
            "from pysched_lightning.contrib.dask import as_dask_executor\n"
            "pool = psl.ThreadPoolExecutor(1)\n"
            "assert as_dask_executor(pool) is None\n"
            "assert as_dask_executor(object()) is None\n"
            "pool.shutdown()\n"
            "print(sorted(m for m, module in sys.modules.items()\n"
            "             if module is not None and m.split('.')[0] in ('dask', 'distributed')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_bad_input_is_refused_naming_the_value(client):
    with pytest.raises(TypeError, match="42"):
        DaskExecutor(42)
    with pytest.raises(ValueError, match="address is empty"):
        DaskExecutor("  ")
    with pytest.raises(TypeError, match="pure=True"):
        DaskExecutor(client, pure=True)
    with pytest.raises(TypeError, match="'priority'"):
        DaskExecutor(client, priority=3)
    with pytest.raises(ValueError, match="-1"):
        DaskExecutor(client, retries=-1)
    executor = DaskExecutor(client)
    with pytest.raises(TypeError, match="'high'"):
        executor.submit_prioritized("high", where)
    with pytest.raises(TypeError, match="42"):
        executor.submit(42)
    with pytest.raises(TypeError, match=r"args\[0\]=<unlocked _thread.lock"):
        executor.submit(where, threading.Lock())  # cannot be sent: refused at submit
    executor.shutdown()
    with pytest.raises(RuntimeError, match="after shutdown"):
        executor.submit(where)
    assert client.submit(where, pure=False).result(timeout=30)[0] in worker_pids(client)


def test_scheduler_runs_tasks_on_the_workers(client):
    offset = 7

    def nested(x):  # a closure: the workers cannot import it, it travels by value
        return os.getpid(), x + offset

    with psl.Scheduler(executor=DaskExecutor(client)) as sched:
        by_reference = sched.delay('once', 0, 1, where, args=("ref",))
        by_value = sched.delay('once', 0, 1, nested, args=(1,))
        a_lambda = sched.delay('once', 0, 1, lambda: os.getpid() * 0 + offset)
        keywords = sched.delay('once', 0, 1, where, kwargs={"label": "kw"})
        results = {tid: sched.get_result(tid, timeout=30)
                   for tid in (by_reference, by_value, a_lambda, keywords)}
    workers = worker_pids(client)
    assert results[by_reference][0] in workers and results[by_reference][1] == "ref"
    assert results[by_value][0] in workers and results[by_value][1] == 8
    assert results[a_lambda] == 7
    assert results[keywords][0] in workers and results[keywords][1] == "kw"
    assert os.getpid() not in workers
    assert client.status == "running"  # a client it was given is left open


def test_every_run_is_an_execution(client):
    executor = DaskExecutor(client)
    first, second = executor.submit(token), executor.submit(token)
    assert first.result(timeout=30) != second.result(timeout=30)
    with psl.Scheduler(executor=executor) as sched:
        tid = sched.delay('recur', 0.05, 1, token)
        wait_for(lambda: len([r for r in sched.runs(tid) if r.status is psl.TaskStatus.COMPLETED])
                 >= 3, timeout=30)
        sched.cancel(tid)
        runs = [r for r in sched.runs(tid) if r.status is psl.TaskStatus.COMPLETED]
    assert len({run.result for run in runs}) == len(runs)


def test_remote_traceback_names_the_function_and_line(client):
    def nested_failure():
        raise KeyError("from a closure")

    with psl.Scheduler(executor=DaskExecutor(client)) as sched:
        by_reference = sched.delay('once', 0, 1, fail_here, args=("bad input",))
        by_value = sched.delay('once', 0, 1, nested_failure)
        with pytest.raises(ValueError, match="bad input in process") as raised:
            sched.get_result(by_reference, timeout=30)
        with pytest.raises(KeyError, match="from a closure"):
            sched.get_result(by_value, timeout=30)
        failed, closure = sched.result[by_reference], sched.result[by_value]
    assert int(str(raised.value).rsplit(" ", 1)[1]) in worker_pids(client)
    assert failed.status is psl.TaskStatus.ERROR
    raise_line = inspect.getsourcelines(fail_here)[1] + 1
    assert f'test_dask.py", line {raise_line}, in fail_here' in failed.traceback
    nested_line = inspect.getsourcelines(nested_failure)[1] + 1
    # cloudpickle names the file of code sent by value "<dynamic-code>"
    assert f'line {nested_line}, in nested_failure' in closure.traceback


def test_client_executor_and_client_are_recognised(client, caplog):
    plain = client.get_executor()
    with psl.Scheduler(executor=plain) as sched:  # works as a concurrent.futures executor
        tid = sched.delay('once', 0, 1, where)
        assert sched.get_result(tid, timeout=30)[0] in worker_pids(client)

    given = client.get_executor(retries=1, pure=True)
    with caplog.at_level(logging.WARNING, logger="pysched_lightning"):
        wrapped = as_dask_executor(given)
    assert isinstance(wrapped, DaskExecutor) and wrapped.client is client
    assert wrapped._options == {"retries": 1}
    assert "pure=True is ignored" in caplog.text
    assert as_dask_executor(wrapped) is wrapped
    pool = psl.ThreadPoolExecutor(1)
    assert as_dask_executor(pool) is None
    pool.shutdown()
    with psl.Scheduler(executor=wrapped) as sched:
        tid = sched.delay('once', 0, 1, where, args=("wrapped",))
        assert sched.get_result(tid, timeout=30)[1] == "wrapped"
    with pytest.raises(RuntimeError):  # shut down with its wrapper
        given.submit(where)

    from_client = as_dask_executor(client)
    assert isinstance(from_client, DaskExecutor) and from_client.client is client
    assert from_client.submit(where).result(timeout=30)[0] in worker_pids(client)
    from_client.shutdown()
    assert client.status == "running"


def test_urgent_runs_before_lax_on_a_busy_worker(client, tmp_path):
    worker = sorted(client.scheduler_info()["workers"])[0]
    executor = DaskExecutor(client, workers=[worker])
    busy = executor.submit(blocker, str(tmp_path))
    wait_for((tmp_path / "started").exists, timeout=30)
    log = str(tmp_path / "order")
    lax = [executor.submit_prioritized(5, record, log, f"lax{i}") for i in range(3)]
    urgent = executor.submit_prioritized(1, record, log, "urgent")
    waiting = [future.key for future in lax + [urgent]]

    def all_ready_on_the_worker():
        states = client.run(lambda dask_worker: {k: ts.state for k, ts in
                                                 dask_worker.state.tasks.items()},
                            workers=[worker])[worker]
        return all(states.get(key) == "ready" for key in waiting)

    wait_for(all_ready_on_the_worker, timeout=30)
    (tmp_path / "gate").touch()
    assert busy.result(timeout=30) == "blocker"
    concurrent.futures.wait(lax + [urgent], timeout=30)
    assert pathlib.Path(log).read_text().split() == ["urgent", "lax0", "lax1", "lax2"]
    executor.shutdown()


def test_cancel_releases_a_running_call_on_the_cluster(client, tmp_path):
    executor = DaskExecutor(client)
    finished = executor.submit(where)
    finished.result(timeout=30)
    assert finished.cancel() is False and not finished.cancelled()

    running = executor.submit(blocker, str(tmp_path))
    wait_for((tmp_path / "started").exists, timeout=30)
    assert known_to_scheduler(client, running.key)
    assert running.cancel() is True
    assert running.cancelled() and running.done()
    done, _ = concurrent.futures.wait([running], timeout=5)
    assert running in done
    with pytest.raises(concurrent.futures.CancelledError):
        running.result(timeout=0)
    wait_for(lambda: not known_to_scheduler(client, running.key), timeout=30)
    (tmp_path / "gate").touch()  # the worker's thread runs the function to its end...
    wait_for((tmp_path / "finished").exists, timeout=30)
    assert running.cancelled()  # ...and its outcome is dropped
    executor.shutdown()


def test_shutdown_waits_or_cancels_and_closes_only_what_it_made(cluster, client, tmp_path):
    waiting = DaskExecutor(client)
    (tmp_path / "a").mkdir()
    future = waiting.submit(blocker, str(tmp_path / "a"))
    wait_for((tmp_path / "a" / "started").exists, timeout=30)
    closing = threading.Thread(target=waiting.shutdown)
    closing.start()
    assert closing.is_alive()  # waits for the call in flight: the gate is shut
    (tmp_path / "a" / "gate").touch()
    closing.join(30)
    assert not closing.is_alive() and future.result(timeout=0) == "blocker"

    from_address = DaskExecutor(cluster.scheduler_address)
    (tmp_path / "b").mkdir()
    abandoned = from_address.submit(blocker, str(tmp_path / "b"))
    wait_for((tmp_path / "b" / "started").exists, timeout=30)
    from_address.shutdown(wait=False)  # cancels what is in flight
    assert abandoned.cancelled()
    assert from_address.client.status == "closed"  # it made that client
    wait_for(lambda: not known_to_scheduler(client, abandoned.key), timeout=30)
    (tmp_path / "b" / "gate").touch()

    from_cluster = DaskExecutor(cluster)
    assert from_cluster.submit(where).result(timeout=30)[0] in worker_pids(client)
    from_cluster.shutdown()
    assert from_cluster.client.status == "closed"
    assert cluster.status.name == "running"  # the cluster is not its to close
    assert client.submit(where, pure=False).result(timeout=30)[0] in worker_pids(client)


def test_shutdown_from_the_delivering_thread_cancels_instead_of_hanging(client, tmp_path):
    executor = DaskExecutor(client)
    (tmp_path / "long").mkdir()
    (tmp_path / "short").mkdir()
    long = executor.submit(blocker, str(tmp_path / "long"))
    short = executor.submit(blocker, str(tmp_path / "short"))
    wait_for(lambda: (tmp_path / "long" / "started").exists()
             and (tmp_path / "short" / "started").exists(), timeout=30)
    returned = threading.Event()

    def stop(_future):  # runs where outcomes are delivered, as a listener would
        executor.shutdown(wait=True)
        returned.set()

    short.add_done_callback(stop)
    (tmp_path / "short" / "gate").touch()
    wait_for(returned.is_set, timeout=30)
    assert long.cancelled()
    (tmp_path / "long" / "gate").touch()
    wait_for((tmp_path / "long" / "finished").exists, timeout=30)


def test_a_killed_worker_s_run_is_rescheduled_and_completes_once(client, tmp_path):
    with psl.Scheduler(executor=DaskExecutor(client)) as sched:
        tid = sched.delay('once', 0, 1, once_per_kill, args=(str(tmp_path),))
        started = wait_for(lambda: list(tmp_path.glob("start-*")), timeout=30)
        victim = int(started[0].name.split("-")[1])
        assert victim in worker_pids(client)
        os.kill(victim, signal.SIGKILL)
        survivor = sched.get_result(tid, timeout=60)
        runs = sched.runs(tid)
    assert survivor != victim
    assert [run.status for run in runs] == [psl.TaskStatus.COMPLETED]
    assert sorted(p.name for p in tmp_path.glob("start-*")) == sorted(
        [f"start-{victim}", f"start-{survivor}"])
    assert [p.name for p in tmp_path.glob("done-*")] == [f"done-{survivor}"]
    client.wait_for_workers(2, timeout=60)  # the nanny restarts the killed worker


def test_example_runs_as_written(dask_installed):
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "dask_cluster.py")],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "ran on worker process" in out.stdout
    assert "failed on the cluster" in out.stdout
    assert "scheduler and cluster shut down" in out.stdout
