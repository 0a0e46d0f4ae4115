"""The PostgreSQL inbox shared by the instances of a service name: one row
per message id across instances, starts only by the owner and only once,
adoption of a dead instance's rows by exactly one survivor, and fencing of
an instance whose lease was taken. Real PostgreSQL, instances in real
processes where one dies or stalls; no broker."""
from __future__ import annotations

import concurrent.futures
import multiprocessing
import signal
import subprocess
import sys
import textwrap
import threading

import pytest

from conftest import wait_for
from test_remote_support import HERE

NAME = "svc"


@pytest.fixture
def inboxes(postgres_url):
    """make(lease=1.0) -> a PgInbox of service NAME; all closed after the test."""
    from pysched_lightning.remote.pg_inbox import PgInbox
    made = []

    def make(lease=1.0, name=NAME):
        box = PgInbox(postgres_url, name, lease)
        made.append(box)
        return box
    yield make
    for box in made:
        box.close()


def message(message_id, body=b"body", response=None, client="client-1"):
    from pysched_lightning.remote.inbox import NewMessage
    return NewMessage(message_id, client, 100.0, body, response)


def rows_of(url, name=NAME):
    """{message_id: (state, owner, epoch, response)} straight from the table."""
    import psycopg
    with psycopg.connect(url) as db:
        return {row[0]: row[1:] for row in db.execute(
            "SELECT message_id, state, owner, epoch, response FROM remote_messages "
            "WHERE name = %s", (name,))}


def test_a_message_id_is_accepted_once_across_instances(inboxes):
    a, b = inboxes(), inboxes()
    assert a.accept([message("m1"), message("m2"), message("m1")]) == [True, True, False]
    assert b.accept([message("m2"), message("m3")]) == [False, True]
    assert b.client_of("m1") == "client-1" and b.state("m1") == "accepted"
    assert [row.message_id for row in a.unfinished()] == ["m1", "m2", "m3"]
    other = inboxes(name="other-service")  # ids are per service name
    assert other.accept([message("m1")]) == [True]


def test_only_the_owner_starts_a_row_and_only_once(inboxes, postgres_url):
    a, b = inboxes(), inboxes()
    a.accept([message("m", b"the call"), message("p", b"in a process")])
    assert b.start("m", 1.0) is None  # not b's
    barrier = threading.Barrier(8)

    def start():
        barrier.wait()
        return a.start("m", 2.0)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        bodies = list(pool.map(lambda _: start(), range(8)))
    assert sorted(bodies, key=bool) == [None] * 7 + [b"the call"]
    # a hard task's process starts with the inbox's starter (pickled to it)
    spawn = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=spawn) as pool:
        assert pool.submit(b.starter(), "p", 3.0).result(60) is None
        assert pool.submit(a.starter(), "p", 3.0).result(60) == b"in a process"
        assert pool.submit(a.starter(), "p", 4.0).result(60) is None
    assert {k: v[0] for k, v in rows_of(postgres_url).items()} == \
        {"m": "started", "p": "started"}


def test_outcomes_are_stored_for_the_owner_s_running_rows_only(inboxes, postgres_url):
    a, b = inboxes(), inboxes()
    a.accept([message("a1"), message("a2"), message("over", response=b"overdue")])
    b.accept([message("b1")])
    a.start("a1", 1.0)
    assert a.mark_done([("a1", b"r1"), ("a2", b"r2"), ("b1", b"steal"), ("over", b"x"),
                        ("nope", b"?")]) == [True, True, False, False, False]
    assert b.mark_done([("a1", b"overwrite")]) == [False]
    b.mark_published(["a1"])  # not b's: stays done
    a.mark_published(["a1", "b1"])
    rows = rows_of(postgres_url)
    assert rows["a1"][0] == "published" and rows["a2"] == ("done",) + rows["a2"][1:3] + (b"r2",)
    assert rows["b1"][0] == "accepted" and rows["over"][3] == b"overdue"
    assert a.accept([message("a1")]) == [False]  # a published id is still known


def test_tables_are_made_once_by_instances_starting_together(inboxes):
    barrier = threading.Barrier(4)

    def make():
        barrier.wait()
        return inboxes()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        made = list(pool.map(lambda _: make(), range(4)))
    assert len({box.epoch for box in made}) == 4


DYING = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, sys.argv[2])
    from pysched_lightning.remote.pg_inbox import PgInbox
    from test_remote_pg_inbox import message
    box = PgInbox(sys.argv[1], "svc", lease=1.0)
    box.accept([message(f"m{i}", f"call {i}".encode()) for i in range(1, 7)]
               + [message("over", response=b"overdue")])
    box.start("m2", 1.0)
    box.start("m3", 1.0)
    box.mark_done([("m4", b"done 4")])
    box.mark_done([("m5", b"done 5")])
    box.mark_published(["m5"])
    print("ready", flush=True)
    time.sleep(120)
""")


def test_one_of_two_survivors_adopts_a_killed_instance_s_rows(inboxes, postgres_url):
    survivors = [inboxes(), inboxes()]
    child = subprocess.Popen([sys.executable, "-c", DYING, postgres_url, str(HERE)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        assert all(box.adopt() == [] for box in survivors)  # its lease holds
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        child.stdout.close()
    adopted = {0: [], 1: []}
    barrier = threading.Barrier(2)

    def adopt(index):  # both try, at the same moments, until everything is taken
        barrier.wait()
        wait_for(lambda: adopted[index].extend(survivors[index].adopt())
                 or len(adopted[0]) + len(adopted[1]) >= 6, timeout=30)
    threads = [threading.Thread(target=adopt, args=(i,)) for i in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    ids = [[row.message_id for row in adopted[i]] for i in (0, 1)]
    assert not set(ids[0]) & set(ids[1]), ids  # by one survivor each
    everything = {row.message_id: row for row in adopted[0] + adopted[1]}
    assert sorted(ids[0] + ids[1]) == sorted(everything)
    assert {k: row.state for k, row in everything.items()} == {
        "m1": "accepted", "m6": "accepted", "m2": "started", "m3": "started",
        "m4": "done", "over": "done"}
    assert everything["m1"].body == b"call 1" and everything["m4"].response == b"done 4"
    rows = rows_of(postgres_url)
    for index, box in enumerate(survivors):
        assert {k for k, v in rows.items() if v[1] == box.owner} == set(ids[index])
    # the new owner runs and answers them; the other survivor cannot
    owner, other = (survivors[0], survivors[1]) if "m1" in ids[0] else survivors[::-1]
    assert other.start("m1", 5.0) is None and owner.start("m1", 5.0) == b"call 1"
    assert other.mark_done([("m2", b"x")]) == [False]
    assert owner.mark_done([("m2", b"interrupted")]) == [True]


STALLING = textwrap.dedent("""
    import logging, sys
    sys.path.insert(0, sys.argv[2])
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    from conftest import wait_for
    from pysched_lightning.remote.pg_inbox import PgInbox
    from test_remote_pg_inbox import message
    box = PgInbox(sys.argv[1], "svc", lease=1.0)
    box.accept([message("m1", b"call 1"), message("m2", b"call 2")])
    box.start("m2", 1.0)
    first = box.epoch
    print("ready", flush=True)
    sys.stdin.readline()  # the test stops this process (SIGSTOP) meanwhile
    print("start", box.start("m1", 2.0), flush=True)
    print("done", box.mark_done([("m2", b"late outcome")]), flush=True)
    wait_for(lambda: box.epoch != first, timeout=30)  # registered again
    print("accept", box.accept([message("m3", b"call 3")]), flush=True)
    print("start", box.start("m3", 3.0), flush=True)
    box.close()
""")


def test_an_instance_whose_lease_was_taken_is_fenced_and_registers_again(
        inboxes, postgres_url):
    survivor = inboxes()
    child = subprocess.Popen([sys.executable, "-c", STALLING, postgres_url, str(HERE)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        child.send_signal(signal.SIGSTOP)  # a real stall: its lease thread stops too
        adopted = wait_for(survivor.adopt, timeout=30)
        assert {row.message_id: row.state for row in adopted} == \
            {"m1": "accepted", "m2": "started"}
        assert survivor.mark_done([("m2", b"interrupted")]) == [True]
        child.send_signal(signal.SIGCONT)
        out, err = child.communicate("go\n", timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    assert child.returncode == 0, err
    assert out.splitlines() == ["start None", "done [False]", "accept [True]",
                                    "start b'call 3'"]
    assert "lost its lease" in err and "registers again" in err
    rows = rows_of(postgres_url)
    assert rows["m1"][:2] == ("accepted", survivor.owner)  # not started by the stalled one
    assert rows["m2"][0] == "done" and rows["m2"][3] == b"interrupted"  # not overwritten
    assert rows["m3"][0] == "started"
    assert survivor.start("m1", 9.0) == b"call 1"


def test_a_clean_close_hands_unfinished_rows_on_at_once(inboxes, postgres_url):
    leaving, staying = inboxes(lease=60.0), inboxes(lease=60.0)
    leaving.accept([message("later"), message("over", response=b"overdue")])
    leaving.close()  # deregisters: no need to wait for a 60 s lease
    assert sorted(row.message_id for row in staying.adopt()) == ["later", "over"]


def test_rows_adopted_by_the_lease_thread_go_to_the_callback(inboxes):
    dying, survivor = inboxes(lease=60.0), inboxes(lease=0.5)
    got = []
    assert survivor.recover(got.extend) == []
    dying.accept([message("m1")])
    dying.close()
    wait_for(lambda: [row.message_id for row in got] == ["m1"], timeout=30)


@pytest.mark.parametrize("lease", [0, -1, float("nan"), "10", True])
def test_a_bad_lease_is_refused_naming_it(postgres_url, lease):
    from pysched_lightning.remote.pg_inbox import PgInbox
    with pytest.raises(ValueError, match=repr(lease)):
        PgInbox(postgres_url, NAME, lease)


def test_an_instance_whose_registration_was_taken_stores_nothing_until_it_registers_again(
        inboxes, postgres_url):
    import psycopg
    from pysched_lightning.remote.pg_inbox import LeaseLost
    box = inboxes(lease=60.0)  # its own thread renews in 20 s: this test renews by hand
    box.accept([message("before")])
    with psycopg.connect(postgres_url, autocommit=True) as db:  # as an adopter does
        db.execute("DELETE FROM remote_services WHERE owner = %s", (box.owner,))
    with pytest.raises(LeaseLost, match="lost its lease"):
        box.accept([message("after")])
    assert box.start("before", 1.0) is None and box.runnable("before") is None
    first = box.epoch
    assert box.renew() is False and box.epoch != first  # registered again
    assert box.renew() is True
    assert box.accept([message("after")]) == [True]
    assert box.start("after", 2.0) == b"body"
    assert [row.message_id for row in box.adopt()] == ["before"]  # an orphan: taken back
    assert box.runnable("before").message_id == "before"
