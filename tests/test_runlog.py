"""The JSON run log, with real files."""
from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from pysched_lightning.durability.runlog import RunLog, read_run_log

DAY = 86400
#: 2020-01-01 00:00:00 UTC, for rotated file names we can predict.
BASE = 1577836800.0


def _record(task_id="t1", **extra):
    record = {
        "task_id": task_id, "name": "command 'backup'", "status": "Completed",
        "attempt": 1, "run": 7,
        "scheduled": 1700000000.0, "started": 1700000000.25, "finished": 1700000001.5,
        "duration": 1.25, "exit_code": 0, "output": "done\n", "error": None,
        "traceback": None, "result": "CommandResult(exit_code=0, ...)",
    }
    record.update(extra)
    return record


def _raw_lines(path):
    with open(path, "rb") as stream:
        data = stream.read()
    assert data.endswith(b"\n")
    return data[:-1].split(b"\n")


@pytest.fixture
def runlog(tmp_path):
    (tmp_path / "logs").mkdir()
    log = RunLog(tmp_path / "logs" / "job_status.log")
    yield log
    log.close()


def test_lines_are_json_with_iso_utc_times_in_the_given_order(runlog):
    runlog.write(_record())
    runlog.write(_record("t2", status="Error", exit_code=1, error="boom"))
    lines = _raw_lines(runlog.path)
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert list(first) == list(_record())
    assert first["scheduled"] == "2023-11-14T22:13:20.000000+00:00"
    assert first["started"] == "2023-11-14T22:13:20.250000+00:00"
    finished = datetime.fromisoformat(first["finished"])
    assert finished.utcoffset() == timedelta(0)
    assert finished.timestamp() == 1700000001.5
    assert first["duration"] == 1.25
    assert first["error"] is None
    assert json.loads(lines[1])["error"] == "boom"
    assert read_run_log(runlog.path) == [json.loads(line) for line in lines]


def test_datetimes_and_at_keys_become_utc(runlog):
    berlin = timezone(timedelta(hours=1))
    runlog.write({"task_id": "t", "next_run_at": 1577836800,
                  "created_at": datetime(2020, 1, 1, 1, 0, tzinfo=berlin),
                  "started": datetime(2020, 1, 1, tzinfo=timezone.utc),
                  "when": datetime(2020, 1, 1, 12, 30, tzinfo=berlin),
                  "finished": None, "duration": 0.5})
    [record] = read_run_log(runlog.path)
    assert record["next_run_at"] == "2020-01-01T00:00:00.000000+00:00"
    assert record["created_at"] == "2020-01-01T00:00:00.000000+00:00"
    assert record["started"] == "2020-01-01T00:00:00.000000+00:00"
    assert record["when"] == "2020-01-01T11:30:00.000000+00:00"
    assert record["finished"] is None
    assert record["duration"] == 0.5


def test_a_missing_folder_is_an_error_naming_it_and_nothing_is_created(tmp_path):
    """A typo in the path must not create folders (as open() and SQLite do)."""
    folder = tmp_path / "a" / "b"
    with pytest.raises(FileNotFoundError, match=re.escape(repr(str(folder)))):
        RunLog(folder / "runs.log")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "a").write_text("a file")
    with pytest.raises(NotADirectoryError, match=re.escape(repr(str(tmp_path / "a")))):
        RunLog(tmp_path / "a" / "runs.log")


class _Opaque:
    def __repr__(self):
        return "<Opaque thing>"


class _BadRepr:
    def __repr__(self):
        raise RuntimeError("no repr for you")


def test_values_json_cannot_hold_are_written_as_repr(runlog, caplog):
    runlog.write(_record(
        result=_Opaque(), output=b"bytes", exit_code=frozenset({1}),
        extra={"nested": [_Opaque(), float("nan"), (1, 2)], (1, 2): "tuple key"},
        weird=_BadRepr(), finished=1e300, scheduled="not a time",
        text="line\u2028separator\nand newline"))
    [line] = _raw_lines(runlog.path)
    record = json.loads(line)
    assert record["result"] == "<Opaque thing>"
    assert record["output"] == "b'bytes'"
    assert record["exit_code"] == "frozenset({1})"
    assert record["extra"] == {"nested": ["<Opaque thing>", "nan", [1, 2]],
                               "(1, 2)": "tuple key"}
    assert record["weird"] == "<unrepresentable _BadRepr>"
    assert record["finished"] == "1e+300"
    assert record["scheduled"] == "not a time"
    assert record["text"] == "line\u2028separator\nand newline"
    assert read_run_log(runlog.path) == [record]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("repr() of a _BadRepr" in w for w in warnings)
    assert any("finished=1e+300" in w for w in warnings)


def test_record_must_be_a_mapping(runlog):
    with pytest.raises(TypeError, match=r"\['not', 'a', 'mapping'\]"):
        runlog.write(["not", "a", "mapping"])


def test_concurrent_writers_produce_whole_lines(runlog):
    writers, per_writer = 8, 150
    barrier = threading.Barrier(writers)

    def write(n):
        barrier.wait()
        for i in range(per_writer):
            runlog.write(_record(f"w{n}", run=i, output=f"{n}:{i}:" + "x" * 5000))

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = _raw_lines(runlog.path)
    assert len(lines) == writers * per_writer
    seen = set()
    for line in lines:
        record = json.loads(line)
        assert record["output"] == f"{record['task_id'][1:]}:{record['run']}:" + "x" * 5000
        seen.add((record["task_id"], record["run"]))
    assert len(seen) == writers * per_writer


def _roll_over_on_next_write(log, day):
    """Make the next write roll over, naming the old file for *day* after BASE."""
    log._handler.rolloverAt = BASE + (day + 1) * DAY


def test_rotation_keeps_backup_count_files(tmp_path):
    path = tmp_path / "runs.log"
    log = RunLog(path, backup_count=3)
    try:
        log.write(_record(run=0))
        for day in range(5):
            _roll_over_on_next_write(log, day)
            log.write(_record(run=day + 1))
    finally:
        log.close()
    rotated = sorted(name for name in os.listdir(tmp_path) if name != "runs.log")
    assert rotated == ["runs.log.2020-01-03", "runs.log.2020-01-04", "runs.log.2020-01-05"]
    assert [r["run"] for r in read_run_log(path)] == [5]
    assert [r["run"] for r in read_run_log(tmp_path / "runs.log.2020-01-04")] == [3]
    everything = read_run_log(path, include_rotated=True)
    assert [r["run"] for r in everything] == [2, 3, 4, 5]


def test_rotation_prunes_old_files_from_earlier_runs_of_the_program(tmp_path):
    for day in range(1, 6):
        (tmp_path / f"runs.log.2019-12-0{day}").write_text("{}\n")
    (tmp_path / "runs.log.notes").write_text("kept: not a rotated file\n")
    log = RunLog(tmp_path / "runs.log", backup_count=2)
    try:
        log.write(_record(run=1))
        _roll_over_on_next_write(log, 0)
        log.write(_record(run=2))
    finally:
        log.close()
    assert sorted(os.listdir(tmp_path)) == [
        "runs.log", "runs.log.2019-12-05", "runs.log.2020-01-01", "runs.log.notes"]


def test_read_run_log_skips_a_torn_last_line(tmp_path, caplog):
    path = tmp_path / "runs.log"
    with RunLog(path) as log:
        log.write(_record("a"))
        log.write(_record("b"))
    with open(path, "ab") as stream:
        stream.write(b'{"task_id": "c", "output": "cut in the mid')
    assert [r["task_id"] for r in read_run_log(path)] == ["a", "b"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_read_run_log_skips_a_corrupt_line_with_a_warning(tmp_path, caplog):
    path = tmp_path / "runs.log"
    path.write_bytes(b'{"task_id": "a"}\nnot json\n[1, 2]\n{"task_id": "b"}\n')
    assert [r["task_id"] for r in read_run_log(path)] == ["a", "b"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and "line 2" in warnings[0]


def test_read_run_log_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_run_log(tmp_path / "nope.log")


def test_write_after_close_is_dropped_with_a_warning(tmp_path, caplog):
    path = tmp_path / "runs.log"
    log = RunLog(path)
    log.write(_record("a"))
    log.close()
    log.write(_record("b"))
    assert [r["task_id"] for r in read_run_log(path)] == ["a"]
    assert any("closed" in r.getMessage() for r in caplog.records)
    assert "closed" in repr(log)


def test_run_log_does_not_touch_the_logging_tree(tmp_path):
    loggers = dict(logging.Logger.manager.loggerDict)
    root_handlers = list(logging.getLogger().handlers)
    with RunLog(tmp_path / "runs.log") as log:
        log.write(_record())
    assert logging.Logger.manager.loggerDict == loggers
    assert logging.getLogger().handlers == root_handlers


@pytest.mark.parametrize("kwargs, exc, fragment", [
    (dict(when="fortnight"), ValueError, "'fortnight'"),
    (dict(backup_count=-1), ValueError, "-1"),
    (dict(backup_count="30"), TypeError, "'30'"),
    (dict(utc="yes"), TypeError, "'yes'"),
])
def test_validation(tmp_path, kwargs, exc, fragment):
    with pytest.raises(exc) as info:
        RunLog(tmp_path / "runs.log", **kwargs)
    assert fragment in str(info.value)


def test_other_rotation_intervals_are_accepted(tmp_path):
    for when in ("H", "d", "W0", "midnight", "S"):
        with RunLog(tmp_path / f"{when}.log", when=when, utc=False) as log:
            log.write(_record())


# -- a scheduler's run log ---------------------------------------------------------


def slow_first(folder):
    """Its first call waits (up to 30 s) for the file ``go`` in *folder*."""
    calls = os.path.join(folder, "calls")
    with open(calls, "a") as out:
        out.write("call\n")
    with open(calls) as kept:
        first = len(kept.read().split()) == 1
    go = os.path.join(folder, "go")
    deadline = time.monotonic() + 30
    while first and not os.path.exists(go) and time.monotonic() < deadline:
        time.sleep(0.01)


def test_a_stretch_of_skipped_runs_is_written_once_with_its_final_count(tmp_path):
    """While a slow run goes on, its task's next slots are skipped: the store
    keeps one MISSED record whose count grows. The run log gets that record
    once, with its final count (not once per skip, the same slot again with
    count 1, then 2...), so a sum of counts over the log is right."""
    import pysched_lightning as psl
    from conftest import wait_for

    path = tmp_path / "job_status.log"
    calls = tmp_path / "calls"
    sched = psl.Scheduler(store=str(tmp_path / "jobs.db"), run_log=str(path))
    try:
        tid = sched.delay('recur', 0.05, 1, slow_first, args=(str(tmp_path),), task_id='slow')
        sched.start()
        wait_for(lambda: any(run.status is psl.TaskStatus.MISSED and run.count >= 3
                             for run in sched.runs(tid)), 20)
        (tmp_path / "go").write_text("go")
        wait_for(lambda: calls.exists() and len(calls.read_text().split()) >= 3, 20)
    finally:
        (tmp_path / "go").write_text("go")
        sched.shutdown()
    stored = [run for run in sched.runs(tid) if run.status is psl.TaskStatus.MISSED]
    logged = [r for r in read_run_log(path) if r["status"] == "Missed"]
    assert [r["slot"] for r in logged] == sorted({r["slot"] for r in logged})  # each once
    assert sorted((r["slot"], r["count"]) for r in logged) == sorted(
        (run._stored["slot"], run.count) for run in stored)
    assert sum(r["count"] for r in logged) == sched.store.task(tid).missed >= 3
