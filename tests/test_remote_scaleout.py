"""Services that scale out: several ``pysched serve --store postgresql://...``
of one name consume its request queue together, and each task runs once,
across them and across a SIGKILL of one. Real RabbitMQ, real PostgreSQL,
each service a process of its own; runs are counted in files the tasks
write (one line per start, one per end, with the process id)."""
from __future__ import annotations

import pytest

from conftest import wait_for
from test_remote_durability import new_client
from test_remote_support import (Broker, Proxy, ServiceProcess, broker, gated, lines, record,
                                 unique)

#: Short leases, so a killed service's tasks are taken over within seconds.
LEASE = ("--lease", "2")


@pytest.fixture
def env(postgres_url):
    url = broker()
    probe = Broker(url)
    yield probe, url, postgres_url
    probe.close()  # kills the services a failed test left running


def serve(probe, url, name, store, log, broker_url=None):
    return ServiceProcess(broker_url or url, name, store, log, *LEASE).start(probe)


def held_by(store, name, service, state):
    """The message ids in *state* that the service process *service* owns."""
    import psycopg
    with psycopg.connect(store) as db:
        rows = db.execute("SELECT message_id, owner FROM remote_messages "
                          "WHERE name = %s AND state = %s", (name, state)).fetchall()
    return {message_id for message_id, owner in rows
            if owner.split(":")[-2] == str(service.pid)}  # owner: host:pid:random


def started_by(runs, tags):
    return {tag: lines(runs / "starts" / tag) for tag in tags if lines(runs / "starts" / tag)}


def test_two_services_of_one_name_share_its_requests(env, tmp_path):
    probe, url, store = env
    name = unique("svc")
    probe.track(f"{name}.requests")
    services = [serve(probe, url, name, store, tmp_path / f"service{i}.log") for i in (0, 1)]
    wait_for(lambda: probe.consumers(f"{name}.requests") == 2, 30)  # not exclusive
    runs, gates = tmp_path / "runs", tmp_path / "gates"
    gates.mkdir()
    pids = {str(service.pid) for service in services}
    with new_client(probe, url, name) as client:
        task = client.task(gated)
        ids = {task.launch(str(runs), f"t{i}", str(gates)): f"t{i}" for i in range(8)}
        # Two workers each: four tasks wait at their gates at once, on both services.
        wait_for(lambda: {pid for starts in started_by(runs, ids.values()).values()
                          for pid in starts} == pids, 60)
        for tag in ids.values():
            (gates / tag).touch()
        responses = {tag: client.sync_await_response(message_id, timeout=60)
                     for message_id, tag in ids.items()}
        # A hard task's process starts its row in the database itself.
        hard = client.task(record).set_parameters(hard=True).launch(str(runs), "hard")
        in_process = client.sync_await_response(hard, timeout=60)
    assert in_process.status == "completed", in_process
    assert str(in_process.result) not in pids
    assert lines(runs / "starts" / "hard") == [str(in_process.result)]
    assert {response.status for response in responses.values()} == {"completed"}
    assert {str(response.result) for response in responses.values()} == pids
    for tag, response in responses.items():
        assert lines(runs / "starts" / tag) == lines(runs / "ends" / tag) == \
            [str(response.result)]
    assert [service.stop() for service in services] == [0, 0]


def test_a_killed_service_s_tasks_are_taken_over_and_each_runs_once(env, tmp_path):
    """One service is SIGKILLed while it holds accepted, started and done
    rows (its broker connection stalled, so its finished tasks' responses
    are stored, not yet confirmed): the other one answers every task, the
    started ones "interrupted", and none runs twice."""
    probe, url, store = env
    name = unique("svc")
    probe.track(f"{name}.requests")
    proxy = Proxy()
    runs, gates = tmp_path / "runs", tmp_path / "gates"
    gates.mkdir()
    try:
        doomed = serve(probe, url, name, store, tmp_path / "doomed.log", proxy.url())
        survivor = serve(probe, url, name, store, tmp_path / "survivor.log")
        wait_for(lambda: probe.consumers(f"{name}.requests") == 2, 30)
        with new_client(probe, url, name) as client:
            task = client.task(gated)
            ids = {task.launch(str(runs), f"t{i}", str(gates)): f"t{i}" for i in range(20)}

            def held(state):
                return held_by(store, name, doomed, state)
            # Its two workers wait at their tasks' gates; the rest it took wait, accepted.
            wait_for(lambda: len(held("started")) == 2 and len(held("accepted")) >= 3, 60)
            proxy.stall()  # from now on it neither receives nor publishes
            first = held("started")
            for message_id in first:
                (gates / ids[message_id]).touch()
            # Those end, their responses stored (done) and unconfirmed; two more start.
            wait_for(lambda: held("done") == first and len(held("started")) == 2, 60)
            holding = {state: held(state) for state in ("accepted", "started", "done")}
            doomed.kill()
            for tag in ids.values():
                (gates / tag).touch()
            responses = {message_id: client.sync_await_response(message_id, timeout=60)
                         for message_id in ids}
    finally:
        proxy.close()
    for message_id, tag in ids.items():
        starts, ends = lines(runs / "starts" / tag), lines(runs / "ends" / tag)
        assert len(starts) <= 1 and len(ends) <= 1, (tag, starts, ends)  # never twice
        response = responses[message_id]
        if message_id in holding["started"]:  # running when it was killed: not run again
            assert response.status == "interrupted", (tag, response)
            assert "not run again" in str(response.exception)
            assert starts == [str(doomed.pid)] and ends == []
        elif message_id in holding["done"]:  # ran there; the survivor published it
            assert (response.status, response.result) == ("completed", doomed.pid)
            assert starts == ends == [str(doomed.pid)]
        else:  # taken over while accepted, or the survivor's from the start
            assert (response.status, response.result) == ("completed", survivor.pid), tag
            assert starts == ends == [str(survivor.pid)]
    assert "let their lease lapse" in survivor.log.read_text()
    assert survivor.stop() == 0
    assert held_by(store, name, survivor, "done") == set()  # every response confirmed


def test_a_stalled_service_loses_its_tasks_then_takes_them_back_when_the_other_dies(
        env, tmp_path):
    """A service stalls (SIGSTOP) past its lease while both services' workers
    are busy: the other takes its tasks over. Resumed, it finds its lease
    lost: its running tasks' outcomes are not stored (the other answered
    them "interrupted") and its runs of the waiting ones do not start; it
    registers again. Once the other is SIGKILLed it takes every task back
    and runs each once."""
    import signal
    probe, url, store = env
    name = unique("svc")
    probe.track(f"{name}.requests")
    runs, gates = tmp_path / "runs", tmp_path / "gates"
    gates.mkdir()
    stalled = serve(probe, url, name, store, tmp_path / "stalled.log")
    other = serve(probe, url, name, store, tmp_path / "other.log")
    wait_for(lambda: probe.consumers(f"{name}.requests") == 2, 30)

    def held(service, *states):
        return set().union(*(held_by(store, name, service, state) for state in states))
    with new_client(probe, url, name) as client:
        busy = client.task(gated)
        ids = {busy.launch(str(runs), f"busy{i}", str(gates)): f"busy{i}" for i in range(6)}
        wait_for(lambda: len(held(stalled, "started")) == len(held(other, "started")) == 2, 30)
        task = client.task(record)
        ids.update({task.launch(str(runs), f"t{i}"): f"t{i}" for i in range(10)})
        wait_for(lambda: len(held(stalled, "started", "accepted"))
                 + len(held(other, "started", "accepted")) == len(ids), 30)
        first_started = {ids[m] for m in held(stalled, "started")}
        first_waiting = held(stalled, "accepted")
        other_started = {ids[m] for m in held(other, "started")}
        stalled.proc.send_signal(signal.SIGSTOP)
        try:  # the other takes all over: it cannot run them, its workers are busy
            wait_for(lambda: not held(stalled, "accepted", "started", "done"), 30)
        finally:
            stalled.proc.send_signal(signal.SIGCONT)
        for tag in first_started:  # its workers are free again: its waiting runs come
            (gates / tag).touch()
        wait_for(lambda: stalled.log.read_text().count("is another service instance's now")
                 == len(first_waiting), 30)
        # (its heartbeat says so too, which may come after its workers' refused writes)
        wait_for(lambda: "lost its lease" in stalled.log.read_text(), 30)
        assert first_waiting <= held(other, "accepted")  # none ran anywhere
        other.kill()
        for tag in ids.values():
            (gates / tag).touch()
        responses = {tag: client.sync_await_response(message_id, timeout=60)
                     for message_id, tag in ids.items()}
    for tag, response in responses.items():
        starts, ends = lines(runs / "starts" / tag), lines(runs / "ends" / tag)
        if tag in first_started:  # ran to its end there, but was answered by the other
            assert response.status == "interrupted", (tag, response)
            assert starts == ends == [str(stalled.pid)]
        elif tag in other_started:  # running when the other was killed
            assert response.status == "interrupted", (tag, response)
            assert starts == [str(other.pid)] and ends == []
        else:  # every waiting one, taken back: run once, there
            assert (response.status, response.result) == ("completed", stalled.pid), tag
            assert starts == ends == [str(stalled.pid)]
    assert "let their lease lapse" in stalled.log.read_text()
    assert stalled.stop() == 0
