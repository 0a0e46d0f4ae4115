"""Batches: several calls in one message to a real worker process, each
outcome on its own (results, exceptions, what cannot be pickled either way,
a worker that dies in the middle)."""
from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import pickle
import threading
import traceback

import pytest

from pysched_lightning.execution.calls import Batch
from pysched_lightning.records.errors import WorkerCrashedError
from pysched_lightning.execution.processes import ProcessPool
from test_processes import exit_3, fail_in_worker, pid, unloadable

# ------------------------------------------------------------------ calls
# (module level, so that worker processes can unpickle them)


def square(x):
    return x * x


def lock():
    return threading.Lock()


class LockedError(Exception):
    """An exception that cannot be pickled: it holds a lock."""

    def __init__(self):
        super().__init__("holds a lock")
        self.lock = threading.Lock()


def raise_locked():
    raise LockedError()


def mapping():
    return {"a": [1, 2], "b": b"bytes"}


# ---------------------------------------------------------------- helpers


def make_pool(kind, workers=1):
    if kind == "loky":
        return ProcessPool(max_workers=workers)
    return ProcessPool(concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn")))


class Collect:
    """A batch's ``done``: gathers outcomes by key until *count* came."""

    def __init__(self, count):
        self.count = count
        self.by_key = {}
        self.calls = 0
        self.all_came = threading.Event()

    def __call__(self, outcomes):
        self.calls += 1
        for key, result, exc, seconds in outcomes:
            assert key not in self.by_key, f"{key!r} reported twice"
            self.by_key[key] = (result, exc, seconds)
        if len(self.by_key) >= self.count:
            self.all_came.set()

    def wait(self):
        assert self.all_came.wait(60), f"only {sorted(self.by_key)} came back"
        return self.by_key


def send(pool, calls):
    done = Collect(len(calls))
    pool.send_batch(calls, done)
    return done.wait(), done


# ------------------------------------------------------------------ tests


@pytest.mark.parametrize("kind", ["loky", "stdlib"])
def test_each_call_of_a_batch_comes_back_with_its_own_outcome_and_time(kind):
    with make_pool(kind) as pool:
        first = pool.executor
        outcomes, done = send(pool, [
            ("a", square, (3,), {}),
            ("b", fail_in_worker, (7,), None),
            ("c", lock, (), None),
            ("d", raise_locked, (), None),
            ("e", unloadable, (), None),
            ("f", square, (), {"x": 4}),
            ("g", mapping, (), None),
        ])
        assert done.calls == 1  # one message, one report
        assert outcomes["a"][:2] == (9, None)
        assert outcomes["f"][:2] == (16, None)
        assert outcomes["g"][:2] == ({"a": [1, 2], "b": b"bytes"}, None)
        failed = outcomes["b"][1]
        assert isinstance(failed, ValueError) and "raised in the worker: 7" in str(failed)
        text = "".join(traceback.format_exception(failed))
        assert "fail_in_worker" in text and "test_processes.py" in text
        # the traceback starts in the call, not in the batch that ran it
        assert traceback.extract_tb(failed.__traceback__)[0].name == "fail_in_worker"
        lock_error = outcomes["c"][1]
        assert isinstance(lock_error, TypeError) and "lock" in str(lock_error)
        assert "result of lock could not be pickled" in str(lock_error)
        locked = outcomes["d"][1]
        assert "could not be pickled" in str(locked)
        assert "LockedError: holds a lock" in str(locked) and "raise_locked" in str(locked)
        unloaded = outcomes["e"][1]
        assert isinstance(unloaded, pickle.UnpicklingError)
        assert "this result cannot be unpickled" in str(unloaded)
        for key, (_, _, seconds) in outcomes.items():
            assert isinstance(seconds, float) and seconds >= 0, key
        assert pool.executor is first  # nothing above broke the pool
        assert send(pool, [(0, square, (5,), None)])[0][0][:2] == (25, None)


def append_line(path, x):
    with open(path, "a") as out:
        out.write(f"{x}\n")
    return x


@pytest.mark.parametrize("kind", ["loky", "stdlib"])
def test_a_call_that_cannot_be_pickled_here_fails_alone_and_its_batch_mates_run_once(
        kind, tmp_path):
    ran = tmp_path / "ran"
    with make_pool(kind) as pool:
        outcomes, _ = send(pool, [(0, append_line, (str(ran), 2), None),
                                  (1, square, (threading.Lock(),), None),
                                  (2, append_line, (str(ran), 5), None)])
        assert outcomes[0][:2] == (2, None) and outcomes[2][:2] == (5, None)
        assert ran.read_text() == "2\n5\n"  # each ran once: the batch ran nothing
        result, exc, seconds = outcomes[1]
        assert result is None and seconds is None
        assert "lock" in "".join(traceback.format_exception(exc))


def test_a_worker_dying_in_a_batch_fails_each_of_its_calls_and_later_calls_run():
    with make_pool("loky") as pool:
        first = pool.executor
        outcomes, _ = send(pool, [(0, pid, (), None), (1, exit_3, (), None),
                                  (2, pid, (), None)])
        errors = [outcomes[key][1] for key in range(3)]
        for error in errors:
            assert isinstance(error, WorkerCrashedError) and error.exitcode == 3
        assert len({id(error) for error in errors}) == 3  # one each
        assert pool.executor is not first
        assert send(pool, [(0, pid, (), None)])[0][0][0] != os.getpid()


def test_a_batch_taken_back_before_it_was_sent_runs_nothing_and_one_sent_cannot_be():
    kept = Batch([(square, (3,), {})])
    assert kept.take_back()
    assert pickle.loads(pickle.dumps(kept))() == []
    sent = Batch([(square, (3,), {})])
    assert pickle.loads(pickle.dumps(sent))() [0][1:] == (False, 9)
    assert not sent.take_back()
    assert len(sent.again()) == 1 and sent.again().sends == 2


def test_send_batch_after_shutdown_is_refused():
    pool = make_pool("loky")
    pool.shutdown(wait=True)
    with pytest.raises(RuntimeError):
        pool.send_batch([(0, square, (1,), None)], Collect(1))
