"""Stores: the protocol's rules, each checked on every store (the SQLite store
on a real file, the PostgreSQL store on a real server). SQLite's own file,
schema, lock and process guarantees are in test_store_sqlite.py; PostgreSQL's
schema, leases, fencing and changes in test_store_postgres.py."""
from __future__ import annotations

import ast
import itertools
import linecache
import math
import pathlib
import sys
import re
import threading
import time

import pytest

import pysched_lightning.records.protocols as protocols
from pysched_lightning.records.protocols import (CANCELED, COMPLETED, ERROR, MISSED,
                                                 RUNNING, STATUS_NAMES, SUSPENDED, TIMEOUT)
from pysched_lightning.records.runs import TaskStatus
from pysched_lightning.durability.stores import (RUN_FIELDS, MemoryStore, SQLiteStore,
                                                 Store, StoreLockedError, open_store, sqlite_file,
                                                 store_location)
from pysched_lightning.durability.stores.controls import ABANDONED, REQUEST_FIELDS
from conftest import wait_for
from store_records import INTERRUPTED, claim, finished, record

ROOT = pathlib.Path(__file__).resolve().parents[1]


def second(store):
    """Another contender for *store*: the same MemoryStore object, or a
    second store object on the same file or database."""
    if isinstance(store, MemoryStore):
        return store
    if isinstance(store, SQLiteStore):
        return SQLiteStore(store.path)
    return type(store)(store._url)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store(request, tmp_path):
    if request.param == "postgres":  # (an empty database of its own)
        from pysched_lightning.durability.stores.postgres import PostgresStore
        made = PostgresStore(request.getfixturevalue("postgres_url"))
    else:
        made = MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "jobs.db")
    yield made
    made.close()


@pytest.fixture
def other(store):
    made = second(store)
    yield made
    if made is not store:
        made.close()


# The PostgreSQL store has no single holder (every node is active, with a
# lease: test_store_postgres.py), so the tests of the one-active-scheduler
# lock run on the two stores that have one.
single_holder = pytest.mark.parametrize("store", ["memory", "sqlite"], indirect=True)


def keys(runs):
    return [(r["task_id"], r["slot"], r["attempt"]) for r in runs]


def snapshot(store):
    return store.load_tasks(), store.runs()


# -- the records and the protocol ----------------------------------------------

def test_both_stores_satisfy_the_protocol(store):
    assert isinstance(store, Store)
    assert open_store(store) is store


def test_an_object_with_the_old_api_is_not_a_store():
    old = type("Old", (), {name: (lambda self, *a, **k: None) for name in dir(Store)
                           if not name.startswith("_") and name not in ("task", "count_runs")})
    assert not isinstance(old(), Store)
    with pytest.raises(TypeError, match="Old"):
        open_store(old())


def test_records_live_with_the_protocols_and_the_stores_reexport_them():
    import pysched_lightning.durability.stores as stores
    for name in ("TaskRecord", "RUN_FIELDS", "StoreLockedError", "Store"):
        assert getattr(stores, name) is getattr(protocols, name)
    assert issubclass(StoreLockedError, RuntimeError)
    # protocols.py imports nothing from the package, so it never takes part in a cycle.
    tree = ast.parse(pathlib.Path(protocols.__file__).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0 and not (node.module or "").startswith("pysched_lightning")
        elif isinstance(node, ast.Import):
            assert not any(a.name.startswith("pysched_lightning") for a in node.names)


def test_run_fields_and_status_codes():
    assert RUN_FIELDS == ("task_id", "name", "run", "attempt", "slot", "status", "scheduled",
                          "started", "finished", "duration", "exit_code", "result", "error",
                          "traceback", "output", "stderr", "reason", "count", "outcome")
    assert (COMPLETED, ERROR, SUSPENDED, RUNNING, CANCELED, TIMEOUT, MISSED) == tuple(range(7))
    assert protocols.INTERRUPTED == 7  # added at the end: stored codes keep their meaning
    assert sorted(STATUS_NAMES) == list(range(8)) and STATUS_NAMES[MISSED] == "missed"
    for status in TaskStatus:  # the scheduler's statuses are the codes a store keeps
        assert STATUS_NAMES[int(status)] == status.name.lower()


# -- tasks ----------------------------------------------------------------------

def test_save_and_load_round_trip_every_field(store):
    pickled = record("p")
    imported = record("i", fn_ref="jobs:report", fn_pickle=None, schedule=None, info=None,
                      next_run=None, paused=False, created=1_600_000_001.0)
    assert store.save_task(pickled) is True
    assert store.save_task(imported) is True
    loaded = store.load_tasks()
    assert loaded == [pickled, imported]  # every field; oldest created first
    assert [r.stored_as for r in loaded] == ["pickle", "import"]
    assert type(loaded[0].paused) is bool and type(loaded[0].info) is str
    assert all(type(r.status) is int and type(r.runs) is int for r in loaded)
    assert store.task("p") == pickled and store.task("i") == imported


@pytest.mark.parametrize("priority", [2, 2.0, -7, 0.5, 2 ** 62, float("inf")])
def test_priority_keeps_its_type(store, priority):
    store.save_task(record(priority=priority))
    for loaded in (store.load_tasks()[0], store.task("t1")):
        assert loaded.priority == priority and type(loaded.priority) is type(priority)
    store.update_task("t1", priority=3.0)
    assert type(store.task("t1").priority) is float
    store.update_task("t1", priority=3)
    assert type(store.task("t1").priority) is int


@pytest.mark.parametrize("field, value, error, words", [
    ("priority", True, TypeError, ["'priority'", "True"]),
    ("priority", math.nan, ValueError, ["'priority'", "NaN"]),
    ("priority", "1", TypeError, ["'priority'", "'1'"]),
    ("priority", 2 ** 63, ValueError, ["'priority'", str(2 ** 63)]),
    ("runs", "7", TypeError, ["'runs'", "'7'"]),
    ("runs", 1.5, TypeError, ["'runs'", "1.5"]),
    ("status", 9, ValueError, ["'status'", "9"]),
    ("paused", 2, TypeError, ["'paused'", "2"]),
    ("next_run", "soon", TypeError, ["'next_run'", "'soon'"]),
    ("next_run", math.nan, ValueError, ["'next_run'", "NaN"]),
    ("args", "not bytes", TypeError, ["'args'", "'not bytes'"]),
    ("args", 5, TypeError, ["'args'", "5"]),
    ("info", {"call": "x"}, TypeError, ["'info'", "{'call': 'x'}"]),
    ("name", 42, TypeError, ["'name'", "42"]),
    ("id", 42, TypeError, ["42"]),
])
def test_bad_task_values_are_refused_and_change_nothing(store, field, value, error, words):
    store.save_task(record("kept"))
    before = snapshot(store)
    with pytest.raises(error) as raised:
        store.save_task(record("kept", **{field: value}))
    assert all(word in str(raised.value) for word in words), raised.value
    if field != "id":
        with pytest.raises(error):
            store.update_task("kept", **{field: value})
    assert snapshot(store) == before


def test_save_task_without_replace_inserts_only_a_new_id(store):
    assert store.save_task(record(priority=1)) is True
    assert store.save_task(record(priority=9, name="second"), replace=False) is False
    assert store.task("t1") == record(priority=1)
    assert store.save_task(record("t2"), replace=False) is True
    assert store.save_task(record(priority=9, name="renamed")) is True  # replace (default)
    assert [(r.id, r.priority, r.name) for r in store.load_tasks()] == \
        [("t1", 9, "renamed"), ("t2", 2, "name of t2")]


def test_save_task_without_replace_decides_once_among_threads(store):
    won = []
    start = threading.Barrier(4)

    def contend(n):
        start.wait()
        won.extend(n for i in range(50) if store.save_task(record(f"t{i}", runs=n), False))

    threads = [threading.Thread(target=contend, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 50
    assert sorted(r.runs for r in store.load_tasks()) == sorted(won)


def test_records_come_back_as_copies(store):
    store.save_task(record())
    loaded, one = store.load_tasks()[0], store.task("t1")
    loaded.name = one.name = "changed in memory only"
    assert store.task("t1").name == "name of t1"
    store.finish_run(finished())
    store.runs()[0]["status"] = ERROR
    assert store.runs()[0]["status"] == COMPLETED


def test_task_reads_one_task(store):
    assert store.task("t1") is None
    store.save_task(record())
    assert store.task("t1") == record()
    with pytest.raises(TypeError, match="42"):
        store.task(42)


def test_a_finished_one_shot_task_stays_until_removed(store):
    store.save_task(record("once", trigger="once", schedule=None, next_run=1000.0,
                           status=SUSPENDED))
    store.update_task("once", next_run=None, status=COMPLETED, runs=1)
    [kept] = store.load_tasks()
    assert (kept.id, kept.next_run, kept.status, kept.runs) == ("once", None, COMPLETED, 1)
    store.remove_task("once")
    assert store.load_tasks() == [] and store.task("once") is None


def test_update_task_changes_only_the_given_fields(store):
    store.save_task(record())
    store.update_task("t1", next_run=1234.5, runs=8, missed=3, status=TaskStatus.COMPLETED,
                      paused=False, updated=1_700_000_001.0, info='{"x": 1}')
    assert store.load_tasks() == [record(next_run=1234.5, runs=8, missed=3, status=0,
                                         paused=False, updated=1_700_000_001.0,
                                         info='{"x": 1}')]
    store.update_task("t1", next_run=None, info=None)
    assert (store.task("t1").next_run, store.task("t1").info) == (None, None)
    store.update_task("unknown", runs=1)  # a task canceled meanwhile: nothing happens
    assert [r.id for r in store.load_tasks()] == ["t1"]
    with pytest.raises(TypeError, match="'colour'"):
        store.update_task("t1", colour="red")
    with pytest.raises(TypeError, match="'id'"):
        store.update_task("t1", id="t2")


def test_remove_task_keeps_its_run_history(store):
    store.save_task(record("t1"))
    store.save_task(record("t2"))
    store.finish_run(finished("t1"))
    store.remove_task("t1")
    store.remove_task("never there")
    assert [r.id for r in store.load_tasks()] == ["t2"]
    assert keys(store.runs()) == [("t1", "100.000", 1)]


# -- claiming and finishing runs -----------------------------------------------

def test_claim_run_is_refused_for_a_key_claimed_already(store):
    assert claim(store, "t1", "100.000", 1) is True
    assert claim(store, "t1", "100.000", 1, name="again", started=500.0) is False
    assert claim(store, "t1", "100.000", 2) is True          # a retry: the next attempt
    assert claim(store, "t1", "100.500", 1, run=2) is True   # the next slot
    assert claim(store, "t1", "now:9f2c", 1, scheduled=100.0) is True  # a manual run
    assert claim(store, "t2", "100.000", 1) is True          # another task
    [claimed] = store.runs("t2")
    assert claimed == dict.fromkeys(RUN_FIELDS) | dict(
        task_id="t2", name="name of t2", run=1, attempt=1, slot="100.000", status=RUNNING,
        scheduled=100.0, started=101.0, count=1)
    assert len(store.runs("t1")) == 4
    [first] = [r for r in store.runs("t1") if (r["slot"], r["attempt"]) == ("100.000", 1)]
    # The refused claim changed nothing.
    assert (first["name"], first["started"]) == ("name of t1", 101.0)


def test_claim_run_takes_the_times_it_is_given(store):
    claim(store, "t1", "a", scheduled=1_764_500_000.123, started=1_764_500_000.5)
    [run] = store.runs()
    assert (run["scheduled"], run["started"]) == (1_764_500_000.123, 1_764_500_000.5)
    with pytest.raises(TypeError):
        store.claim_run("t1", "b", 1, 1, "positional", 1.0, 2.0)  # keyword-only


@pytest.mark.parametrize("change, error, words", [
    (dict(slot=""), ValueError, ["slot"]),
    (dict(slot=100.0), TypeError, ["slot", "100.0"]),
    (dict(task_id=None), TypeError, ["None"]),
    (dict(attempt="1"), TypeError, ["'attempt'", "'1'"]),
    (dict(scheduled=None), TypeError, ["scheduled", "None"]),
    (dict(started=math.nan), ValueError, ["'started'", "NaN"]),
    (dict(name=b"caf\xc3\xa9"), None, []),  # bytes are decoded
])
def test_claim_run_checks_its_arguments_first(store, change, error, words):
    args = dict(task_id="t1", slot="s", attempt=1, run=1, name="n", scheduled=1.0, started=2.0)
    args.update(change)
    if error is None:
        assert store.claim_run(**args) is True
        assert store.runs()[0]["name"] == "caf\u00e9"
        return
    with pytest.raises(error) as raised:
        store.claim_run(**args)
    assert all(word in str(raised.value) for word in words), raised.value
    assert store.runs() == []


def test_claim_run_from_many_threads_claims_each_key_once(store, other):
    claimed = []
    start = threading.Barrier(4)

    def contend(n):
        start.wait()
        mine = store if n % 2 else other  # on SQLite: two store objects on one file
        claimed.extend(k for k in range(200) if claim(mine, "t", f"{k}.000", 1, run=k))

    threads = [threading.Thread(target=contend, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == list(range(200))
    assert len(store.runs()) == 200 and len(other.runs()) == 200


def test_finish_run_completes_the_claimed_run(store):
    claim(store, "t1", "100.000", 1)
    store.finish_run(finished(status=ERROR, exit_code=3, result=None, error="ValueError: bad",
                              traceback="Traceback...\n", outcome=b"\x80\x04exc"))
    [run] = store.runs()
    assert run == finished(status=1, exit_code=3, result=None, error="ValueError: bad",
                           traceback="Traceback...\n", outcome=b"\x80\x04exc")
    assert type(run["status"]) is int and type(run["scheduled"]) is float
    assert type(run["outcome"]) is bytes and type(run["count"]) is int
    assert list(run) == list(RUN_FIELDS)


def test_finish_run_keeps_what_the_claim_recorded_when_not_given(store):
    claim(store, "t1", "200.000", 1, run=2, name="claimed name", scheduled=200.0,
          started=201.5)
    store.finish_run(dict(task_id="t1", slot="200.000", attempt=1, status=TIMEOUT,
                          scheduled=200.0, finished=230.0, reason="timeout after 30 s"))
    [run] = store.runs()
    assert run == dict.fromkeys(RUN_FIELDS) | dict(
        task_id="t1", name="claimed name", run=2, attempt=1, slot="200.000", status=TIMEOUT,
        scheduled=200.0, started=201.5, finished=230.0, reason="timeout after 30 s", count=1)


def test_finish_run_replaces_every_other_field(store):
    claim(store, "t1", "s", 1, scheduled=100.0)
    store.finish_run(finished(slot="s", output="first", exit_code=1))
    store.finish_run(finished(slot="s", scheduled=150.0, output=None, exit_code=None,
                              status=CANCELED, outcome=None))
    [run] = store.runs()
    assert (run["scheduled"], run["output"], run["exit_code"], run["status"], run["outcome"]) \
        == (150.0, None, None, CANCELED, None)
    assert len(store.runs()) == 1


def test_finish_run_inserts_a_run_never_claimed(store):
    store.finish_run(finished(slot="100.000", status=CANCELED, extra="ignored"))
    assert store.runs() == [finished(status=CANCELED)]
    missed = dict(task_id="t1", slot="60.000", attempt=1, status=MISSED, scheduled=60.0,
                  count=3, reason="the scheduler was down")
    store.finish_run(missed)
    assert store.runs(statuses=[MISSED]) == [dict.fromkeys(RUN_FIELDS) | missed]
    assert claim(store, "t1", "100.000", 1) is False
    assert claim(store, "t1", "60.000", 1) is False


def test_set_aside_runs_frees_the_slots_of_a_replaced_definition(store):
    """Over records move to ``slot~run.attempt`` (of one slot, or of every
    slot); a RUNNING one stays, and nothing is set aside twice."""
    store.finish_run(finished(slot="100.000", run=1, status=ERROR))
    store.finish_run(finished(slot="100.000", run=1, attempt=2))
    store.finish_run(finished(slot="160.000", run=2))
    claim(store, "t1", "220.000", 1, run=3)
    claim(store, "t2", "100.000", 1)
    store.set_aside_runs("t1", "100.000")
    assert sorted(r["slot"] for r in store.runs("t1")) == [
        "100.000~1.1", "100.000~1.2", "160.000", "220.000"]
    assert claim(store, "t1", "100.000", 1, run=4) is True
    store.set_aside_runs("t1")
    assert sorted((r["slot"], r["status"]) for r in store.runs("t1")) == [
        ("100.000", RUNNING), ("100.000~1.1", ERROR), ("100.000~1.2", COMPLETED),
        ("160.000~2.1", COMPLETED), ("220.000", RUNNING)]
    assert [r["slot"] for r in store.runs("t2")] == ["100.000"]
    with pytest.raises(TypeError, match="None"):
        store.set_aside_runs("t1", None)


@pytest.mark.parametrize("change, error, words", [
    (dict(slot=None), KeyError, ["slot"]),
    (dict(attempt=None), KeyError, ["attempt"]),
    (dict(status=None), KeyError, ["status"]),
    (dict(scheduled=None), KeyError, ["scheduled"]),
    (dict(status=8), ValueError, ["'status'", "8"]),
    (dict(status=True), TypeError, ["'status'", "True"]),
    (dict(count=0), ValueError, ["'count'", "0"]),
    (dict(outcome="text"), TypeError, ["'outcome'", "'text'"]),
    (dict(exit_code="0"), TypeError, ["'exit_code'", "'0'"]),
    (dict(result=object), TypeError, ["'result'"]),
    (dict(duration=math.nan), ValueError, ["'duration'", "NaN"]),
])
def test_bad_run_records_are_refused_and_change_nothing(store, change, error, words):
    claim(store, "t1", "100.000", 1)
    before = store.runs()
    with pytest.raises(error) as raised:
        store.finish_run(finished(**change))
    assert all(word in str(raised.value) for word in words), raised.value
    assert store.runs() == before
    with pytest.raises(TypeError, match="mapping"):
        store.finish_run([("task_id", "t1")])


# -- reading runs ---------------------------------------------------------------

HISTORY = [("a", 10.0, 1), ("b", 30.0, 1), ("a", 20.0, 1), ("a", 20.0, 2), ("b", 5.0, 1),
           ("c", 40.0, 1)]
STATUS_OF = {("a", 20.0, 1): ERROR, ("b", 5.0, 1): TIMEOUT, ("c", 40.0, 1): MISSED}


@pytest.fixture
def history(store):
    """Runs written in HISTORY's order; NEWEST lists them newest first."""
    for task_id, scheduled, attempt in HISTORY:
        store.finish_run(finished(task_id, f"{scheduled:.3f}", attempt, scheduled=scheduled,
                                  status=STATUS_OF.get((task_id, scheduled, attempt), 0)))
    return store


NEWEST = [("c", 40.0, 1), ("b", 30.0, 1), ("a", 20.0, 2), ("a", 20.0, 1), ("a", 10.0, 1),
          ("b", 5.0, 1)]  # at the same time, the later written first


def listed(runs):
    return [(r["task_id"], r["scheduled"], r["attempt"]) for r in runs]


def test_runs_newest_first_with_limit_and_task_filter(history):
    store = history
    assert listed(store.runs()) == NEWEST
    assert listed(store.runs(limit=2)) == NEWEST[:2]
    assert listed(store.runs("a")) == [k for k in NEWEST if k[0] == "a"]
    assert listed(store.runs("a", 1)) == [("a", 20.0, 2)]
    assert store.runs(limit=0) == [] and store.runs("nobody") == []


def test_runs_and_count_runs_filter_alike(history):
    for task_id, before, since, statuses in itertools.product(
            [None, "a", "b"], [None, 20.0, 5.0], [None, 10.0, 41.0],
            [None, (COMPLETED,), [ERROR, TIMEOUT, MISSED, ERROR], ()]):
        want = [k for k in NEWEST
                if (task_id is None or k[0] == task_id) and (before is None or k[1] < before)
                and (since is None or k[1] >= since)
                and (statuses is None or STATUS_OF.get(k, COMPLETED) in statuses)]
        case = (task_id, before, since, statuses)
        got = history.runs(task_id, before=before, since=since,
                           statuses=None if statuses is None else iter(statuses))
        assert listed(got) == want, case
        assert listed(history.runs(task_id, 2, before=before, since=since,
                                   statuses=statuses)) == want[:2], case
        if before is None:
            assert history.count_runs(task_id, since=since, statuses=statuses) == len(want), case


def test_paging_with_before_walks_the_whole_history(store):
    for k in range(25):
        store.finish_run(finished("t", f"{k}.000", scheduled=float(k), run=k))
    pages, cursor = [], None
    while True:
        page = store.runs("t", 10, before=cursor)
        if not page:
            break
        pages.append([r["run"] for r in page])
        cursor = page[-1]["scheduled"]
    assert pages == [list(range(24, 14, -1)), list(range(14, 4, -1)), [4, 3, 2, 1, 0]]


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(limit=-1), ValueError, ["-1"]),
    (dict(limit=2.0), ValueError, ["2.0"]),
    (dict(before="yesterday"), TypeError, ["before", "'yesterday'"]),
    (dict(since=math.nan), ValueError, ["since", "NaN"]),
    (dict(since=True), TypeError, ["since", "True"]),
    (dict(statuses="15"), TypeError, ["statuses", "'15'"]),
    (dict(statuses=1), TypeError, ["statuses", "1"]),
    (dict(statuses=[0, 9]), ValueError, ["9"]),
    (dict(statuses=[None]), TypeError, ["None"]),
    (dict(task_id=7), TypeError, ["7"]),
])
def test_bad_filters_are_refused(history, kwargs, error, words):
    queries = [history.runs]
    if not {"limit", "before"} & set(kwargs):  # count_runs takes neither
        queries.append(history.count_runs)
    for query in queries:
        with pytest.raises(error) as raised:
            query(**kwargs)
        assert all(word in str(raised.value) for word in words), raised.value


# -- the rest of the protocol ------------------------------------------------------

def test_purge_runs_deletes_runs_over_before_the_time(store):
    store.finish_run(finished("old", finished=50.0))
    store.finish_run(finished("new", finished=150.0))
    claim(store, "died", "20.000", started=20.5)
    store.mark_interrupted()
    claim(store, "running", "10.000")  # still running: kept
    store.finish_run(dict(task_id="never started", slot="30.000", attempt=1, status=MISSED,
                          scheduled=30.0, count=2))
    assert store.purge_runs(100.0) == 3  # old; died (started 20.5); never started (30)
    assert sorted(r["task_id"] for r in store.runs()) == ["new", "running"]
    assert store.purge_runs(100.0) == 0
    assert store.purge_runs(1e12) == 1
    assert [r["task_id"] for r in store.runs()] == ["running"]
    with pytest.raises(TypeError, match="'soon'"):
        store.purge_runs("soon")



def test_purge_runs_keeps_a_stored_tasks_last_claim_whatever_its_wall_time(store):
    """A stored task's latest claim is kept (a restart reads it): the one
    with the latest wall time was kept. After the wall clock stepped back,
    that was an older run, and the newest, a failed attempt with a retry
    owed, was purged: the restart owed no retry and read the old run's
    status (found by the model torture)."""
    store.save_task(record("t1"))
    claim(store, "t1", "1000.000", scheduled=1000.0, started=1000.0)
    store.finish_run(finished("t1", "1000.000", scheduled=1000.0, finished=1001.0))
    claim(store, "t1", "400.000", scheduled=400.0, started=400.0)  # the clock stepped back
    store.finish_run(finished("t1", "400.000", scheduled=400.0, finished=401.0,
                              status=ERROR, result=None, error="ValueError: first attempt"))
    assert store.purge_runs(1e12) == 1
    assert [(r["slot"], r["status"]) for r in store.runs("t1")] == [("400.000", ERROR)]


# -- control requests (optional methods; both stores have them) ------------------------

def test_a_control_request_is_stored_pending_and_read_back(store):
    first = store.request_control("pause", "30s/hello.sh", "dashboard on host")
    second = store.request_control("run_now", "t2", "someone")
    assert second > first > 0
    request = store.control_request(first)
    assert request == dict(request, id=first, action="pause", task_id="30s/hello.sh",
                           state="pending", ok=None, message=None, answered=None,
                           requested_by="dashboard on host")
    assert list(request) == list(REQUEST_FIELDS)
    assert abs(request["requested"] - time.time()) < 60
    assert store.control_request(second + 100) is None


@pytest.mark.parametrize("call, error, words", [
    (lambda s: s.request_control("explode", "t", "me"), ValueError, "'explode'"),
    (lambda s: s.request_control("run-now", "t", "me"), ValueError, "'run-now'"),
    (lambda s: s.request_control("pause", 42, "me"), TypeError, "42"),
    (lambda s: s.request_control("pause", "t", None), TypeError, "None"),
    (lambda s: s.control_request(0), ValueError, "0"),
    (lambda s: s.control_request(True), ValueError, "True"),
    (lambda s: s.answer_control(1, "yes", "m"), TypeError, "'yes'"),
    (lambda s: s.take_control_requests("me", 0), ValueError, "0"),
    (lambda s: s.take_control_requests(None), TypeError, "None"),
])
def test_bad_control_arguments_are_refused_and_change_nothing(store, call, error, words):
    request = store.request_control("pause", "t", "me")
    with pytest.raises(error, match=re.escape(words)):
        call(store)
    assert store.control_request(request)["state"] == "pending"
    assert store.control_request(request + 1) is None


def test_take_moves_pending_requests_to_taken_oldest_first(store):
    ids = [store.request_control(action, f"t{i}", "me")
           for i, action in enumerate(("run_now", "pause", "resume", "cancel"))]
    taken = store.take_control_requests("node-a", limit=3)
    assert [(r["id"], r["action"], r["state"]) for r in taken] == [
        (ids[0], "run_now", "taken"), (ids[1], "pause", "taken"), (ids[2], "resume", "taken")]
    assert [store.control_request(i)["state"] for i in ids] == ["taken"] * 3 + ["pending"]
    assert [r["id"] for r in store.take_control_requests("node-b")] == [ids[3]]
    assert store.take_control_requests("node-a") == []


def test_answers_are_done_or_failed_and_the_first_one_stays(store):
    ok, bad = (store.request_control("pause", t, "me") for t in ("t1", "t2"))
    store.take_control_requests("node")
    store.answer_control(ok, True, "paused task 't1'")
    store.answer_control(bad, False, "no task 't2'")
    done, failed = store.control_request(ok), store.control_request(bad)
    assert (done["state"], done["ok"], done["message"]) == ("done", True, "paused task 't1'")
    assert (failed["state"], failed["ok"], failed["message"]) == ("failed", False, "no task 't2'")
    assert done["answered"] >= done["requested"]
    store.answer_control(ok, False, "late")  # answered already: kept
    assert store.control_request(ok) == done
    store.answer_control(ok + 1000, True, "purged")  # unknown: ignored
    assert store.control_request(ok + 1000) is None


def test_two_takers_never_take_the_same_request(store, other):
    ids = {store.request_control("pause", f"t{i}", "me") for i in range(200)}
    got = {"a": [], "b": []}
    start = threading.Barrier(2)

    def take(owner, source):
        start.wait()
        while True:
            batch = source.take_control_requests(owner, limit=7)
            if not batch:
                return
            got[owner].extend(r["id"] for r in batch)

    threads = [threading.Thread(target=take, args=(owner, source))
               for owner, source in (("a", store), ("b", other))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(got["a"] + got["b"]) == sorted(ids)


def test_a_request_its_taker_never_answered_is_not_lost_nor_run_twice(store):
    run_now = store.request_control("run_now", "t", "me")
    pause = store.request_control("pause", "t", "me")
    assert len(store.take_control_requests("died")) == 2
    assert store.take_control_requests("next") == []  # not stale yet (30 s by default)
    retaken = store.take_control_requests("next", stale_after=0)
    assert [(r["id"], r["state"]) for r in retaken] == [(pause, "taken")]
    abandoned = store.control_request(run_now)
    assert (abandoned["state"], abandoned["ok"]) == ("failed", False)
    assert abandoned["message"] == ABANDONED and "not tried again" in ABANDONED


def test_purge_runs_deletes_answered_requests_older_than_before(store):
    answered, pending, taken = (store.request_control("cancel", t, "me") for t in "abc")
    assert [r["id"] for r in store.take_control_requests("node", limit=1)] == [answered]
    store.answer_control(answered, True, "canceled")
    store.take_control_requests("node")
    store.request_control("pause", "d", "me")  # pending: kept
    store.purge_runs(time.time() - 3600)  # answered, but not before then: kept
    assert store.control_request(answered) is not None
    store.purge_runs(time.time() + 1)
    assert store.control_request(answered) is None
    assert [store.control_request(i)["state"] for i in (pending, taken)] == ["taken", "taken"]
    assert store.request_control("pause", "e", "me") > answered  # ids are never given again


def test_a_control_request_in_a_failed_batch_is_undone(store):
    with pytest.raises(RuntimeError):
        with store.batch():
            request = store.request_control("pause", "t", "me")
            raise RuntimeError("undo")
    assert store.control_request(request) is None
    assert store.take_control_requests("node") == []


def test_mark_interrupted_gives_running_runs_the_interrupted_status(store):
    claim(store, "t1", "1.000")
    claim(store, "t2", "2.000")
    store.finish_run(finished("t2", "2.000"))
    assert store.mark_interrupted() == 1
    interrupted = store.runs("t1")[0]
    assert (interrupted["status"], interrupted["error"]) == (protocols.INTERRUPTED, INTERRUPTED)
    assert store.runs("t2")[0]["status"] == COMPLETED
    assert store.mark_interrupted() == 0
    assert store.runs(statuses=(protocols.INTERRUPTED,)) == [interrupted]


def test_a_claim_keeps_the_process_running_it_until_it_ends(store):
    claim(store, "t1", "1.000")
    claim(store, "t2", "2.000")
    store.note_process("t1", "1.000", 1, 4242, 987654)
    store.note_process("t2", "2.000", 1, 4343, 5)
    store.note_process("t3", "3.000", 1, 4444, 5)  # no such claim: nothing
    assert sorted(store.claimed_processes(), key=lambda c: c["task_id"]) == [
        {"task_id": "t1", "slot": "1.000", "attempt": 1, "run": 1, "pid": 4242,
         "pid_started": 987654},
        {"task_id": "t2", "slot": "2.000", "attempt": 1, "run": 1, "pid": 4343,
         "pid_started": 5}]
    store.finish_run(finished("t2", "2.000"))  # over: its process is no longer claimed
    store.note_process("t2", "2.000", 1, 4343, 5)  # (and a finished run takes none)
    assert [c["task_id"] for c in store.claimed_processes()] == ["t1"]
    assert list(store.runs("t1")[0]) == list(RUN_FIELDS)  # not a run field
    store.mark_interrupted()
    assert store.claimed_processes() == []
    with pytest.raises(ValueError, match="'pid'.*0"):
        store.note_process("t1", "1.000", 1, 0, 5)
    with pytest.raises(TypeError, match="'pid_started'.*'soon'"):
        store.note_process("t1", "1.000", 1, 5, "soon")


def test_clear_deletes_every_task_and_run(store):
    store.save_task(record("t1"))
    store.save_task(record("t2"))
    claim(store, "t1")
    store.finish_run(finished("t2"))
    store.clear()
    assert store.load_tasks() == [] and store.runs() == [] and store.count_runs() == 0
    store.save_task(record("t3"))  # still usable
    assert [r.id for r in store.load_tasks()] == ["t3"]


def test_batch_commits_together(store):
    with store.batch():
        store.save_task(record("t1"))
        claim(store, "t1")
        with store.batch():  # nested: joins the outer transaction
            store.update_task("t1", runs=8)
            store.finish_run(finished("t1"))
    assert store.task("t1").runs == 8
    assert store.runs() == [finished("t1")]


def test_finishes_in_a_batch_land_as_if_written_one_by_one(store):
    for k in range(3):
        claim(store, "t1", f"{k}.000", name=f"claimed {k}")
    with store.batch():
        store.finish_run(finished("t1", "0.000", name=None, output="first"))
        store.finish_run(finished("t1", "0.000", name=None, output="second", status=ERROR))
        store.finish_run(finished("t1", "1.000"))
        store.finish_run(finished("t1", "9.000", status=MISSED, count=4))  # never claimed
        assert {r["slot"]: r["status"] for r in store.runs()} == {
            "0.000": ERROR, "1.000": COMPLETED, "2.000": RUNNING, "9.000": MISSED}
        store.finish_run(finished("t1", "2.000", status=TIMEOUT))
    runs = {r["slot"]: r for r in store.runs()}
    assert (runs["0.000"]["name"], runs["0.000"]["output"]) == ("claimed 0", "second")
    assert runs["1.000"] == finished("t1", "1.000")
    assert runs["2.000"]["status"] == TIMEOUT and runs["9.000"]["count"] == 4


def test_batch_is_atomic_on_an_exception(store):
    store.save_task(record("kept", runs=1))
    store.finish_run(finished("kept"))
    with pytest.raises(RuntimeError, match="boom"):
        with store.batch():
            store.save_task(record("new"))
            store.save_task(record("kept", name="replaced"))
            store.update_task("kept", runs=99)
            store.remove_task("kept")
            claim(store, "new")
            store.finish_run(finished("kept", status=ERROR))
            store.finish_run(finished("kept", "other slot"))
            store.purge_runs(1e12)
            store.mark_interrupted()
            store.clear()
            store.save_task(record("after clear"))
            raise RuntimeError("boom")
    assert store.load_tasks() == [record("kept", runs=1)]
    assert store.runs() == [finished("kept")]


def test_nested_batch_failing_alone_rolls_back_only_its_part(store):
    with store.batch():
        store.save_task(record("outer"))
        with pytest.raises(KeyError):
            with store.batch():
                store.save_task(record("inner"))
                claim(store, "inner")
                raise KeyError("inner fails")
        store.update_task("outer", runs=3)
    assert [(r.id, r.runs) for r in store.load_tasks()] == [("outer", 3)]
    assert store.runs() == []


def test_a_batch_excludes_other_threads_until_it_ends(store):
    entered, written = threading.Event(), threading.Event()

    def write_meanwhile():
        entered.wait()
        store.save_task(record("from another thread"))
        written.set()

    def blocked_in_save_task():
        frame = sys._current_frames().get(writer.ident)
        return (frame is not None and frame.f_code.co_name == "save_task"
                and linecache.getline(frame.f_code.co_filename, frame.f_lineno)
                .strip().startswith("with"))

    writer = threading.Thread(target=write_meanwhile)
    writer.start()
    with pytest.raises(RuntimeError):
        with store.batch():
            store.save_task(record("in the batch"))
            entered.set()
            wait_for(blocked_in_save_task)  # waits for the batch, not rolled back with it
            assert not written.is_set()
            raise RuntimeError("roll back")
    writer.join(5)
    assert [r.id for r in store.load_tasks()] == ["from another thread"]


def test_stores_are_safe_from_many_threads(store):
    def work(n):
        for i in range(30):
            task_id = f"w{n}-{i}"
            if i % 2:
                with store.batch():
                    store.save_task(record(task_id))
                    claim(store, task_id, f"{i}.000", run=i)
            else:
                store.save_task(record(task_id))
                claim(store, task_id, f"{i}.000", run=i)
            store.update_task(task_id, runs=i)
            store.finish_run(finished(task_id, f"{i}.000", scheduled=float(i)))
            store.runs(task_id)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.load_tasks()) == 120
    assert store.count_runs() == 120 == store.count_runs(statuses=[COMPLETED])


@single_holder
def test_acquire_holder_release(store, other):
    assert store.holder() is None
    assert store.acquire("scheduler-1") is True
    assert store.holder() == other.holder() == "scheduler-1"
    assert other.acquire("scheduler-2") is False      # not reentrant, not shared
    assert store.acquire("scheduler-1 again") is False
    store.release()
    assert store.holder() is None and other.holder() is None
    assert other.acquire("scheduler-2") is True
    assert store.holder() == "scheduler-2"
    other.release()
    other.release()  # releasing twice is fine
    with pytest.raises(TypeError):
        store.acquire(None)


@single_holder
def test_a_standby_acquire_returns_once_the_holder_releases(store, other):
    assert store.acquire("active")
    got = []
    standby = threading.Thread(target=lambda: got.append(other.acquire("standby", wait=True)))
    standby.start()
    assert got == [] and standby.is_alive()
    assert store.holder() == "active"
    store.release()
    standby.join(5)
    assert got == [True]
    assert store.holder() == "standby"
    other.release()


def test_closing_a_store_ends_a_waiting_acquire(tmp_path):
    for holder, waiter in [(MemoryStore(),) * 2,
                           (SQLiteStore(tmp_path / "j.db"), SQLiteStore(tmp_path / "j.db"))]:
        assert holder.acquire("active")
        got = []
        standby = threading.Thread(target=lambda: got.append(waiter.acquire("standby", True)))
        standby.start()
        waiter.close()
        standby.join(5)
        assert got == [False] and not standby.is_alive()
        holder.close()
        holder.close()


# -- open_store ----------------------------------------------------------------

def test_open_store_urls_and_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "abs").mkdir()
    opened = []

    def opens(spec):
        made = open_store(spec)
        opened.append(made)
        return made

    try:
        assert open_store(None) is None
        relative = opens("sqlite:///data/jobs.db")
        assert isinstance(relative, SQLiteStore)
        assert relative.path == str(tmp_path / "data" / "jobs.db")
        absolute = opens(f"sqlite:///{tmp_path}/abs/jobs.db")  # four slashes
        assert absolute.path == str(tmp_path / "abs" / "jobs.db")
        assert opens("plain.db").path == str(tmp_path / "plain.db")
        assert opens(tmp_path / "pathlike.db").path == str(tmp_path / "pathlike.db")
        assert isinstance(opens("memory://"), MemoryStore)
        assert opens(relative) is relative
    finally:
        for made in opened:
            made.close()
    with pytest.raises(ValueError, match="mysql") as error:
        open_store("mysql://user:secret@db.example/jobs")
    assert "sqlite:///" in str(error.value) and "postgresql://" in str(error.value)
    assert "secret" not in str(error.value)
    for bad in ["sqlite://jobs.db", "sqlite://", "sqlite:///:memory:", "sqlite:///j.db?x=1",
                "memory://x", ""]:
        with pytest.raises(ValueError):
            open_store(bad)
    with pytest.raises(TypeError, match="42"):
        open_store(42)
    assert not (tmp_path / "jobs.db").exists()


@pytest.mark.parametrize("spec, where", [
    ("jobs.db", "{cwd}/jobs.db"),
    ("state/../jobs.db", "{cwd}/jobs.db"),
    ("sqlite:///jobs.db", "{cwd}/jobs.db"),
    ("SQLite:///state/jobs.db", "{cwd}/state/jobs.db"),
    ("sqlite:////var/lib/jobs.db", "/var/lib/jobs.db"),
    ("/var/lib/jobs.db", "/var/lib/jobs.db"),
    ("postgresql://u:secret@db/jobs", "postgresql://u:secret@db/jobs"),
    ("postgres://db/jobs", "postgres://db/jobs"),
    ("memory://", "memory://"),
])
def test_store_location_is_the_one_reading_of_every_form(spec, where, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert store_location(spec) == where.format(cwd=tmp_path)
    assert sqlite_file(spec) == (where.format(cwd=tmp_path) if "://" not in where else None)


@pytest.mark.parametrize("spec", ["sqlite:jobs.db", "sqlite://jobs.db", "sqlite:///",
                                  "mysql://u:secret@db/jobs", " "])
def test_store_location_refuses_a_malformed_url_naming_it_without_its_password(spec):
    with pytest.raises(ValueError) as error:
        store_location(spec)
    assert "secret" not in str(error.value)
    assert spec.strip() == "" or repr(spec.replace("secret", "***")) in str(error.value)
