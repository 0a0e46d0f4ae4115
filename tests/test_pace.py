"""Pace: which functions count as quick, from their last run in a worker."""
from __future__ import annotations

import functools
import os

from pysched_lightning.execution.pace import QUICK_SECONDS, Pace


def work(x=0):
    return x


def other():
    pass


class Job:
    def __call__(self):
        pass

    def method(self):
        pass


def test_a_function_is_quick_only_once_its_last_run_was():
    pace = Pace()
    assert not pace.quick(work)  # never seen
    pace.note(work, QUICK_SECONDS / 2)
    assert pace.quick(work) and not pace.quick(other)
    pace.note(work, QUICK_SECONDS * 10)
    assert not pace.quick(work)
    pace.note(work, QUICK_SECONDS)
    assert pace.quick(work)
    pace.note(work, None)  # never ran in a worker: says nothing
    assert pace.quick(work)


def test_partials_methods_builtins_and_callable_objects_are_known_by_what_they_run():
    pace = Pace()
    pace.note(functools.partial(functools.partial(work, 1)), 0.0)
    assert pace.quick(work) and pace.quick(functools.partial(work, 2))
    pace.note(Job().method, 0.0)
    assert pace.quick(Job().method)
    job = Job()
    pace.note(job, 0.0)
    assert pace.quick(job) and not pace.quick(Job()) and not pace.quick(other)
    pace.note(os.getpid, 0.0)
    assert pace.quick(os.getpid) and not pace.quick(os.getppid)


def test_a_function_that_is_gone_lends_its_pace_to_no_other():
    pace = Pace()
    for i in range(200):  # new code objects, freed at once: ids get reused
        made = eval(compile(f"lambda: {i}", "<made>", "eval"))
        assert not pace.quick(made), i
        pace.note(made, 0.0)
        assert pace.quick(made)
        del made


def test_the_record_stays_bounded():
    pace = Pace()
    keep = []
    for i in range(10_000):
        made = eval(compile(f"lambda: {i}", "<made>", "eval"))
        keep.append(made)
        pace.note(made, 0.0)
    assert pace.quick(keep[-1])
    assert len(pace) <= 4096
