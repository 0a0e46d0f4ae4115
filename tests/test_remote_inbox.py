"""The service's inbox: the row states, duplicates, the store lock, and
commits that outlive a killed process. Real SQLite files, no broker."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from pysched_lightning.remote.inbox import Inbox, NewMessage, start_in, store_path


@pytest.fixture
def inbox(tmp_path):
    box = Inbox(str(tmp_path / "service.db"))
    yield box
    box.close()


def message(message_id, body=b"body", response=None):
    return NewMessage(message_id, "client-1", 100.0, body, response)


def test_a_message_id_is_accepted_once(inbox):
    assert inbox.accept([message("a"), message("b"), message("a")]) == [True, True, False]
    assert inbox.accept([message("b"), message("c")]) == [False, True]
    assert [(row.message_id, row.state) for row in inbox.unfinished()] == \
        [("a", "accepted"), ("b", "accepted"), ("c", "accepted")]


def test_a_row_starts_once_and_hands_out_its_body(inbox):
    inbox.accept([message("a", b"the call")])
    assert inbox.start("a", 123.0) == b"the call"
    assert inbox.start("a", 124.0) is None
    assert start_in(inbox.path, False, "a", 125.0) is None
    row, = inbox.unfinished()
    assert (row.state, row.started) == ("started", 123.0)


def test_another_process_can_start_a_row(inbox):
    inbox.accept([message("a", b"the call")])
    assert start_in(inbox.path, False, "a", 5.0) == b"the call"
    assert inbox.state("a") == "started"


def test_responses_are_stored_for_running_rows_only(inbox):
    inbox.accept([message("a"), message("b"), message("c", response=b"overdue")])
    inbox.start("a", 1.0)
    assert inbox.mark_done([("a", b"ra"), ("b", b"rb"), ("c", b"rc"), ("zz", b"?")]) == \
        [True, True, False, False]
    assert {row.message_id: row.response for row in inbox.unfinished()} == \
        {"a": b"ra", "b": b"rb", "c": b"overdue"}


def test_published_rows_keep_only_their_id(inbox):
    inbox.accept([message("a", b"x" * 1000)])
    inbox.start("a", 1.0)
    inbox.mark_done([("a", b"response")])
    inbox.mark_published(["a"])
    assert inbox.unfinished() == []
    assert inbox.state("a") == "published"
    assert inbox.accept([message("a")]) == [False]  # a replay is still recognised
    with sqlite3.connect(inbox.path) as db:
        assert db.execute("SELECT body, response FROM remote_messages").fetchall() == \
            [(None, None)]


def test_one_service_per_store(tmp_path):
    path = str(tmp_path / "service.db")
    first = Inbox(path)
    try:
        with pytest.raises(RuntimeError, match=r"service\.db.*in use by pid"):
            Inbox(path)
    finally:
        first.close()
    Inbox(path).close()  # free again once closed


HOLDER = textwrap.dedent("""
    import sys, time
    from pysched_lightning.remote.inbox import Inbox, NewMessage
    box = Inbox(sys.argv[1])
    box.accept([NewMessage("from-child", "c", 1.0, b"call")])
    print("ready", flush=True)
    time.sleep(60)
""")


def test_a_commit_outlives_a_killed_process_and_its_lock_goes_with_it(tmp_path):
    path = str(tmp_path / "service.db")
    child = subprocess.Popen([sys.executable, "-c", HOLDER, path], stdout=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        with pytest.raises(RuntimeError, match="in use"):
            Inbox(path)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        child.stdout.close()
    box = Inbox(path)
    try:
        assert [(row.message_id, row.state, row.body) for row in box.unfinished()] == \
            [("from-child", "accepted", b"call")]
    finally:
        box.close()


@pytest.mark.parametrize("given, path", [
    ("sqlite:///service.db", "service.db"),
    ("sqlite:////var/lib/s.db", "/var/lib/s.db"),
    ("plain/path.db", "plain/path.db"),
])
def test_store_urls_and_paths(given, path):
    """The forms every store= takes, as the absolute path actually used."""
    assert store_path(given) == os.path.abspath(path)


@pytest.mark.parametrize("given, error", [
    ("postgres://host/db", ValueError), ("sqlite:///", ValueError), (":memory:", ValueError),
    ("sqlite:///:memory:", ValueError), (42, TypeError), ("sqlite:s.db", ValueError),
    ("mysql://host/db", ValueError),
])
def test_a_store_that_is_not_a_file_is_refused(given, error):
    with pytest.raises(error, match=repr(given).replace("/", ".")):
        store_path(given)
