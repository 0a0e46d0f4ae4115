"""The Task record and the @task decorator, including upstream's README examples."""
from __future__ import annotations

import pickle
import time

import pytest

import pysched_lightning
import pysched_lightning as psl
from conftest import messages_of_a_failing_run, wait_for
from pysched_lightning.records.task import task_label


def test_decorated_function_stays_callable_and_delay_schedules_it():
    calls = []
    sched = psl.Scheduler()

    @psl.task(sched, 'once', 0, 1, name='greeting')
    def greet(who, punctuation='!'):
        calls.append(f"hello {who}{punctuation}")
        return len(calls)

    assert greet('direct') == 1
    sched.start()
    try:
        tid = greet.delay('scheduled', punctuation='?')
        assert isinstance(tid, str)
        assert sched.get_result(tid, timeout=5) == 2
        assert calls == ['hello direct!', 'hello scheduled?']
        assert sched.get_task(tid)['name'] == 'greeting'
        assert greet.__name__ == 'greet'
    finally:
        sched.shutdown()


def test_decorator_options_are_validated_at_delay():
    sched = psl.Scheduler()

    @psl.task(sched, 'recur', -3, 1)
    def bad():
        pass

    with pytest.raises(ValueError, match="-3"):
        bad.delay()
    with pytest.raises(TypeError):
        psl.task(sched, 'once', 1, 1)(42)
    sched.shutdown()


def test_task_record_pickles():
    sched = psl.Scheduler()
    tid = sched.delay('recur', 3, 2, time.time)
    task = sched.task[tid]
    again = pickle.loads(pickle.dumps(task))
    assert again == task and again.interval == 3 and again.fn is time.time
    assert task._asdict()['id'] == tid
    sched.shutdown()


# ---------------------------------------------------------------- upstream README
# The examples of the PySched-Lightning 0.1.x README, as written there, with
# `pysched_lightning` as the module name and shutdown once each has printed.

def now(cost=1):
    time.sleep(cost)
    print(time.strftime('%Y-%m-%d %H:%M:%S %Z', time.localtime()))


def utcnow(cost=1):
    time.sleep(cost)
    print(time.strftime('%Y-%m-%d %H:%M:%S %Z', time.gmtime()))


def test_upstream_readme_quickstart(capsys):
    sched = pysched_lightning.Scheduler()
    sched.delay(trigger='recur', interval=3, priority=2, fn=now, args=(1,))
    sched.delay(trigger='recur', interval=2, priority=1, fn=utcnow, args=(1,))
    sched.start()
    try:
        wait_for(lambda: all(len(r.runs(t)) and r.runs(t)[0].done
                             for r in [sched] for t in sched.task), timeout=15)
    finally:
        sched.shutdown(wait=True)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) >= 2
    assert any(line.endswith('UTC') or line.endswith('GMT') for line in lines)


def test_upstream_readme_task_decorator(capsys):
    sched = pysched_lightning.Scheduler()
    sched.start()

    @pysched_lightning.task(sched, 'recur', 3, 2)
    def now(cost=1):
        time.sleep(cost)
        print(time.strftime('%Y-%m-%d %H:%M:%S %Z', time.localtime()))

    now.delay(cost=1)

    @pysched_lightning.task(sched, 'recur', 2, 1)
    def utcnow(cost=1):
        time.sleep(cost)
        print(time.strftime('%Y-%m-%d %H:%M:%S %Z', time.gmtime()))

    utcnow.delay(cost=1)
    try:
        wait_for(lambda: sum(sched.get_task(t)['runs'] for t in sched.task) >= 2
                 and all(sched.runs(t) and sched.runs(t)[0].done for t in sched.task),
                 timeout=15)
    finally:
        sched.shutdown(wait=True)
    assert len(capsys.readouterr().out.splitlines()) >= 2
    assert sched.stopped


def test_upstream_delay_positional_form_and_cron_number():
    results = []
    sched = pysched_lightning.Scheduler(pysched_lightning.ThreadPoolExecutor(2))
    sched.start()
    try:
        tid = sched.delay('cron', 0.01, 1, results.append, ('cron-as-delay',), {})
        sched.get_result(tid, timeout=5)
        assert results == ['cron-as-delay']
        assert sched.get_task(tid)['trigger'] == 'cron'
    finally:
        sched.shutdown(wait=True)


@pytest.mark.parametrize("task_id, name, label", [
    ("860c4d-3", "scrape the site", "task 'scrape the site' (860c4d-3)"),
    ("860c4d-3", None, "task '860c4d-3'"),
    ("nightly", "nightly", "task 'nightly'"),  # (a name that is its id says it once)
])
def test_task_label_names_a_task_by_name_and_id(task_id, name, label):
    assert task_label(task_id, name) == label


def test_log_lines_name_a_task_by_its_name_and_id_not_its_id_alone(caplog):
    """A failed run was logged as ``task '860c4d-3' run 1 failed``."""
    def scrape():
        raise ValueError("no such page")

    tid, messages = messages_of_a_failing_run(caplog, "ERROR", scrape, ValueError, "failed",
                                              name="scrape the site")
    [line] = [m for m in messages if "failed" in m]
    assert line.startswith(f"task 'scrape the site' ({tid}) run 1 failed:")
