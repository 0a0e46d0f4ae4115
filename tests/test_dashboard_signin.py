"""Signing in to a live dashboard over a real server: a session per
sign-in, kept and ended by the server; sign-out behind the CSRF token; a
wrong token makes its client wait."""
from __future__ import annotations

import re
import threading

import pytest

pytest.importorskip("jinja2", reason="the dashboard extra is not installed")

import pysched_lightning as psl  # noqa: E402
from dashboard_stores import fetch, serve  # noqa: E402
from pysched_lightning.dashboard import app  # noqa: E402

TOKEN = "s3cret-token-for-tests-0123456789"
PAUSE = "/tasks/report/hourly/pause"


class Clock:
    """The app's clock, moved by the test."""

    def __init__(self, start=1_800_000_000.0):
        self.t = start
        self._lock = threading.Lock()

    def __call__(self):
        with self._lock:
            return self.t

    def advance(self, seconds):
        with self._lock:
            self.t += seconds


@pytest.fixture
def live():
    sched = psl.Scheduler()
    sched.delay("recur", 3600, 1, int, task_id="report/hourly")
    clock = Clock()
    application = app(sched, actions=True, token=TOKEN, refresh=0, clock=clock)
    try:
        with serve(application) as url:
            yield sched, url, clock
    finally:
        sched.shutdown()


def _sign_in(url, token=TOKEN):
    status, headers, _ = fetch(url + "/login", data={"token": token, "next": "/tasks"})
    assert status == 303, status
    cookie = headers["Set-Cookie"].split(";")[0]
    page = fetch(url + "/tasks/report/hourly", headers={"Cookie": cookie})[2]
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page).group(1)
    return cookie, csrf


def _pause(url, cookie, csrf):
    return fetch(url + PAUSE, data={"csrf": csrf}, headers={"Cookie": cookie})[0]


def test_each_sign_in_gets_a_session_of_its_own(live):
    sched, url, _ = live
    first, first_csrf = _sign_in(url)
    second, second_csrf = _sign_in(url)
    assert first != second and first_csrf != second_csrf
    assert TOKEN not in first + second
    assert _pause(url, first, second_csrf) == 403              # a CSRF token is its session's


def test_sign_out_ends_the_session_on_the_server(live):
    sched, url, _ = live
    cookie, csrf = _sign_in(url)
    status, headers, _ = fetch(url + "/logout", data={"csrf": csrf}, headers={"Cookie": cookie})
    assert status == 303 and "Max-Age=0" in headers["Set-Cookie"]
    assert _pause(url, cookie, csrf) == 403                    # the old cookie opens nothing
    assert 'name="csrf"' not in fetch(url + "/tasks/report/hourly",
                                      headers={"Cookie": cookie})[2]
    assert sched.get_task("report/hourly")["paused"] is False


def test_sign_out_needs_the_sessions_csrf_token(live):
    sched, url, _ = live
    cookie, csrf = _sign_in(url)
    assert fetch(url + "/logout", data={}, headers={"Cookie": cookie})[0] == 403
    assert fetch(url + "/logout", data={"csrf": "0" * 64}, headers={"Cookie": cookie})[0] == 403
    assert fetch(url + "/logout", data={"csrf": csrf}, headers={
        "Cookie": cookie, "Origin": "http://evil.example"})[0] == 403
    assert _pause(url, cookie, csrf) == 303                    # still signed in
    assert sched.get_task("report/hourly")["paused"] is True


def test_a_session_expires_on_the_server_after_eight_hours(live):
    sched, url, clock = live
    cookie, csrf = _sign_in(url)
    clock.advance(8 * 3600 - 60)
    assert fetch(url + "/tasks/report/hourly/resume", data={"csrf": csrf},
                 headers={"Cookie": cookie})[0] == 303
    clock.advance(61)
    assert _pause(url, cookie, csrf) == 403                    # a replayed cookie too
    assert sched.get_task("report/hourly")["paused"] is False


def test_a_wrong_token_makes_its_client_wait_longer_each_time(live):
    sched, url, clock = live
    wrong = {"token": "wrong" * 5}
    assert fetch(url + "/login", data=wrong)[0] == 403
    status, headers, body = fetch(url + "/login", data={"token": TOKEN})
    assert status == 429 and headers["Retry-After"] == "1" and "try again" in body
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert fetch(url + "/api" + PAUSE, data={}, headers=bearer)[0] == 429
    assert sched.get_task("report/hourly")["paused"] is False
    clock.advance(1.0)
    assert fetch(url + "/login", data=wrong)[0] == 403          # the second miss: 2 s
    clock.advance(1.5)
    assert fetch(url + "/login", data={"token": TOKEN})[0] == 429
    clock.advance(0.5)
    assert fetch(url + "/api" + PAUSE, data={}, headers=bearer)[0] == 200
    assert fetch(url + "/login", data={"token": TOKEN})[0] == 303   # a hit forgets the misses
