"""Client and service through the real RabbitMQ: the service runs as
``pysched serve`` in a process of its own, the client here."""
from __future__ import annotations

import asyncio
import os
import pathlib
import threading
import time
from types import SimpleNamespace

import pytest

from conftest import wait_for
from test_remote_support import (SECRET, Broker, ServiceProcess, add, append_line, blob, broker,
                                 fail, lines, nap, pid, touch, unique, wait_for_file)


@pytest.fixture(scope="module")
def url():
    return broker()


@pytest.fixture(scope="module")
def served(url, tmp_path_factory):
    """One service process for the tests of this module."""
    name = unique("svc")
    tmp = tmp_path_factory.mktemp("served")
    probe = Broker(url)
    probe.track(f"{name}.requests")
    try:
        service = ServiceProcess(url, name, tmp / "service.db", tmp / "service.log").start(probe)
        yield SimpleNamespace(name=name, url=url, probe=probe, pid=service.pid, log=service.log)
        assert service.stop() == 0, service.log.read_text()
    finally:
        probe.close()


@pytest.fixture
def client(served):
    from pysched_lightning.remote import Client
    name = unique("client")
    served.probe.track(f"{served.name}.replies.{name}")
    with Client(name, service=served.name, broker=served.url, secret=SECRET) as client:
        yield client


def await_(client, message_id, timeout=30):
    return client.sync_await_response(message_id, timeout=timeout)


# ------------------------------------------------------------------ round trips


def test_a_task_runs_in_the_service_process_and_its_result_comes_back(client, served):
    remote_add = client.task(add)
    assert remote_add(2, 3) == 5  # still a plain function here
    before = time.time()
    response = await_(client, remote_add.launch(2, b=3))
    assert (response.status, response.result, response.exception) == ("completed", 5, None)
    assert before <= response.started.timestamp() <= response.finished.timestamp() <= time.time()
    assert response.started.tzinfo is not None
    assert await_(client, client.task(pid).launch()).result == served.pid


def test_a_closure_travels_by_value(client):
    offset = 40

    @client.task
    def shifted(x):
        return [x + offset, threading.current_thread().name.startswith("pysched")]

    assert await_(client, shifted.launch(2)).result == [42, True]


def test_a_hard_task_runs_in_a_process_of_its_own(client, served):
    remote_pid = client.task(pid).set_parameters(hard=True)
    result = await_(client, remote_pid.launch(), timeout=60).result
    assert result not in (served.pid, os.getpid())


def test_an_exception_comes_back_with_the_remote_traceback(client):
    response = await_(client, client.task(fail).launch("no luck"))
    assert response.status == "error" and response.result is None
    assert isinstance(response.exception, ValueError) and str(response.exception) == "no luck"
    assert "test_remote_support.py" in response.traceback and ", in fail" in response.traceback


def test_a_result_that_cannot_be_pickled_is_an_error(client):
    response = await_(client, client.task(threading.Lock).launch())
    assert response.status == "error"
    assert "could not be pickled" in str(response.exception)


def test_lifetimes_end_thread_and_hard_tasks_as_timeout(client, served, url):
    from pysched_lightning.remote import Client
    slow = client.task(nap).set_parameters(task_lifetime=0.2)
    response = await_(client, slow.launch(1.0))
    assert response.status == "timeout" and isinstance(response.exception, TimeoutError)
    assert "lifetime of 0.2 s" in str(response.exception)
    name = unique("client")
    served.probe.track(f"{served.name}.replies.{name}")
    with Client(name, service=served.name, broker=url, secret=SECRET,
                hard_task_lifetime=0.5) as other:
        stuck = other.task(nap).set_parameters(hard=True)  # the client's hard default applies
        assert stuck.parameters["lifetime"] == 0.5
        response = await_(other, stuck.launch(60), timeout=60)
    assert response.status == "timeout" and response.result is None


def test_a_delay_is_counted_from_the_launch(client):
    later = client.task(add).set_parameters(delay=0.3)
    before = time.time()
    response = await_(client, later.launch(1, 1))
    assert response.result == 2
    assert response.started.timestamp() >= before + 0.3


def test_responses_are_kept_and_read_again(client):
    message_id = client.task(add).launch(1, 2)
    first = await_(client, message_id)
    assert client.get_response(message_id) is first
    assert client.get_response(message_id) is first
    assert client.get_response("never-sent") is None


def test_waiting_for_a_response_that_does_not_come_times_out(client):
    with pytest.raises(TimeoutError, match="never-sent"):
        client.sync_await_response("never-sent", timeout=0.05)
    with pytest.raises(TimeoutError, match="never-sent"):
        asyncio.run(client.async_get_response("never-sent", timeout=0.05))


def test_a_response_can_be_awaited(client):
    remote_add = client.task(add)

    async def main():
        message_id = remote_add.launch(20, 22)
        return await client.async_get_response(message_id, timeout=30)

    assert asyncio.run(main()).result == 42


def test_push_sends_a_raw_request(client):
    from pysched_lightning.remote import Request
    request = Request(add, (1,), {"b": 1}, priority=0, message_id=unique("raw"))
    assert client.push(request) == request.message_id
    assert await_(client, request.message_id).result == 2
    with pytest.raises(TypeError, match="Request"):
        client.push({"fn": add})


def test_bad_launch_parameters_change_nothing(client):
    remote_add = client.task(add).set_parameters(delay=1, priority=2)
    for bad in ({"delay": -1}, {"hard": "yes"}, {"task_lifetime": 0}, {"priority": None},
                {"delay": 2, "hard_task_lifetime": "long"}):
        with pytest.raises((TypeError, ValueError), match=repr(list(bad.values())[-1])):
            remote_add.set_parameters(**bad)
    assert remote_add.parameters == {"delay": 1, "hard": False, "priority": 2,
                                     "lifetime": None}
    with pytest.raises(TypeError, match=r"args\[0\] cannot be pickled"):
        remote_add.launch(threading.Lock(), 1)
    with pytest.raises(TypeError, match="callable"):
        client.task(42)


def test_a_message_over_the_limit_is_refused_by_the_client(served, url):
    from pysched_lightning.remote import Client
    name = unique("client")
    served.probe.track(f"{served.name}.replies.{name}")
    with Client(name, service=served.name, broker=url, secret=SECRET,
                max_message_size=4096) as small:
        with pytest.raises(ValueError, match="over the message size limit of 4096"):
            small.task(add).launch(b"x" * 5000, b"")


def test_a_closed_client_refuses_work_and_leaves_no_thread(served, url, no_leaked_threads):
    from pysched_lightning.remote import Client
    name = unique("client")
    served.probe.track(f"{served.name}.replies.{name}")
    closed = Client(name, service=served.name, broker=url, secret=SECRET)
    message_id = closed.task(add).launch(1, 1)
    assert closed.sync_await_response(message_id, timeout=30).result == 2
    closed.close()
    closed.close()  # twice is fine
    assert closed.get_response(message_id).result == 2  # what arrived stays readable
    with pytest.raises(RuntimeError, match="closed"):
        closed.task(add).launch(1, 1)
    with pytest.raises(RuntimeError, match="closed"):
        closed.sync_await_response("other", timeout=1)


# ------------------------------------------------------------------ an in-process service


@pytest.fixture
def in_process(url, tmp_path):
    """A service in this process (start(block=False)), stopped after the test."""
    from pysched_lightning.remote import Service
    made = []
    probe = Broker(url)

    def make(**options):
        name = options.pop("name", None) or unique("svc")
        probe.track(f"{name}.requests")
        service = Service(name, url, options.pop("store", f"sqlite:///{tmp_path}/s.db"),
                          options.pop("secret", SECRET), **options)
        made.append(service)
        return service

    yield SimpleNamespace(make=make, probe=probe, url=url)
    for service in made:
        if service.running:
            service.stop()
    probe.close()


def make_client(env, service, **options):
    from pysched_lightning.remote import Client
    name = unique("client")
    env.probe.track(f"{service.name}.replies.{name}")
    return Client(name, service=service.name, broker=env.url,
                  secret=options.pop("secret", SECRET), **options)


def test_priority_orders_tasks_waiting_for_a_worker(in_process, tmp_path):
    service = in_process.make(workers=1)
    service.start(block=False)
    order, gate = tmp_path / "order", tmp_path / "gate"
    with make_client(in_process, service) as client:
        blocker = client.task(wait_for_file).launch(str(gate))
        wait_for(lambda: not gate.exists() and service.running)
        step = client.task(append_line)
        ids = [step.set_parameters(priority=p).launch(str(order), f"p{p}") for p in (5, 9, 0)]
        time.sleep(0.2)  # let all three arrive behind the blocker (the order needs no clock)
        gate.touch()
        for message_id in [blocker, *ids]:
            assert await_(client, message_id).status == "completed"
    assert lines(order) == ["p0", "p5", "p9"]


def test_enable_overdue_false_skips_a_task_whose_delay_passed_on_arrival(in_process, tmp_path):
    from pysched_lightning.remote import Request
    service = in_process.make()
    with make_client(in_process, service) as client:  # the service is not running yet
        late = client.push(Request(touch, (str(tmp_path / "late"),), delay=0.05,
                                   enable_overdue=False))
        anyway = client.push(Request(touch, (str(tmp_path / "anyway"),), delay=0.05))
        undelayed = client.push(Request(touch, (str(tmp_path / "now"),),
                                        enable_overdue=False))
        launched = time.time()
        wait_for(lambda: time.time() > launched + 0.1)
        service.start(block=False)
        response = await_(client, late)
        assert response.status == "overdue" and "overdue" in str(response.exception)
        assert await_(client, anyway).status == "completed"
        assert await_(client, undelayed).status == "completed"
    assert not (tmp_path / "late").exists()
    assert (tmp_path / "anyway").exists() and (tmp_path / "now").exists()


def test_a_stopped_service_leaves_no_thread_or_process(in_process, no_leaked_threads):
    import psutil

    def workers():  # loky's and multiprocessing's trackers live as long as this process
        return {p for p in psutil.Process().children(recursive=True)
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE
                and "resource_tracker" not in " ".join(p.cmdline())}

    before = workers()
    service = in_process.make()
    service.start(block=False)
    with make_client(in_process, service) as client:
        hard = client.task(pid).set_parameters(hard=True)
        assert await_(client, hard.launch(), timeout=60).status == "completed"
    service.stop()
    service.stop()  # twice is fine
    assert not service.running
    wait_for(lambda: workers() <= before)


def test_one_service_per_name_and_per_store(in_process, tmp_path):
    first = in_process.make()
    first.start(block=False)
    same_name = in_process.make(name=first.name, store=f"sqlite:///{tmp_path}/other.db")
    with pytest.raises(RuntimeError, match="another service of that name"):
        same_name.start(block=False)
    same_store = in_process.make()
    with pytest.raises(RuntimeError, match="in use"):
        same_store.start(block=False)


def test_an_unreachable_broker_is_reported_at_start(tmp_path):
    from pysched_lightning.remote import Client, Service
    dead = "amqp://guest:guest@127.0.0.1:1/%2F"
    service = Service("svc", dead, f"sqlite:///{tmp_path}/s.db", SECRET)
    with pytest.raises(ConnectionError, match=r"127\.0\.0\.1:1"):
        service.start(block=False)
    with pytest.raises(RuntimeError, match="started already"):
        service.start(block=False)
    with pytest.raises(ConnectionError, match="cannot reach the broker"):
        Client("c", broker=dead, secret=SECRET)
    Service("svc", dead, f"sqlite:///{tmp_path}/s.db", SECRET)  # the store is free again
    with pytest.raises(RuntimeError, match="not started"):
        Service("svc", dead, f"sqlite:///{tmp_path}/s.db", SECRET).stop()


@pytest.mark.parametrize("options, fragment", [
    ({"name": "has space"}, "'has space'"), ({"broker": "http://x"}, "'http://x'"),
    ({"store": "redis://x"}, "'redis://x'"), ({"workers": 0}, "0"),
    ({"prefetch": 0}, "0"), ({"max_message_size": 10}, "10"), ({"fsync": "yes"}, "'yes'"),
])
def test_bad_service_options_are_named(tmp_path, options, fragment):
    from pysched_lightning.remote import Service
    arguments = {"name": "svc", "broker": "amqp://localhost", "store": f"{tmp_path}/s.db",
                 "secret": SECRET, **options}
    with pytest.raises((TypeError, ValueError), match=fragment):
        Service(**arguments)
    assert not pathlib.Path(f"{tmp_path}/s.db").exists()


def test_a_response_over_the_clients_limit_comes_as_an_error_saying_so(served, url):
    """The service's limit is larger than the client's: the waiter hears why."""
    from pysched_lightning.remote import Client, RemoteError
    name = unique("client")
    served.probe.track(f"{served.name}.replies.{name}")
    with Client(name, service=served.name, broker=url, secret=SECRET,
                max_message_size=4096) as small:
        response = small.sync_await_response(small.task(blob).launch(6000), timeout=15)
    assert response.status == "error" and isinstance(response.exception, RemoteError)
    assert "over this client's max_message_size of 4096" in str(response.exception)


def test_an_unreachable_broker_is_named_with_the_os_error(tmp_path):
    from pysched_lightning.remote import Client, Service
    dead = "amqp://guest:guest@127.0.0.1:1/%2F"
    expected = r"127\.0\.0\.1:1: ConnectionRefusedError: \[Errno 111\] Connection refused"
    with pytest.raises(ConnectionError, match=expected):
        Client("c", broker=dead, secret=SECRET)
    with pytest.raises(ConnectionError, match=expected):
        Service("svc", dead, f"sqlite:///{tmp_path}/s.db", SECRET).start(block=False)
