"""What a request is checked against before the app answers, over a real
server: the Host it names and where a sign-in sends the browser on to."""
from __future__ import annotations

import html as htmllib
import re
import urllib.parse

import pytest

pytest.importorskip("jinja2", reason="the dashboard extra is not installed")

import pysched_lightning as psl  # noqa: E402
from dashboard_stores import fetch, serve  # noqa: E402
from pysched_lightning.dashboard import app  # noqa: E402

TOKEN = "s3cret-token-for-tests-0123456789"


@pytest.fixture
def sched():
    sched = psl.Scheduler()
    sched.delay("recur", 3600, 1, int, task_id="report/hourly")
    try:
        yield sched
    finally:
        sched.shutdown()


def _port(url):
    return url.rsplit(":", 1)[1]


def test_app_answers_only_this_machines_host_names_by_default(sched):
    application = app(sched)
    with serve(application) as url:
        port = _port(url)
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "127.0.0.2",
                     f"localhost.:{port}"):
            assert fetch(url + "/", headers={"Host": host})[0] == 200, host
        for host in (f"evil.example:{port}", "evil.example", f"10.0.0.1:{port}", ""):
            status, _, body = fetch(url + "/", headers={"Host": host})
            assert status == 400 and "allowed_hosts" in body, host


def test_allowed_hosts_names_the_hosts_answered_or_any(sched):
    only = app(sched, allowed_hosts=["Dash.Example"])
    with serve(only) as url:
        assert fetch(url + "/", headers={"Host": "dash.example:443"})[0] == 200
        assert fetch(url + "/", headers={"Host": "evil.example"})[0] == 400
        assert fetch(url + "/", headers={"Host": "localhost"})[0] == 400
    anyone = app(sched, allowed_hosts=["*"])
    with serve(anyone) as url:
        assert fetch(url + "/", headers={"Host": "evil.example"})[0] == 200
    for bad in ("dash.example", [""], [None]):
        with pytest.raises((TypeError, ValueError), match="allowed_hosts"):
            app(sched, allowed_hosts=bad)


@pytest.mark.parametrize("target", [
    "/\\evil.example", "//evil.example", "/\\/evil.example", "\\\\evil.example",
    "/\t/evil.example", "/\n/evil.example", "https://evil.example/", "evil.example",
    "/tasks\r\nSet-Cookie: x=1", "javascript:alert(1)"])
def test_the_sign_in_sends_the_browser_nowhere_but_this_site(sched, target):
    application = app(sched, actions=True, token=TOKEN)
    with serve(application) as url:
        status, headers, _ = fetch(url + "/login", data={"token": TOKEN, "next": target})
        assert status == 303 and headers["Location"] == "/"
        page = fetch(url + "/login?" + urllib.parse.urlencode({"next": target}))[2]
        field = re.search(r'name="next" value="([^"]*)"', page).group(1)
        assert htmllib.unescape(field) == "/"


def test_the_sign_in_keeps_a_path_on_this_site(sched):
    application = app(sched, actions=True, token=TOKEN)
    with serve(application) as url:
        status, headers, _ = fetch(url + "/login", data={
            "token": TOKEN, "next": "/tasks/report/hourly?done=pause"})
        assert status == 303 and headers["Location"] == "/tasks/report/hourly?done=pause"
