"""The PostgreSQL store's own guarantees, on a real server: its URLs, its
schema made once by nodes opening a fresh database together, leases in the
database's time, reaping, fencing, claims raced by several processes, and
the changes other nodes notice. (The rules it shares with every store are
checked in test_stores.py.) Several nodes are several processes."""
from __future__ import annotations

import multiprocessing
import os
import pathlib
import subprocess
import sys
import threading

import psycopg
import pytest

from pysched_lightning.durability.stores import ClaimLostError, open_store
from pysched_lightning.durability.stores.postgres import PostgresStore
from pysched_lightning.durability.stores.postgres_schema import SCHEMA_VERSION, SchemaError
from pysched_lightning.records.protocols import INTERRUPTED, RUNNING
from conftest import wait_for
from store_records import INTERRUPTED as INTERRUPTED_TEXT, claim, finished, record

SPAWN = multiprocessing.get_context("spawn")
ROOT = pathlib.Path(__file__).resolve().parents[1]


def in_processes(target, *arg_lists, timeout=60.0):
    """Run target(start, results, *args) in one process per argument list,
    all released together by a barrier; their results, in order."""
    start, results = SPAWN.Barrier(len(arg_lists)), SPAWN.Queue()
    processes = [SPAWN.Process(target=target, args=(start, results, n, *args))
                 for n, args in enumerate(arg_lists)]
    for process in processes:
        process.start()
    try:
        got = dict(results.get(timeout=timeout) for _ in processes)
    finally:
        for process in processes:
            process.join(timeout)
    assert all(process.exitcode == 0 for process in processes), got
    return [got[n] for n in range(len(processes))]


def expired(store, lease_until):
    return store.now() > lease_until


# -- nodes in other processes -------------------------------------------------------

def open_at_once(start, results, n, url):
    start.wait()
    try:
        PostgresStore(url).close()
        results.put((n, "ok"))
    except Exception as exc:  # reported to the test, which fails with it
        results.put((n, repr(exc)))


def die_holding_claims(start, results, n, url, count):
    """A node that claims *count* runs and dies without releasing anything."""
    store = PostgresStore(url, lease=0.3)
    store.acquire(f"dead-{n}")
    start.wait()
    granted = store.claim_runs([("dead", f"{k}.000", 1, k, "dead task", float(k), float(k))
                                for k in range(count)])
    results.put((n, (store.epoch, sum(granted))))
    results.close()
    results.join_thread()  # (the answer is sent before the process dies)
    os._exit(0)  # no release, no close: the lease just runs out


def reap_at_once(start, results, n, url):
    store = PostgresStore(url)
    store.acquire(f"reaper-{n}")
    start.wait()
    reaped = store.reap()
    store.close()
    results.put((n, [(r["task_id"], r["slot"], r["attempt"]) for r in reaped]))


def race_claims(start, results, n, url, keys):
    store = PostgresStore(url)
    store.acquire(f"racer-{n}")
    start.wait()
    mine = []
    for at in range(0, keys, 64):
        batch = [("race", f"{k}.000", 1, k, "race", float(k), float(k))
                 for k in range(at, min(at + 64, keys))]
        mine.extend(k for k, won in zip(range(at, keys), store.claim_runs(batch)) if won)
    store.close()
    results.put((n, mine))


def save_a_task(start, results, n, url, task_id):
    start.wait()
    with PostgresStore(url) as store:
        store.save_task(record(task_id))
    results.put((n, "saved"))


# -- URLs and opening -----------------------------------------------------------------

def test_urls_open_a_postgres_store_and_never_show_the_password(postgres_url):
    scheme, rest = postgres_url.split("://", 1)
    user, host = rest.split("@", 1)
    with_password = f"postgresql://{user}:s3cret@{host}"  # (trust auth: not asked for)
    for url in (postgres_url, "postgres://" + rest, with_password,
                postgres_url + "?password=s3cret&application_name=psl"):
        store = open_store(url)
        try:
            assert isinstance(store, PostgresStore)
            assert "s3cret" not in repr(store) and "s3cret" not in store.url
            store.save_task(record())
            assert store.task("t1") == record()
        finally:
            store.close()
    assert repr(open_store(with_password, read_only=True)).endswith("read-only>")
    assert "***" in PostgresStore(with_password).url


def test_without_psycopg_open_store_says_what_to_install():
    code = ("import sys; sys.modules['psycopg'] = None  # as if not installed\n"
            "from pysched_lightning.durability.stores import open_store\n"
            "try:\n    open_store('postgresql://u:s3cret@db.example/jobs')\n"
            "except ImportError as exc:\n    print(exc)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 0, done.stderr
    assert "pip install '.[postgres]'" in done.stdout and "postgresql://u:***@" in done.stdout
    assert "s3cret" not in done.stdout


def test_a_connection_failure_names_where_without_the_password(postgres_url):
    url = "postgresql://postgres:s3cret@127.0.0.1:1/nowhere_db"
    with pytest.raises(psycopg.OperationalError) as raised:
        PostgresStore(url)
    message = str(raised.value)
    assert "127.0.0.1" in message and "port 1" in message and "nowhere_db" in message
    assert "s3cret" not in message and "***" in message
    with pytest.raises(ValueError, match="lease"):
        PostgresStore(postgres_url, lease=0)


def test_a_fresh_database_opened_by_two_processes_at_once_gets_its_schema_once(postgres_url):
    assert in_processes(open_at_once, (postgres_url,), (postgres_url,)) == ["ok", "ok"]
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT version FROM pysched_schema").fetchall() == \
            [(SCHEMA_VERSION,)]
    with PostgresStore(postgres_url) as store:  # opened again: nothing to do
        store.save_task(record())
        assert [r.id for r in store.load_tasks()] == ["t1"]


def test_a_newer_schema_is_refused(postgres_url):
    PostgresStore(postgres_url).close()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("UPDATE pysched_schema SET version = %s", (SCHEMA_VERSION + 1,))
    for read_only in (False, True):
        with pytest.raises(SchemaError, match=f"version {SCHEMA_VERSION + 1} is newer"):
            PostgresStore(postgres_url, read_only=read_only)


def test_read_only_reads_and_refuses_writes(postgres_url):
    with pytest.raises(SchemaError, match="not a pysched_lightning store.*empty"):
        PostgresStore(postgres_url, read_only=True)
    with PostgresStore(postgres_url) as writer:
        writer.save_task(record())
        writer.finish_run(finished())
    with PostgresStore(postgres_url, read_only=True) as reader:
        assert reader.load_tasks() == [record()] and reader.runs() == [finished()]
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            reader.save_task(record("t2"))
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            claim(reader, "t2")
        with pytest.raises(PermissionError, match="read-only"):
            reader.acquire("reader")
        assert reader.load_tasks() == [record()] and len(reader.runs()) == 1
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE other_things (x int)")
        conn.execute("DROP TABLE pysched_schema")
    with pytest.raises(SchemaError, match="not a pysched_lightning store.*no pysched_schema"):
        PostgresStore(postgres_url, read_only=True)


# -- leases ------------------------------------------------------------------------------

def test_a_lost_lease_is_not_renewed_and_a_claim_joins_again_under_a_new_epoch(
        postgres_url):
    with PostgresStore(postgres_url, lease=0.3) as store:
        assert store.epoch is None and store.holder() is None
        assert store.acquire("node-a") is True
        first = store.epoch
        [node] = store.nodes()
        assert (node["owner"], node["epoch"], node["pid"]) == ("node-a", first, os.getpid())
        assert node["lease_until"] > node["joined"]
        assert claim(store, "t1", "1.000") is True and not store.lost_lease
        wait_for(lambda: expired(store, node["lease_until"]))
        assert store.renew() is False and store.nodes() == []
        # The next claim finds the lease lost: the node joins again (a new
        # epoch), and the claim counts under it.
        assert claim(store, "t1", "2.000") is True
        second = store.epoch
        assert second > first and not store.lost_lease
        [node] = store.nodes()
        wait_for(lambda: expired(store, node["lease_until"]))
        assert store.claim_runs([("t1", "3.000", 1, 3, "n", 3.0, 3.0)]) == [True]
        assert store.epoch > second
        # The claim of the first epoch is no longer this node's to finish.
        with pytest.raises(ClaimLostError):
            store.finish_run(finished("t1", "1.000"))
        assert store.renew() is True
        [(owner, epoch)] = [(r["owner"], r["epoch"]) for r in store.nodes()]
        assert (owner, epoch) == ("node-a", store.epoch)
        store.release()
        store.release()  # idempotent
        assert store.epoch is None and store.nodes() == [] and store.renew() is False


def test_reapers_interrupt_a_dead_nodes_runs_once_and_never_a_live_ones(postgres_url):
    live = PostgresStore(postgres_url)
    live.acquire("live")
    try:
        assert live.claim_runs([("live", f"{k}.000", 1, k, "live task", float(k), float(k))
                                for k in range(50)]) == [True] * 50
        [(dead_epoch, granted)] = in_processes(die_holding_claims, (postgres_url, 300))
        assert granted == 300
        wait_for(lambda: live.count_runs("dead", statuses=[RUNNING]) == 300
                 and all(n["owner"] != "dead-0" for n in live.nodes()))
        first, second = in_processes(reap_at_once, (postgres_url,), (postgres_url,))
        assert not set(first) & set(second)
        assert sorted(first + second) == sorted(("dead", f"{k}.000", 1) for k in range(300))
        reaped = live.runs("dead")
        assert {(r["status"], r["error"]) for r in reaped} == {(INTERRUPTED, INTERRUPTED_TEXT)}
        assert all(r["finished"] is not None for r in reaped)
        assert live.count_runs("live", statuses=[RUNNING]) == 50  # a live node's: untouched
        assert live.reap() == [] and live.mark_interrupted() == 0
        _, changes = live.changes_since(0)
        assert [(task, kind) for _, task, kind in changes] == [("dead", "interrupted")]
        with psycopg.connect(postgres_url) as conn:  # the dead node's row is gone
            assert conn.execute("SELECT count(*) FROM nodes WHERE epoch = %s",
                                (dead_epoch,)).fetchone() == (0,)
    finally:
        live.close()


def test_a_node_whose_claim_was_reaped_cannot_record_its_end(postgres_url):
    slow = PostgresStore(postgres_url, lease=0.3)
    other = PostgresStore(postgres_url)
    try:
        slow.acquire("slow")
        other.acquire("other")
        assert claim(slow, "t1", "1.000") and claim(slow, "t1", "2.000")
        slow.note_process("t1", "1.000", 1, 4242, 7)
        lease_until = slow.nodes()[0]["lease_until"]
        wait_for(lambda: expired(other, lease_until))
        assert len(other.reap()) == 2
        before = other.runs()
        with pytest.raises(ClaimLostError) as raised:
            slow.finish_run(finished("t1", "1.000"))
        message = str(raised.value)
        assert "'t1'" in message and "'1.000'" in message and "attempt 1" in message
        assert "lease expired" in message and "not recorded" in message
        with pytest.raises(ClaimLostError, match="'2.000'"):
            slow.release_run("t1", "2.000", 1)
        with pytest.raises(ClaimLostError):
            slow.note_process("t1", "2.000", 1, 4343, 7)
        assert isinstance(raised.value, RuntimeError)
        # In a batch, finishes are written together: a lost one fails the batch.
        with pytest.raises(ClaimLostError, match="'1.000'"):
            with slow.batch():
                slow.finish_run(finished("t1", "0.500", status=6))
                slow.finish_run(finished("t1", "1.000"))
        assert other.runs() == before  # nothing overwritten
        # Acquired again (a new epoch), the node still cannot write over them...
        slow.acquire("slow")
        with pytest.raises(ClaimLostError):
            slow.finish_run(finished("t1", "1.000"))
        # ...while a run never claimed is recorded, and its own claims finish.
        slow.finish_run(finished("t1", "0.000", status=6))
        assert claim(slow, "t1", "3.000")
        slow.finish_run(finished("t1", "3.000"))
        slow.release_run("t1", "3.000", 1)  # over: nothing to release, no error
        assert {r["slot"]: r["status"] for r in other.runs()} == {
            "0.000": 6, "1.000": INTERRUPTED, "2.000": INTERRUPTED, "3.000": 0}
        # Another live node's claim is not this node's to finish either.
        assert claim(other, "t2", "1.000")
        with pytest.raises(ClaimLostError):
            slow.finish_run(finished("t2", "1.000"))
    finally:
        slow.close()
        other.close()


def test_claim_runs_grants_each_key_once_across_racing_processes(postgres_url):
    PostgresStore(postgres_url).close()  # the schema, before the race
    first, second = in_processes(race_claims, (postgres_url, 1000), (postgres_url, 1000))
    assert not set(first) & set(second)
    assert sorted(first + second) == list(range(1000))
    with PostgresStore(postgres_url) as store:
        assert store.count_runs("race", statuses=[RUNNING]) == 1000
        owners = {r["name"] for r in store.runs("race")}
        assert owners == {"race"}
        assert store.claim_runs([]) == []
        store.acquire("late")
        answers = store.claim_runs([("race", "5.000", 1, 5, "r", 5.0, 5.0),
                                    ("new", "1.000", 1, 1, "r", 1.0, 1.0),
                                    ("new", "1.000", 1, 1, "r", 1.0, 1.0)])
        assert answers == [False, True, False]
        with pytest.raises(TypeError, match="'not a claim'"):
            store.claim_runs(["not a claim"])


# -- changes ------------------------------------------------------------------------------

def kinds(store, since=0):
    return [(task, kind) for _, task, kind in store.changes_since(since)[1]]


def test_only_real_changes_are_changes(postgres_url):
    with PostgresStore(postgres_url) as store:
        assert store.last_change() == 0 and store.changes_since(0) == (0, [])
        store.save_task(record())
        store.save_task(record())  # identical: no change
        store.save_task(record(next_run=5.0, runs=99, status=0, updated=7.0))  # state only
        assert store.save_task(record(), replace=False) is False
        assert kinds(store) == [("t1", "saved")]
        store.save_task(record(priority=2.0))  # an int became a float: a change
        store.save_task(record(priority=2.0))
        for paused in (False, False, True, True, False):
            store.update_task("t1", paused=paused)
        store.update_task("t1", runs=3, next_run=9.0)
        store.remove_task("t1")
        store.remove_task("t1")
        assert kinds(store) == [("t1", "saved"), ("t1", "saved"), ("t1", "resumed"),
                                ("t1", "paused"), ("t1", "resumed"), ("t1", "removed")]
        newest, changes = store.changes_since(0)
        assert newest == store.last_change() == changes[-1][0]
        assert [seq for seq, _, _ in changes] == sorted(seq for seq, _, _ in changes)
        assert store.changes_since(changes[2][0]) == (newest, changes[3:])
        with pytest.raises(RuntimeError):
            with store.batch():
                store.save_task(record("rolled back"))
                raise RuntimeError("undo")
        assert store.last_change() == newest  # a change rolled back never was


def test_wait_for_change_wakes_on_another_nodes_change(postgres_url):
    PostgresStore(postgres_url).close()
    with PostgresStore(postgres_url) as store:
        assert store.wait_for_change(0) is True  # starts listening: it may have missed one
        assert store.wait_for_change(0.2) is False
        got = []
        waiter = threading.Thread(target=lambda: got.append(store.wait_for_change(30)))
        waiter.start()
        assert in_processes(save_a_task, (postgres_url, "from afar")) == ["saved"]
        waiter.join(30)
        assert got == [True]
        assert kinds(store) == [("from afar", "saved")]
        # A change that comes while nobody waits wakes the next wait.
        with PostgresStore(postgres_url) as other:
            other.update_task("from afar", paused=False)
        assert store.wait_for_change(30) is True
        with PostgresStore(postgres_url) as other:
            other.remove_task("from afar")
        wait_for(lambda: store.wait_for_change(0))  # a poll finds it too
        assert store.wait_for_change(0) is False
        # close() ends a wait at once.
        waiter = threading.Thread(target=lambda: got.append(store.wait_for_change(30)))
        waiter.start()
        wait_for(lambda: store._listen_lock.locked())
        store.close()
        waiter.join(5)
        assert not waiter.is_alive() and got == [True, False]


def test_purge_keeps_the_newest_change(postgres_url):
    with PostgresStore(postgres_url) as store:
        for n in range(3):
            store.save_task(record(f"t{n}"))
        newest = store.last_change()
        store.purge_runs(store.now() + 60)
        assert store.changes_since(0) == (newest, [(newest, "t2", "saved")])


def test_changes_are_numbered_in_commit_order(postgres_url):
    """A reader that saw change n never later finds one numbered below n:
    a transaction that wrote its change first but commits last comes last."""
    with PostgresStore(postgres_url) as early, PostgresStore(postgres_url) as late:
        in_batch, committed = threading.Event(), threading.Event()

        def slow_batch():
            with early.batch():
                early.save_task(record("written first"))
                in_batch.set()
                committed.wait(30)

        writer = threading.Thread(target=slow_batch)
        writer.start()
        try:
            assert in_batch.wait(30)
            late.save_task(record("committed first"))
            seen, changes = late.changes_since(0)
            assert [task for _, task, _ in changes] == ["committed first"]
        finally:
            committed.set()
            writer.join(30)
        newest, after = late.changes_since(seen)
        assert [task for _, task, _ in after] == ["written first"] and newest > seen


# -- what other nodes claimed, and who is live ------------------------------------------

def test_claimed_keys_tells_which_slots_any_node_claimed(postgres_url):
    with PostgresStore(postgres_url) as other, PostgresStore(postgres_url) as store:
        other.acquire("other")
        assert other.claim_runs([("t", "1.000", 1, 1, "t", 1.0, 1.0),
                                 ("t", "2.000", 2, 2, "t", 2.0, 2.0)]) == [True, True]
        assert store.claimed_keys([]) == set()
        asked = [("t", "1.000", 1), ("t", "2.000", 1), ("t", "2.000", 2), ("u", "1.000", 1)]
        assert store.claimed_keys(asked) == {("t", "1.000", 1), ("t", "2.000", 2)}
        other.finish_run(finished(task_id="t", slot="1.000", attempt=1))
        assert store.claimed_keys(asked) == {("t", "1.000", 1), ("t", "2.000", 2)}


def test_a_node_that_joins_or_leaves_is_heard_by_the_others(postgres_url):
    with PostgresStore(postgres_url) as store:
        store.acquire("a")
        assert store.wait_for_change(0) is True  # starts listening
        assert store.nodes_changed() is True  # (nobody listened before: any may have)
        assert store.nodes_changed() is False
        with PostgresStore(postgres_url) as other:
            other.acquire("b")
            assert store.wait_for_change(30) is True
            assert store.nodes_changed() is True
            assert [node["owner"] for node in store.nodes()] == ["a", "b"]
            other.release()
            assert store.wait_for_change(30) is True
            assert store.nodes_changed() is True
        assert [node["owner"] for node in store.nodes()] == ["a"]


# -- a due-now task's first run starts at its commit, delay() returns at the flush -------

def _lsn(conn, function):
    return conn.execute(f"SELECT {function}() - '0/0'::pg_lsn").fetchone()[0]


def test_a_save_and_claim_left_unflushed_is_committed_and_on_disk_once_wait_flushed_returns(
        postgres_url):
    with PostgresStore(postgres_url) as store, \
            psycopg.connect(postgres_url, autocommit=True) as other:
        store.acquire("a")
        assert store.defers_flush is True
        written, granted = store.save_and_claim(record("soon"), True,
                                                ("soon", "1.000", 1, 1, "soon", 1.0, 1.0),
                                                flush=False)
        assert (written, granted) == (True, True)
        assert store.task("soon") is not None  # committed: every node sees it
        committed_up_to = _lsn(other, "pg_current_wal_insert_lsn")
        store.wait_flushed()
        assert _lsn(other, "pg_current_wal_flush_lsn") >= committed_up_to
        # (only that transaction was relaxed: the next definition commits flushed)
        assert store._on_side("SHOW synchronous_commit") == [("on",)]


def test_a_synchronous_store_never_leaves_a_definition_unflushed(postgres_url):
    with PostgresStore(postgres_url, synchronous=True) as store:
        store.acquire("a")
        assert store.defers_flush is False
        assert store.save_and_claim(record("strict"), True,
                                    ("strict", "1.000", 1, 1, "strict", 1.0, 1.0),
                                    flush=False) == (True, True)


class UnconfirmedStore(PostgresStore):
    """A real PostgreSQL store whose disk flush cannot be confirmed (the
    connection dropped just after the commit)."""

    def wait_flushed(self):
        raise psycopg.OperationalError("server closed the connection unexpectedly")


_ran = []


def note_a_run(value):
    _ran.append(value)


def test_a_due_now_task_whose_flush_cannot_be_confirmed_is_kept_and_runs_once(
        postgres_url, caplog):
    """Its commit happened (its run may be under way): delay() says so in
    a warning and returns, rather than raise for a task that is scheduled."""
    import pysched_lightning as psl
    _ran.clear()
    with psl.Scheduler(store=UnconfirmedStore(postgres_url)) as sched:
        sched.start()
        with caplog.at_level("WARNING", logger="pysched_lightning"):
            task_id = sched.delay("once", 0, 1, note_a_run, args=("now",), task_id="now")
        assert task_id == "now"
        assert sched.get_result("now", timeout=30) is None
        assert sched.store.task("now") is not None
    assert _ran == ["now"]
    assert any("'now' is stored, but the store could not confirm" in r.getMessage()
               for r in caplog.records)


def test_recent_runs_reads_what_runs_reads_for_each_task_in_one_statement(postgres_url):
    """A node loading its tasks read each one's runs with a query of its
    own (a start with 10,000 stored tasks took 2.2 s here; 0.35 s reading
    them 500 tasks to a statement)."""
    with PostgresStore(postgres_url) as store:
        for k in range(7):  # (ties in scheduled: the later record first)
            store.finish_run(finished(task_id="many", slot=f"{100 + k // 2}.{k:03d}",
                                      scheduled=100.0 + k // 2, run=k + 1))
        store.finish_run(finished(task_id="one", slot="5.000", scheduled=5.0))
        ids = ["many", "one", "none"]
        recent = store.recent_runs(ids, 3)
        assert recent == {task_id: store.runs(task_id, limit=3) for task_id in ids[:2]}
        assert [row["run"] for row in recent["many"]] == [7, 6, 5]
        assert store.recent_runs([], 3) == {}
        with pytest.raises(ValueError):
            store.recent_runs(ids, -1)
