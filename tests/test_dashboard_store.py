"""Reading a store without writing it: SQLiteStore(read_only=True), the mode
the dashboard opens a store in, beside a scheduler that keeps writing."""
from __future__ import annotations

import os
import sqlite3

import pytest

import pysched_lightning as psl
from conftest import wait_for
from pysched_lightning.durability.stores import SQLiteStore, open_store
from store_records import record


def test_a_reader_sees_a_running_scheduler_write(tmp_path):
    path = str(tmp_path / "jobs.db")
    sched = psl.Scheduler(store=path)
    try:
        sched.delay("recur", 0.05, 1, int, task_id="tick")
        reader = open_store(f"sqlite:///{path}", read_only=True)
        try:
            assert reader.read_only and "read-only" in repr(reader)
            assert [t.id for t in reader.load_tasks()] == ["tick"]
            sched.start()
            wait_for(lambda: reader.count_runs("tick") >= 3)
            assert reader.holder() is not None                       # the scheduler's hold
            assert all(run["status"] in (0, 3) for run in reader.runs("tick"))
        finally:
            reader.close()
    finally:
        sched.shutdown()


def test_a_read_only_store_refuses_every_write_and_the_hold(tmp_path):
    path = tmp_path / "jobs.db"
    writer = SQLiteStore(path)
    writer.save_task(record("a"))
    writer.close()
    before = path.read_bytes()
    reader = SQLiteStore(path, read_only=True)
    try:
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            reader.save_task(record("b"))
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            reader.update_task("a", paused=True)
        with pytest.raises(PermissionError, match="read-only"):
            reader.acquire("me")
        assert not os.path.exists(reader.lock_path)                 # no lock file made
        assert [t.id for t in reader.load_tasks()] == ["a"]
    finally:
        reader.close()
    assert path.read_bytes() == before


def test_a_missing_file_is_an_error_and_is_not_created(tmp_path):
    missing = tmp_path / "sub" / "none.db"
    with pytest.raises(FileNotFoundError) as caught:
        SQLiteStore(missing, read_only=True)
    assert str(missing) in str(caught.value)
    assert not missing.parent.exists()


def test_a_file_that_is_no_store_or_an_old_schema_is_refused(tmp_path):
    plain = tmp_path / "plain.db"
    sqlite3.connect(plain).execute("CREATE TABLE t (a)").connection.close()
    with pytest.raises(sqlite3.DatabaseError, match="not a pysched_lightning store"):
        SQLiteStore(plain, read_only=True)
    old = tmp_path / "old.db"
    conn = sqlite3.connect(old)
    conn.execute("CREATE TABLE tasks (id TEXT PRIMARY KEY)")
    conn.execute("PRAGMA user_version = 1")
    conn.close()
    with pytest.raises(sqlite3.DatabaseError, match="upgraded"):
        SQLiteStore(old, read_only=True)
    conn = sqlite3.connect(old)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1     # left as it was
    conn.close()


def test_memory_cannot_be_opened_read_only():
    with pytest.raises(ValueError, match="nothing to read"):
        open_store("memory://", read_only=True)
