"""Nothing lost, nothing run twice: each property against the real broker,
each with a test that fails without it. Runs are counted in files that the
tasks write (one line per start, one per end, with the process id)."""
from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import wait_for
from test_remote_support import (HERE, SECRET, Broker, ServiceProcess, add, broker, lines,
                                 record, touch, unique)


@pytest.fixture
def env(tmp_path):
    url = broker()
    probe = Broker(url)
    yield probe, url
    probe.close()


def new_service(probe, url, tmp_path, name=None, **options):
    name = name or unique("svc")
    probe.track(f"{name}.requests")
    return ServiceProcess(url, name, tmp_path / "service.db", tmp_path / "service.log",
                          **options)


def new_client(probe, url, service_name, name=None, **options):
    from pysched_lightning.remote import Client
    name = name or unique("client")
    probe.track(f"{service_name}.replies.{name}")
    return Client(name, service=service_name, broker=url, secret=SECRET, **options)


def state_of(store, message_id):
    with sqlite3.connect(str(store)) as db:
        row = db.execute("SELECT state FROM remote_messages WHERE message_id = ?",
                         (message_id,)).fetchone()
    return row and row[0]


LAUNCH_AND_DIE = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, sys.argv[3])
    from pysched_lightning.remote import Client
    from test_remote_support import SECRET, add
    client = Client(sys.argv[2], service=sys.argv[1], broker=sys.argv[4], secret=SECRET)
    message_id = client.task(add).launch(1, 2)
    print(message_id, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # no close(), no flush: only what the broker has
""")


def test_launch_returns_only_once_the_broker_has_the_message(env):
    probe, url = env
    service, client = unique("svc"), unique("client")
    probe.track(f"{service}.requests", f"{service}.replies.{client}")
    child = subprocess.run([sys.executable, "-c", LAUNCH_AND_DIE, service, client, str(HERE),
                            url], capture_output=True, text=True, timeout=60)
    message_id = child.stdout.strip()
    assert child.returncode == -9 and message_id, child.stderr
    assert probe.ready(f"{service}.requests") == 1
    method, properties, _ = probe.channel.basic_get(f"{service}.requests", auto_ack=False)
    assert properties.message_id == message_id and properties.delivery_mode == 2
    probe.channel.basic_nack(method.delivery_tag, requeue=True)


def test_a_message_is_acknowledged_only_after_it_is_stored(env, tmp_path):
    probe, url = env
    service = new_service(probe, url, tmp_path).start(probe)
    with new_client(probe, url, service.name) as client:
        assert client.sync_await_response(client.task(add).launch(1, 1), timeout=30).result == 2
        # The store refuses new rows (a trigger, added behind the service's back).
        with sqlite3.connect(str(service.store)) as db:
            db.execute("CREATE TRIGGER refuse BEFORE INSERT ON remote_messages "
                       "BEGIN SELECT RAISE(ABORT, 'the store refuses'); END")
        message_id = client.task(touch).launch(str(tmp_path / "ran"))
        wait_for(lambda: "the store refuses" in service.log.read_text())
        with sqlite3.connect(str(service.store)) as db:
            db.execute("DROP TRIGGER refuse")
        # Not acknowledged when the commit failed, so delivered again, and run.
        response = client.sync_await_response(message_id, timeout=30)
    assert response.status == "completed" and (tmp_path / "ran").exists()
    log = service.log.read_text()
    assert "storing received tasks failed; they go back to the queue" in log
    assert service.stop() == 0


def test_launch_fails_when_the_broker_does_not_take_the_message(env):
    from pysched_lightning.remote import LaunchError
    probe, url = env
    name = unique("svc")  # no service runs: the messages stay in the queue
    probe.track(f"{name}.requests")
    with new_client(probe, url, name) as client:
        client.task(add).launch(1, 1)
        probe.channel.queue_delete(f"{name}.requests")
        with pytest.raises(LaunchError, match="no queue took message"):
            client.task(add).launch(1, 2)  # unroutable: the broker did not keep it
        client.task(add).launch(1, 3)  # the queue is declared again
    assert probe.ready(f"{name}.requests") == 1


def test_a_killed_service_runs_every_accepted_task_exactly_once(env, tmp_path):
    probe, url = env
    runs = tmp_path / "runs"
    service = new_service(probe, url, tmp_path).start(probe)
    first_pid = service.pid
    with new_client(probe, url, service.name) as client:
        task = client.task(record)
        ids = {task.launch(str(runs), f"t{i}", 0.1): f"t{i}" for i in range(16)}
        # Two workers, 0.1 s each: kill it when a few are done, two are
        # running and the rest are stored but not started.
        wait_for(lambda: len(list((runs / "ends").glob("t*"))) >= 4
                 if (runs / "ends").exists() else False)
        service.kill()
        service.start(probe)
        responses = {tag: client.sync_await_response(message_id, timeout=60)
                     for message_id, tag in ids.items()}
    assert service.stop() == 0
    statuses = {response.status for response in responses.values()}
    assert statuses <= {"completed", "interrupted"} and "completed" in statuses
    ran_where = set()
    for tag, response in responses.items():
        starts, ends = lines(runs / "starts" / tag), lines(runs / "ends" / tag)
        assert len(starts) <= 1 and len(ends) <= 1, (tag, starts, ends)  # never twice
        if response.status == "completed":
            assert starts == ends == [str(response.result)]
            ran_where.add(int(response.result))
        else:  # marked started when killed (its first line may not have run): not again
            assert "not run again" in str(response.exception)
    assert first_pid in ran_where and service.pid in ran_where  # resumed after the restart


def test_an_offline_client_gets_its_responses_when_it_comes_back(env, tmp_path):
    probe, url = env
    service = new_service(probe, url, tmp_path).start(probe)
    name = unique("client")
    with new_client(probe, url, service.name, name=name) as client:
        message_id = client.task(add).launch(20, 22)
    replies = f"{service.name}.replies.{name}"
    wait_for(lambda: probe.ready(replies) == 1)  # answered while no client was there
    with new_client(probe, url, service.name, name=name) as again:
        response = again.sync_await_response(message_id, timeout=30)
    assert (response.message_id, response.result) == (message_id, 42)
    assert service.stop() == 0


def test_a_message_seen_again_is_not_run_again(env, tmp_path):
    from pysched_lightning.remote import Request
    probe, url = env
    service = new_service(probe, url, tmp_path).start(probe)
    runs = str(tmp_path / "runs")
    with new_client(probe, url, service.name) as client:
        twice = Request(record, (runs, "twice", 0.2), message_id=unique("dup"))
        client.push(twice)
        client.push(twice)  # while the first copy runs
        assert client.sync_await_response(twice.message_id, timeout=30).status == "completed"
        client.push(twice)  # after it finished and was answered
        control = client.task(add).launch(1, 1)  # behind the copy in the queue
        assert client.sync_await_response(control, timeout=30).result == 2
    assert lines(tmp_path / "runs" / "starts" / "twice") == [str(service.pid)]
    assert service.stop() == 0
    assert service.log.read_text().count("arrived again") == 2


def test_a_task_not_yet_due_survives_a_clean_stop(env, tmp_path):
    probe, url = env
    service = new_service(probe, url, tmp_path).start(probe)
    with new_client(probe, url, service.name) as client:
        later = client.task(touch).set_parameters(delay=1.0)
        launched = time.time()
        message_id = later.launch(str(tmp_path / "ran"))
        wait_for(lambda: state_of(service.store, message_id) == "accepted")
        assert service.stop() == 0  # accepted, not due: kept in the store
        assert not (tmp_path / "ran").exists()
        service.start(probe)
        response = client.sync_await_response(message_id, timeout=30)
    assert response.status == "completed" and (tmp_path / "ran").exists()
    assert response.started.timestamp() >= launched + 1.0  # its due time was kept
    assert service.stop() == 0


def test_both_sides_reconnect_and_nothing_is_lost_or_run_twice(env, tmp_path, caplog):
    """The broker connections drop (a TCP relay is cut) several times while
    tasks flow: every task is answered, each ran once."""
    import logging
    from pysched_lightning.remote import Client, Service
    from test_remote_support import Proxy
    probe, url = env
    proxy = Proxy()
    name, client_name = unique("svc"), unique("client")
    probe.track(f"{name}.requests", f"{name}.replies.{client_name}")
    caplog.set_level(logging.INFO, logger="pysched_lightning.remote")
    service = Service(name, proxy.url(), f"sqlite:///{tmp_path}/s.db", SECRET, workers=2)
    service.start(block=False)
    runs = str(tmp_path / "runs")
    try:
        with Client(client_name, service=name, broker=proxy.url(), secret=SECRET) as client:
            task = client.task(record)
            ids = {}
            for i in range(30):
                ids[task.launch(runs, f"t{i}", 0.01)] = f"t{i}"
                if i % 10 == 5:
                    proxy.cut()
            for round_ in range(2):  # and while the responses are on their way
                time.sleep(0.05)
                proxy.cut()
            responses = {tag: client.sync_await_response(message_id, timeout=60)
                         for message_id, tag in ids.items()}
    finally:
        service.stop()
        proxy.close()
    assert {r.status for r in responses.values()} == {"completed"}
    for tag in ids.values():
        assert len(lines(tmp_path / "runs" / "starts" / tag)) == 1, tag
    assert "broker connection lost" in caplog.text and "retrying in" in caplog.text
    assert "connected to the broker again" in caplog.text


KEEP_UNASKED_AND_DIE = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, sys.argv[3])
    from pysched_lightning.remote import Client
    from test_remote_support import SECRET, add
    from test_remote_durability import state_of
    from conftest import wait_for
    service, name, url, store = sys.argv[1], sys.argv[2], sys.argv[4], sys.argv[5]
    client = Client(name, service=service, broker=url, secret=SECRET)
    unasked = client.task(add).launch(20, 22)
    wait_for(lambda: state_of(store, unasked) in ("done", "published"))
    asked = client.task(add).launch(1, 1)
    assert client.sync_await_response(asked, timeout=30).result == 2

    def read_unasked():  # wait (and so read) for something else till it is in memory
        try:
            client.sync_await_response("never-sent", timeout=0.1)
        except TimeoutError:
            pass
        return unasked in client._replies._responses
    wait_for(read_unasked)
    try:  # and a while longer, reading (a second read at least)
        client.sync_await_response("never-sent", timeout=2.0)
    except TimeoutError:
        pass
    print(unasked, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_a_response_read_but_not_asked_for_survives_a_sigkilled_client(env, tmp_path):
    probe, url = env
    service = new_service(probe, url, tmp_path).start(probe)
    name = unique("client")
    probe.track(f"{service.name}.replies.{name}")
    child = subprocess.run([sys.executable, "-c", KEEP_UNASKED_AND_DIE, service.name, name,
                            str(HERE), url, str(service.store)], capture_output=True,
                           text=True, timeout=90)
    unasked = child.stdout.strip()
    assert child.returncode == -9 and unasked, child.stderr
    with new_client(probe, url, service.name, name=name) as again:
        response = again.sync_await_response(unasked, timeout=15)
    assert response.result == 42
    assert service.stop() == 0


def test_launch_ends_at_confirm_timeout_when_the_broker_stalls_and_can_be_pushed_again(
        env, tmp_path):
    """A stalled broker (a relay that stops passing bytes, connections open):
    launch() raises LaunchTimeout, naming the message, on a connection it
    had and on one it makes; pushing the request again afterwards runs the
    task once."""
    from concurrent.futures import ThreadPoolExecutor
    from pysched_lightning.remote import Client, LaunchTimeout
    from test_remote_support import Proxy
    probe, url = env
    service = new_service(probe, url, tmp_path).start(probe)
    proxy = Proxy()
    name = unique("client")
    probe.track(f"{service.name}.replies.{name}")
    runs = str(tmp_path / "runs")
    old, new = ThreadPoolExecutor(1), ThreadPoolExecutor(1)  # a launching thread each
    try:
        with Client(name, service=service.name, broker=proxy.url(), secret=SECRET,
                    confirm_timeout=1.0) as client:
            task = client.task(record)
            warm = old.submit(task.launch, runs, "warm").result(30)  # its connection is made
            assert client.sync_await_response(warm, timeout=30).status == "completed"
            proxy.stall()
            errors = []
            for thread, tag in ((old, "stalled"), (new, "connecting")):
                # (a broken build waits for the broker's heartbeat, a minute or more)
                launch = thread.submit(task.launch, runs, tag)
                with pytest.raises(LaunchTimeout) as info:
                    launch.result(20)
                errors.append(info.value)
            proxy.resume()
            for error in errors:
                assert error.request.message_id == error.message_id
                assert repr(error.message_id) in str(error) and "not run twice" in str(error)
                assert client.push(error.request) == error.message_id  # pushed again
            responses = [client.sync_await_response(error.message_id, timeout=30)
                         for error in errors]
    finally:
        proxy.close()
        old.shutdown(wait=False)
        new.shutdown(wait=False)
    assert [response.status for response in responses] == ["completed", "completed"]
    for tag in ("stalled", "connecting"):
        assert len(lines(tmp_path / "runs" / "starts" / tag)) == 1
    assert service.stop() == 0
