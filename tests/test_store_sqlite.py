"""The SQLite store's file: its schema and indexes, the upgrade of a schema 1
file, and its lock and crash guarantees, with real files and real processes."""
from __future__ import annotations

import os
import pathlib
import queue
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from pysched_lightning.records.protocols import (COMPLETED, ERROR, RUN_FIELDS, RUNNING,
                                                 TIMEOUT)
import pysched_lightning.records.protocols as protocols
from pysched_lightning.durability.stores import SQLiteStore, TaskRecord
from pysched_lightning.durability.stores.schema import INDEXES, TABLES
from store_records import INTERRUPTED, claim, finished, record

ROOT = pathlib.Path(__file__).resolve().parents[1]


# -- the file ------------------------------------------------------------------

def test_sqlite_file_is_in_wal_mode_and_reopens_with_its_data(tmp_path):
    path = tmp_path / "jobs.db"
    store = SQLiteStore(path)
    store.save_task(record())
    store.finish_run(finished())
    assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    store.close()
    store.close()
    reader = sqlite3.connect(path)
    assert reader.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert reader.execute("PRAGMA user_version").fetchone()[0] == 4
    reader.close()
    with SQLiteStore(str(path)) as again:
        assert again.load_tasks() == [record()]
        assert again.runs() == [finished()]
        assert repr(again) == f"<SQLiteStore {str(path)!r}>"
        assert again.path == str(path) and again.lock_path == f"{path}.lock"
    assert "closed" in repr(again)


def test_a_store_in_a_missing_folder_is_an_error_naming_it_and_nothing_is_created(tmp_path):
    """A typo in a store's path must not create folders (SQLite does not either)."""
    folder = tmp_path / "no" / "such"
    with pytest.raises(FileNotFoundError, match=re.escape(repr(str(folder)))) as error:
        SQLiteStore(folder / "jobs.db")
    assert str(error.value).count("cannot open the store") == 1
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "no").write_text("a file")
    with pytest.raises(NotADirectoryError, match=re.escape(repr(str(tmp_path / "no")))):
        SQLiteStore(tmp_path / "no" / "jobs.db")


def test_reading_a_store_that_is_not_there_names_it_and_creates_nothing(tmp_path):
    path = tmp_path / "jobs.db"
    with pytest.raises(FileNotFoundError, match=re.escape(repr(str(path)))) as error:
        SQLiteStore(path, read_only=True)
    assert str(error.value).count("cannot open the store") == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("existing", [False, True], ids=["new file", "existing file"])
def test_a_folder_it_may_not_write_in_says_permission_denied_once(tmp_path, unwritable_folder,
                                                                 existing):
    path = unwritable_folder / "jobs.db"
    if existing:  # made before the folder became unwritable (as the fixture made it)
        root = os.geteuid() == 0
        _ = subprocess.run(["chattr", "-i", str(unwritable_folder)], check=True) if root \
            else unwritable_folder.chmod(0o755)
        sqlite3.connect(path).close()
        _ = subprocess.run(["chattr", "+i", str(unwritable_folder)], check=True) if root \
            else unwritable_folder.chmod(0o555)
    with pytest.raises(sqlite3.OperationalError) as error:
        SQLiteStore(path)
    message = str(error.value)
    assert message.startswith(f"cannot open the store {str(path)!r}: permission denied"), message
    assert message.count("cannot open the store") == 1
    assert repr(str(unwritable_folder)) in message


def test_priority_is_stored_with_its_own_type(tmp_path):
    path = tmp_path / "jobs.db"
    with SQLiteStore(path) as store:
        store.save_task(record("int", priority=3))
        store.save_task(record("float", priority=3.0))
        store.save_task(record("fraction", priority=0.25))
    reader = sqlite3.connect(path)
    assert dict(reader.execute("SELECT id, typeof(priority) FROM tasks")) == \
        {"int": "integer", "float": "real", "fraction": "real"}
    reader.close()
    with SQLiteStore(path) as again:
        assert {r.id: (type(r.priority), r.priority) for r in again.load_tasks()} == \
            {"int": (int, 3), "float": (float, 3.0), "fraction": (float, 0.25)}


def plan(store, sql, params):
    return " ".join(row[-1] for row in
                    store._conn.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall())


def test_the_dashboard_queries_read_an_index_not_the_table(tmp_path):
    """Each query the brief lists searches an index (the timings on 1,000,000
    runs are in benchmarks/store_queries.py); none scans the runs table."""
    columns = ", ".join(RUN_FIELDS)
    with SQLiteStore(tmp_path / "jobs.db") as store:
        cases = {
            "runs_task_scheduled": [
                (f"SELECT {columns} FROM runs WHERE task_id = ? "
                 "ORDER BY scheduled DESC, id DESC LIMIT ?", ("t", 50)),
                (f"SELECT {columns} FROM runs WHERE task_id = ? AND scheduled < ? "
                 "ORDER BY scheduled DESC, id DESC LIMIT ?", ("t", 5.0, 50))],
            "runs_scheduled": [
                (f"SELECT {columns} FROM runs WHERE scheduled >= ? "
                 "ORDER BY scheduled DESC, id DESC LIMIT ?", (5.0, -1)),
                ("SELECT count(*) FROM runs WHERE scheduled >= ? AND status IN (?, ?)",
                 (5.0, ERROR, TIMEOUT))],
            "sqlite_autoindex_runs_1": [  # the claim key
                ("UPDATE runs SET status = 0 WHERE task_id = ? AND slot = ? AND attempt = ?",
                 ("t", "s", 1))],
        }
        for index, queries in cases.items():
            for sql, params in queries:
                found = plan(store, sql, params)
                assert f"INDEX {index}" in found and "SCAN runs" not in found, (sql, found)
        # and these are the statements the store runs:
        store.runs("t", 50, before=5.0)
        store.count_runs(since=5.0, statuses=(ERROR, TIMEOUT))
        from pysched_lightning.durability.stores import queries as module
        assert set(module._SELECT_SQL.values()) >= {
            f"SELECT {columns} FROM runs WHERE task_id = ? AND scheduled < ? "
            "ORDER BY scheduled DESC, id DESC LIMIT ?",
            "SELECT count(*) FROM runs WHERE scheduled >= ? AND status IN (?, ?)"}


def test_finishing_a_claimed_run_leaves_the_time_indexes_alone(tmp_path):
    """The finishing UPDATE does not set ``scheduled`` (SQLite would rewrite
    both time indexes), unless the record moves the run to another time."""
    from pysched_lightning.durability.stores import statements
    assert "scheduled =" not in statements.FINISH_RUN.split("WHERE")[0]
    with SQLiteStore(tmp_path / "jobs.db") as store:
        claim(store, "t1", "s", scheduled=100.0)
        store.finish_run(finished(slot="s", scheduled=100.0))
        store.finish_run(finished(slot="s", scheduled=90.0))
        assert store.runs(before=95.0) == [finished(slot="s", scheduled=90.0)]
        assert store._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


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
    conn.execute("PRAGMA user_version = 5")
    conn.close()
    with pytest.raises(sqlite3.DatabaseError, match="newer.db.*schema version 5 is newer"):
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


# -- schema 1 files --------------------------------------------------------------

#: The schema that pysched_lightning 0.2.0's store wrote (version 1), verbatim.
SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY NOT NULL,  -- WITHOUT ROWID: one b-tree, one page per write
    name TEXT,
    "trigger" TEXT,
    "interval" TEXT,
    priority REAL,
    fn_ref TEXT,
    fn_pickle BLOB,
    args BLOB,
    kwargs BLOB,
    options BLOB,
    schedule BLOB,
    next_run REAL,
    paused INTEGER NOT NULL DEFAULT 0,
    runs INTEGER NOT NULL DEFAULT 0,
    missed INTEGER NOT NULL DEFAULT 0,
    status INTEGER NOT NULL DEFAULT 2,
    created REAL NOT NULL DEFAULT 0,
    updated REAL NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    task_id TEXT NOT NULL,
    name TEXT,
    run INTEGER,
    attempt INTEGER NOT NULL,
    status INTEGER,
    scheduled REAL NOT NULL,
    started REAL,
    finished REAL,
    duration REAL,
    exit_code INTEGER,
    result TEXT,
    error TEXT,
    traceback TEXT,
    output TEXT,
    stderr TEXT,
    UNIQUE (task_id, scheduled, attempt)
);
-- Lookups by task use the UNIQUE index, which leads with task_id. Every
-- index is one more page to write per commit, so there are few: purge()
-- scans (it is rare), and the history of all tasks walks runs_scheduled.
CREATE INDEX IF NOT EXISTS runs_scheduled ON runs (scheduled);
PRAGMA user_version = 1;
"""

V1_TASKS = [  # id, priority as the v1 store was given it, next_run, status, created
    ("daily", 2, 1_764_500_000.0, 2, 1.0),
    ("urgent", 0.5, None, 0, 2.0),
    ("huge", -3, 1_764_600_000.0, 1, 3.0),
]
V1_RUNS = [  # task_id, run, attempt, status, scheduled, started, finished, output
    ("daily", 1, 1, 0, 1_764_400_000.123, 1_764_400_000.2, 1_764_400_001.0, "ok"),
    ("daily", 2, 1, 1, 1_764_410_000.0, 1_764_410_000.5, 1_764_410_002.0, None),
    ("daily", 2, 2, 0, 1_764_410_000.0, 1_764_410_003.0, 1_764_410_004.0, "retried"),
    ("urgent", 1, 1, 3, 1_764_420_000.5, 1_764_420_000.6, None, None),
    ("urgent", 2, 1, 0, 1_764_430_000.0001, 1.0, 2.0, None),  # written by hand: two
    ("urgent", 3, 1, 0, 1_764_430_000.0002, 3.0, 4.0, None),  # times print alike
]


def make_v1_file(path):
    """A store file as pysched_lightning 0.2.0 wrote it, with tasks and runs."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(SCHEMA_V1)
    with conn:
        for task_id, priority, next_run, status, created in V1_TASKS:
            conn.execute('INSERT INTO tasks (id, name, "trigger", "interval", priority, fn_ref, '
                         "fn_pickle, args, kwargs, options, schedule, next_run, paused, runs, "
                         "missed, status, created, updated) VALUES "
                         "(?, ?, 'recur', '3', ?, ?, NULL, ?, ?, ?, ?, ?, 0, 2, 1, ?, ?, ?)",
                         (task_id, f"job {task_id}", priority, f"jobs:{task_id}", b"args",
                          b"kwargs", b"options", b"trigger", next_run, status, created, created))
        conn.executemany("INSERT INTO runs (task_id, name, run, attempt, status, scheduled, "
                         "started, finished, output) VALUES (?, 'n', ?, ?, ?, ?, ?, ?, ?)",
                         V1_RUNS)
    assert conn.execute("SELECT typeof(priority) FROM tasks").fetchall() == [("real",)] * 3
    conn.close()


def test_a_schema_1_file_is_upgraded_when_opened(tmp_path, caplog):
    path = tmp_path / "v1.db"
    make_v1_file(path)
    with caplog.at_level("INFO", logger="pysched_lightning"):
        store = SQLiteStore(path)
    with store:
        assert "schema 1 upgraded to 4 (3 tasks, 6 runs)" in caplog.text
        tasks = {r.id: r for r in store.load_tasks()}
        assert [r.id for r in store.load_tasks()] == ["daily", "urgent", "huge"]
        assert {i: (type(r.priority), r.priority) for i, r in tasks.items()} == \
            {"daily": (int, 2), "urgent": (float, 0.5), "huge": (int, -3)}
        assert tasks["daily"] == TaskRecord(
            "daily", "job daily", "recur", "3", 2, "jobs:daily", None, b"args", b"kwargs",
            b"options", b"trigger", 1_764_500_000.0, False, 2, 1, 2, 1.0, 1.0, None)
        runs = store.runs()
        assert [(r["task_id"], r["slot"], r["attempt"]) for r in runs] == [
            ("urgent", "1764430000.000#6", 1), ("urgent", "1764430000.000", 1),
            ("urgent", "1764420000.500", 1), ("daily", "1764410000.000", 2),
            ("daily", "1764410000.000", 1), ("daily", "1764400000.123", 1)]
        assert runs[-1] == dict.fromkeys(RUN_FIELDS) | dict(
            task_id="daily", name="n", run=1, attempt=1, slot="1764400000.123",
            status=COMPLETED, scheduled=1_764_400_000.123, started=1_764_400_000.2,
            finished=1_764_400_001.0, output="ok", count=1)
        assert store.mark_interrupted() == 1  # the run left RUNNING by the old process
        assert store.count_runs("urgent", statuses=[protocols.INTERRUPTED]) == 1
        # An old run's slot is the one a scheduler computes for that time: never re-run.
        assert claim(store, "daily", "1764410000.000", 2) is False
        assert claim(store, "daily", "1764410000.000", 3) is True
    SQLiteStore(tmp_path / "new.db").close()
    migrated, new = sqlite3.connect(path), sqlite3.connect(tmp_path / "new.db")
    schema = "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name"
    assert migrated.execute(schema).fetchall() == new.execute(schema).fetchall()
    assert {row[1] for row in migrated.execute(schema)} == {
        "tasks", "runs", "sqlite_autoindex_runs_1", "runs_task_scheduled", "runs_scheduled",
        "control_requests", "control_requests_state", "sqlite_sequence"}
    assert migrated.execute("PRAGMA user_version").fetchone()[0] == 4
    assert migrated.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    migrated.close()
    new.close()
    with SQLiteStore(path) as again:  # opening it again changes nothing
        assert again.count_runs() == 7


# Schema 2's runs table: this one's, without the process of a claim.
RUNS_V2 = TABLES[1].replace("""    pid INTEGER,  -- a RUNNING claim's process, and its start time (clock ticks)
    pid_started INTEGER,
""", "")


def make_v2_file(path):
    """A store file as the version before this one wrote it: a run that a
    crash interrupted is an error with the INTERRUPTED text."""
    assert "pid" not in RUNS_V2
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(f"{TABLES[0]};\n{RUNS_V2};\nPRAGMA user_version = 2;")
    with conn:
        for slot, status, error in (("1.000", ERROR, INTERRUPTED), ("2.000", ERROR, "boom"),
                                    ("3.000", RUNNING, None), ("4.000", TIMEOUT, None)):
            conn.execute("INSERT INTO runs (task_id, run, attempt, slot, status, scheduled, "
                         "error) VALUES ('t', 1, 1, ?, ?, 1.0, ?)", (slot, status, error))
    conn.close()


def test_a_schema_2_file_reads_its_interrupted_runs_as_interrupted(tmp_path, caplog):
    path = tmp_path / "v2.db"
    make_v2_file(path)
    with SQLiteStore(path, read_only=True) as reader:  # read as it is, not upgraded
        assert [r["status"] for r in reader.runs()] == [TIMEOUT, RUNNING, ERROR, ERROR]
    with caplog.at_level("INFO", logger="pysched_lightning"):
        store = SQLiteStore(path)
    with store:
        assert "schema 2 upgraded to 4 (0 tasks, 4 runs)" in caplog.text
        assert [(r["slot"], r["status"]) for r in store.runs()] == [
            ("4.000", TIMEOUT), ("3.000", RUNNING), ("2.000", ERROR),
            ("1.000", protocols.INTERRUPTED)]
        store.note_process("t", "3.000", 1, 42, 7)  # the columns a claim's process needs
        assert [c["pid"] for c in store.claimed_processes()] == [42]
        assert store.mark_interrupted() == 1
        assert store.count_runs(statuses=[protocols.INTERRUPTED]) == 2
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 4
    conn.close()


def make_v3_file(path):
    """A store file as schema 3 wrote it: no control requests."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(";\n".join((*TABLES, *INDEXES)) + ";\nPRAGMA user_version = 3;")
    with conn:
        conn.execute("INSERT INTO tasks (id, \"trigger\", \"interval\", priority, args, kwargs) "
                     "VALUES ('t', 'recur', '5', 1, x'00', x'00')")
        conn.execute(f"INSERT INTO runs (task_id, run, attempt, slot, status, scheduled, pid, "
                     f"pid_started) VALUES ('t', 1, 1, '1.000', {RUNNING}, 1.0, 42, 7)")
    conn.close()


def test_a_schema_3_file_gains_control_requests_when_a_scheduler_opens_it(tmp_path, caplog):
    path = tmp_path / "v3.db"
    make_v3_file(path)
    with SQLiteStore(path, read_only=True) as reader:  # read as it is, not upgraded
        assert [r.id for r in reader.load_tasks()] == ["t"]
    # A dashboard that would write requests never upgrades the file: it says so.
    with pytest.raises(sqlite3.DatabaseError, match="v3.db.*schema version 3 has no control "
                                                    "requests.*pysched run"):
        SQLiteStore(path, read_only=True, control=True)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 3
    conn.close()
    with caplog.at_level("INFO", logger="pysched_lightning"):
        store = SQLiteStore(path)
    with store:
        assert "schema 3 upgraded to 4 (1 tasks, 1 runs)" in caplog.text
        assert [r.id for r in store.load_tasks()] == ["t"]
        assert [c["pid"] for c in store.claimed_processes()] == [42]
        request = store.request_control("pause", "t", "test")
        assert store.control_request(request)["state"] == "pending"
    SQLiteStore(tmp_path / "new.db").close()
    migrated, new = sqlite3.connect(path), sqlite3.connect(tmp_path / "new.db")
    schema = "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name"
    assert migrated.execute(schema).fetchall() == new.execute(schema).fetchall()
    assert migrated.execute("PRAGMA user_version").fetchone()[0] == 4
    migrated.close()
    new.close()
    with SQLiteStore(path, read_only=True, control=True) as dashboard:
        assert dashboard.control_request(request)["task_id"] == "t"


def test_a_control_reader_writes_control_requests_and_nothing_else(tmp_path):
    path = tmp_path / "jobs.db"
    with SQLiteStore(path) as store:
        store.save_task(record())
    with SQLiteStore(path, read_only=True, control=True) as dashboard:
        assert dashboard.request_control("cancel", "t", "dashboard") == 1
        assert dashboard.control_request(1)["action"] == "cancel"
        for sql in ("DELETE FROM tasks", "UPDATE runs SET status = 0",
                    "CREATE TABLE more (x)", "DROP TABLE control_requests",
                    "PRAGMA user_version = 9"):
            with pytest.raises(sqlite3.DatabaseError, match="not authorized"):
                dashboard._conn.execute(sql)
        with pytest.raises(PermissionError):
            dashboard.acquire("dashboard")
    with SQLiteStore(path) as store:
        assert [r.id for r in store.load_tasks()] == [record().id]
        assert store.take_control_requests("scheduler")[0]["id"] == 1


def test_a_failed_upgrade_leaves_the_schema_1_file_as_it_was(tmp_path):
    path = tmp_path / "v1.db"
    make_v1_file(path)
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE runs_v1 (x)")  # in the upgrade's way: it fails half-way
    conn.commit()
    before = conn.execute("SELECT * FROM runs ORDER BY id").fetchall()
    conn.close()
    with pytest.raises(sqlite3.OperationalError, match="v1.db.*runs_v1"):
        SQLiteStore(path)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    assert conn.execute("SELECT * FROM runs ORDER BY id").fetchall() == before
    assert conn.execute("SELECT typeof(priority) FROM tasks").fetchall() == [("real",)] * 3
    assert "tasks_v1" not in {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()


def test_stores_opening_a_schema_1_file_together_upgrade_it_once(tmp_path):
    path = tmp_path / "v1.db"
    make_v1_file(path)
    start, opened, failed = threading.Barrier(3), [], []

    def open_it():
        start.wait()
        try:
            opened.append(SQLiteStore(path))
        except Exception as exc:  # reported by the assertion below
            failed.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert failed == [] and len(opened) == 3
        assert all(s.count_runs() == 6 and len(s.load_tasks()) == 3 for s in opened)
    finally:
        for store in opened:
            store.close()


# -- other processes -------------------------------------------------------------

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
    store.claim_run("from-child", "5.000", 1, run=1, name="n", scheduled=5.0, started=6.0)
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
        assert store.task("from-child").priority == 1
        assert store.runs()[0]["status"] == RUNNING
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
        task_id, slot = f"t{i}", f"{i}.000"
        record = TaskRecord(task_id, "n", "recur", "1", 1, None, b"f" * 200, b"a", b"k",
                            b"o" * 300, b"s", float(i), created=float(i), info='{"i": 1}')
        if i % 5 == 0:
            with store.batch():
                store.save_task(record)
                store.claim_run(task_id, slot, 1, run=1, name="n", scheduled=float(i),
                                started=float(i))
                store.update_task(task_id, runs=1)
        else:
            store.save_task(record, replace=False)
            store.update_task(task_id, next_run=i + 1.0, runs=i)
            store.claim_run(task_id, slot, 1, run=1, name="n", scheduled=float(i),
                            started=float(i))
        os.write(1, f"saved {task_id} .\\n".encode())  # one write: a whole line or none
        store.finish_run({"task_id": task_id, "slot": slot, "attempt": 1, "status": 0,
                          "scheduled": float(i), "output": "x" * 500})
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
                    reader.count_runs(since=0.0, statuses=(COMPLETED,))
            reported += [line.split()[1] for line in child.kill() if line.endswith(" .")]
    with SQLiteStore(path) as store:
        loaded = {r.id: r for r in store.load_tasks()}
        assert set(reported) <= set(loaded)
        assert all(r.options == b"o" * 300 for r in loaded.values())
        runs = store.runs()
        assert {r["task_id"] for r in runs} >= set(reported)
        assert store._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        store.mark_interrupted()
        assert store.count_runs(statuses=[RUNNING]) == 0
        # At most the run in flight when each child was killed.
        assert sum(r["error"] == INTERRUPTED for r in store.runs()) <= 3


RACER = """
    import sys
    from pysched_lightning.stores import SQLiteStore
    store = SQLiteStore(sys.argv[1])
    print("ready", flush=True)
    sys.stdin.readline()
    won = [k for k in range(300)
           if store.claim_run("race", f"{k}.000", 1, run=k, name="race", scheduled=float(k),
                              started=float(k))]
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
        assert store.count_runs("race") == 300
