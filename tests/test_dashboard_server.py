"""The dashboard's own server over real sockets: connections bounded, idle
ones timed out or making room, close() prompt with idle connections open."""
from __future__ import annotations

import socket
import threading

import pytest

pytest.importorskip("jinja2", reason="the dashboard extra is not installed")

import pysched_lightning as psl  # noqa: E402
from conftest import wait_for  # noqa: E402
from dashboard_stores import fetch  # noqa: E402
from pysched_lightning.dashboard import app, serve  # noqa: E402


@pytest.fixture
def dashboard():
    sched = psl.Scheduler()
    sched.delay("recur", 3600, 1, int, task_id="hourly")
    application = app(sched)
    try:
        yield application
    finally:
        application.close()
        sched.shutdown()


def _connect(server, count=1):
    return [socket.create_connection((server.host, server.port), timeout=10)
            for _ in range(count)]


def test_an_idle_connection_is_closed_after_the_idle_timeout(dashboard):
    with serve(dashboard, "127.0.0.1", 0, idle_timeout=0.2) as server:
        (sock,) = _connect(server)
        try:
            assert sock.recv(1) == b""                 # the server closed it, unasked
        finally:
            sock.close()
        assert fetch(server.url + "tasks")[0] == 200


def test_idle_connections_make_room_for_a_request(dashboard):
    with serve(dashboard, "127.0.0.1", 0, max_connections=4) as server:
        idle = _connect(server, 12)
        try:
            assert fetch(server.url + "tasks")[0] == 200
            assert sum(sock.recv(1) == b"" for sock in idle[:8]) == 8    # the oldest went
        finally:
            for sock in idle:
                sock.close()


def test_a_connection_that_finds_every_slot_busy_is_answered_503():
    release, inside = threading.Event(), threading.Semaphore(0)

    def slow(environ, start_response):            # a request that takes until released
        inside.release()
        release.wait(10)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"done"]

    answers = []
    with serve(slow, "127.0.0.1", 0, max_connections=2) as server:
        busy = [threading.Thread(target=lambda: answers.append(fetch(server.url)[0]))
                for _ in range(2)]
        for thread in busy:
            thread.start()
        for _ in busy:
            assert inside.acquire(timeout=10)
        try:
            status, headers, body = fetch(server.url)
            assert status == 503 and "busy" in body and headers["Retry-After"] == "1"
        finally:
            release.set()
            for thread in busy:
                thread.join(10)
    assert answers == [200, 200]


def test_close_is_prompt_with_idle_connections_open(dashboard):
    server = serve(dashboard, "127.0.0.1", 0).start()
    idle = _connect(server, 10)
    try:
        assert fetch(server.url)[0] == 200
        closer = threading.Thread(target=server.close)
        closer.start()
        closer.join(5)
        assert not closer.is_alive(), "close() waited for connections that never send"
        assert all(sock.recv(1) == b"" for sock in idle)
    finally:
        for sock in idle:
            sock.close()
    wait_for(lambda: not closer.is_alive())


@pytest.mark.parametrize("kwargs", [{"max_connections": 0}, {"max_connections": True},
                                    {"idle_timeout": 0}, {"idle_timeout": "10"}])
def test_bad_server_limits_are_refused_naming_them(dashboard, kwargs):
    ((name, value),) = kwargs.items()
    with pytest.raises(ValueError, match=name) as caught:
        serve(dashboard, "127.0.0.1", 0, **kwargs)
    assert repr(value) in str(caught.value)
