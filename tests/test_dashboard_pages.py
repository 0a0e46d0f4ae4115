"""The query parameters of every page and JSON route: a value that cannot be
used is a 400 naming it, never a 500, whatever the query string holds."""
from __future__ import annotations

import html
import io
import os
import json
import urllib.parse
import wsgiref.util

import pytest

pytest.importorskip("jinja2", reason="the dashboard extra is not installed")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import pysched_lightning as psl  # noqa: E402
from conftest import wait_for  # noqa: E402
from dashboard_stores import fetch_json, serve  # noqa: E402
from pysched_lightning.dashboard import app  # noqa: E402

TOKEN = "s3cret-token-for-tests-0123456789"
PARAMS = ("q", "status", "sort", "order", "page", "window", "limit", "before", "since",
          "until", "at", "attempt", "slot", "field", "next", "done", "task")
#: Every route that reads its query, for the task "tick" (which has runs).
PATHS = ("/", "/tasks", "/timeline", "/login", "/tasks/tick", "/tasks/tick/run",
         "/tasks/tick/text", "/tasks/nothing", "/api/tasks", "/api/summary", "/api/timeline",
         "/api/tasks/tick", "/api/tasks/tick/runs", "/api/tasks/nothing/runs", "/runs",
         "/api/runs", "/workers", "/api/workers")


@pytest.fixture(scope="module")
def sched(tmp_path_factory):
    """A live scheduler whose store holds a few runs of "tick"."""
    path = str(tmp_path_factory.mktemp("pages") / "jobs.db")
    sched = psl.Scheduler(store=path)
    sched.delay("recur", 0.02, 1, int, task_id="tick", name="tick")
    sched.start()
    try:
        wait_for(lambda: len(sched.runs("tick")) >= 3)
        yield sched
    finally:
        sched.shutdown()


@pytest.fixture(scope="module")
def apps(sched):
    store = app(sched.store.path)
    live = app(sched, actions=True, token=TOKEN)
    try:
        yield store, live
    finally:
        store.close()


def _get(application, path, query):
    """The status of a GET through the WSGI app itself."""
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": query,
               "HTTP_HOST": "127.0.0.1:8765", "wsgi.input": io.BytesIO()}
    wsgiref.util.setup_testing_defaults(environ)
    answer = {}

    def start_response(status, headers):
        answer["status"] = int(status.split()[0])

    body = b"".join(application(environ, start_response))
    return answer["status"], body


@pytest.mark.parametrize("path, query, named", [
    ("/api/timeline", "until=1e15", "1e15"), ("/api/timeline", "since=-1e300", "-1e300"),
    ("/api/timeline", "until=inf", "inf"), ("/api/timeline", "since=nan", "nan"),
    ("/api/timeline", "until=0001-01-01T00:00:00%2B01:00", "0001-01-01"),
    ("/api/tasks/tick/runs", "before=1e300", "1e300"),
    ("/api/tasks/tick/runs", "limit=1e3", "1e3"), ("/tasks/tick/run", "at=1e20", "1e20"),
    ("/tasks/tick/run", "at=1&attempt=-1", "-1"), ("/timeline", "page=0", "page='0'"),
    ("/api/runs", "before=1e300", "1e300"), ("/runs", "limit=1e3", "1e3"),
    ("/runs", "status=paused", "paused")])
def test_a_query_value_out_of_range_is_a_400_naming_it(sched, path, query, named):
    application = app(sched)
    status, body = _get(application, path, query)
    assert status == 400, (path, query, status)
    message = json.loads(body)["error"] if path.startswith("/api/") else html.unescape(body.decode())
    assert named in message


def test_the_timeline_api_over_http_refuses_a_time_past_the_year_9999(sched):
    application = app(sched)
    with serve(application) as url:
        status, body = fetch_json(url + "/api/timeline?until=1e15")
    assert status == 400 and "until='1e15'" in body["error"]


_VALUES = st.one_of(
    st.text(max_size=30),
    st.integers().map(str), st.floats().map(repr), st.floats().map(str),
    st.sampled_from(["", "1e15", "-1e15", "1e308", "9" * 5000, "0x10", "1_0", " 5 ", "inf",
                     "-inf", "nan", "2026-11-30T12:00:00Z", "9999-12-31T23:59:59-01:00",
                     "0001-01-01T00:00:00+01:00", "24h", "failing", "desc", "name", "output",
                     "/\\evil.example", "%ff", "\x00"]))


@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "150")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(path=st.sampled_from(PATHS),
       params=st.lists(st.tuples(st.sampled_from(PARAMS), _VALUES), max_size=4),
       raw=st.text(max_size=20))
def test_no_query_string_makes_a_route_fail(apps, path, params, raw):
    query = urllib.parse.urlencode(params) + ("&" + raw if raw else "")
    for application in apps:
        status, body = _get(application, path, query)
        assert status < 500, (path, query, body[:300])
        if path.startswith("/api/") and status == 400:
            assert json.loads(body)["error"]
