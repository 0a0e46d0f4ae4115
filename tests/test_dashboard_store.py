"""Reading a store without writing it: SQLiteStore(read_only=True), the mode
the dashboard opens a store in, beside a scheduler that keeps writing."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

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


def _files(folder):
    return sorted(os.listdir(folder))


def test_reading_a_closed_store_leaves_no_wal_or_shm_file(tmp_path):
    path = tmp_path / "jobs.db"
    writer = SQLiteStore(path)
    writer.save_task(record("a"))
    writer.close()
    before = _files(tmp_path)
    assert "jobs.db-wal" not in before and "jobs.db-shm" not in before
    reader = SQLiteStore(path, read_only=True)
    try:
        assert [t.id for t in reader.load_tasks()] == ["a"]     # reading makes -wal and -shm
    finally:
        reader.close()
    assert _files(tmp_path) == before


_WRITE_AND_EXIT = """
import sys
import pysched_lightning as psl
sched = psl.Scheduler(store=sys.argv[1])
sched.delay("once", 3600, 1, int, task_id="added-by-another-process")
sched.shutdown()
"""


def test_a_writer_that_exits_while_a_reader_reads_leaves_its_writes_in_the_file(tmp_path):
    path = tmp_path / "jobs.db"
    writer = SQLiteStore(path)
    writer.save_task(record("a"))
    writer.close()
    reader = SQLiteStore(path, read_only=True)
    try:
        reader.load_tasks()
        subprocess.run([sys.executable, "-c", _WRITE_AND_EXIT, str(path)], check=True,
                       timeout=60)
        # The writer was not the last connection, so it could not fold its WAL back.
        assert os.path.getsize(f"{path}-wal") > 0
        assert "added-by-another-process" in [t.id for t in reader.load_tasks()]
    finally:
        reader.close()
    assert not os.path.exists(f"{path}-wal") and not os.path.exists(f"{path}-shm")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)                 # the file alone
    try:
        ids = {row[0] for row in conn.execute("SELECT id FROM tasks")}
    finally:
        conn.close()
    assert ids == {"a", "added-by-another-process"}


def test_a_reader_leaves_a_live_writers_wal_alone(tmp_path):
    path = tmp_path / "jobs.db"
    writer = SQLiteStore(path)
    try:
        writer.save_task(record("a"))
        reader = SQLiteStore(path, read_only=True)
        assert [t.id for t in reader.load_tasks()] == ["a"]
        reader.close()
        assert os.path.exists(f"{path}-wal") and os.path.exists(f"{path}-shm")
        writer.save_task(record("b"))                                  # still writes
        assert [t.id for t in writer.load_tasks()] == ["a", "b"]
    finally:
        writer.close()
    assert not os.path.exists(f"{path}-wal")
