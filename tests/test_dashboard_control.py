"""Actions on a dashboard of a store (``app(url, actions=True, token=...)``
and ``pysched dashboard --store URL --token TOKEN``): each is a control
request in the store, applied by the scheduler that runs in another
process, and answered on the page. Real SQLite files, real processes."""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import urllib.parse

import pytest

pytest.importorskip("jinja2", reason="the dashboard extra is not installed")

import pysched_lightning as psl  # noqa: E402
from conftest import wait_for
from control_node import marks_of  # noqa: E402
from dashboard_stores import fetch, fetch_json  # noqa: E402
from pysched_lightning.dashboard import app  # noqa: E402
from pysched_lightning.dashboard import control as dashboard_control  # noqa: E402
from pysched_lightning.durability.stores import MemoryStore, SQLiteStore  # noqa: E402
from store_records import record  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(ROOT, "tests")
TOKEN = "s3cret-token-for-tests-0123456789"
BEARER = {"HTTP_AUTHORIZATION": f"Bearer {TOKEN}"}


@contextlib.contextmanager
def scheduler_process(path, marks):
    """``control_node``'s scheduler (tasks 'report' and 'other') on the store
    *path*, in a process of its own, until SIGTERM."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, TESTS]))
    node = subprocess.Popen(
        [sys.executable, "-c", "import control_node; control_node.main()", path, marks],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert node.stdout.readline().strip() == "ready", node.stderr.read()
        yield node
    finally:
        node.send_signal(signal.SIGTERM)
        node.communicate(timeout=60)
    assert node.returncode == 0


class Client:
    """Calls a WSGI application directly, as a server would."""

    def __init__(self, application):
        self.app = application
        self.cookie = None

    def call(self, method, path, form=None, query="", headers=None):
        body = urllib.parse.urlencode(form or {}).encode()
        environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query,
                   "HTTP_HOST": "localhost", "wsgi.url_scheme": "http",
                   "REMOTE_ADDR": "127.0.0.1", "wsgi.input": io.BytesIO(body),
                   "CONTENT_LENGTH": str(len(body)), **(headers or {})}
        if self.cookie:
            environ["HTTP_COOKIE"] = self.cookie
        answer = {}

        def start_response(status, headers):
            answer["status"], answer["headers"] = int(status.split()[0]), dict(headers)
        body = b"".join(self.app(environ, start_response)).decode()
        return answer["status"], answer["headers"], body

    def sign_in(self):
        status, headers, _ = self.call("POST", "/login", {"token": TOKEN, "next": "/"})
        assert status == 303
        self.cookie = headers["Set-Cookie"].split(";")[0]
        page = self.call("GET", "/tasks/report")[2]
        return re.search(r'name="csrf" value="([0-9a-f]+)"', page).group(1)


@pytest.fixture
def store_path(tmp_path):
    return str(tmp_path / "jobs.db")


def test_actions_on_a_store_are_applied_by_its_scheduler_in_another_process(
        store_path, tmp_path):
    marks = str(tmp_path / "marks")
    with scheduler_process(store_path, marks):
        application = app(f"sqlite:///{store_path}", actions=True, token=TOKEN, refresh=0)
        client = Client(application)
        try:
            csrf = client.sign_in()
            page = client.call("GET", "/tasks/report")[2]
            assert "Run now" in page and "Pause" in page
            status, headers, _ = client.call("POST", "/tasks/report/pause", {"csrf": csrf})
            assert status == 303 and headers["Location"] == "/tasks/report?done=pause"
            assert "Done: pause." in client.call("GET", "/tasks/report", query="done=pause")[2]
            assert application.source.task("report").paused
            status, _, _ = client.call("POST", "/tasks/report/resume", {"csrf": csrf})
            assert status == 303 and not application.source.task("report").paused
            status, _, body = client.call("POST", "/api/tasks/report/run-now", headers=BEARER)
            answer = json.loads(body)
            assert status == 200 and answer["ok"] is True and answer["action"] == "run-now"
            wait_for(lambda: len(marks_of(marks)) == 1)
            status, _, body = client.call("GET", f"/api/requests/{answer['request']}")
            assert status == 200 and json.loads(body)["message"] == \
                "started an extra run of task 'report'"
            status, _, _ = client.call("POST", "/tasks/other/cancel", {"csrf": csrf})
            assert status == 303 and application.source.task("other") is None
            # The task is gone: refused before anything is written.
            status, _, body = client.call("POST", "/api/tasks/other/pause", headers=BEARER)
            assert status == 404 and "no scheduled task 'other'" in body
            # Without the CSRF token, or signed out: refused as on a live dashboard.
            assert client.call("POST", "/tasks/report/pause", {"csrf": "0" * 64})[0] == 403
            client.cookie = None
            assert client.call("POST", "/tasks/report/pause", {"csrf": csrf})[0] == 403
        finally:
            application.close()
    with SQLiteStore(store_path, read_only=True) as reader:
        assert not reader.task("report").paused
        states = [reader.control_request(i)["state"] for i in range(1, 5)]
        assert states == ["done"] * 4 and reader.control_request(5) is None


def test_a_request_no_scheduler_answers_is_pending_and_can_be_followed(store_path,
                                                                        monkeypatch):
    monkeypatch.setattr(dashboard_control, "ANSWER_WAIT", 0.2)
    sched = psl.Scheduler(store=store_path)  # not started: takes no request
    sched.delay("recur", 3600, 1, int, task_id="report")
    application = app(store_path, actions=True, token=TOKEN, refresh=0)
    client = Client(application)
    try:
        csrf = client.sign_in()
        status, headers, _ = client.call("POST", "/tasks/report/pause", {"csrf": csrf})
        assert status == 303 and headers["Location"] == "/tasks/report?requested=1"
        page = client.call("GET", "/tasks/report", query="requested=1")[2]
        assert "no running scheduler has applied it yet (request #1)" in page
        assert 'href="/api/requests/1"' in page
        status, _, body = client.call("POST", "/api/tasks/report/run-now", headers=BEARER)
        assert status == 202 and json.loads(body)["url"] == "/api/requests/2"
        assert json.loads(client.call("GET", "/api/requests/2")[2])["state"] == "pending"
        sched.start()  # a scheduler applies them, later
        wait_for(lambda: json.loads(client.call("GET", "/api/requests/1")[2])["ok"])
        assert sched.get_task("report")["paused"]
        assert client.call("GET", "/api/requests/99")[0] == 404
        for bad in ("0", "x", "-1"):
            assert client.call("GET", f"/api/requests/{bad}")[0] == 400, bad
    finally:
        application.close()
        sched.shutdown()


def test_a_request_the_scheduler_refuses_shows_its_answer(store_path):
    sched = psl.Scheduler(store=store_path)
    sched.delay("recur", 3600, 1, int, task_id="report")
    sched.start()
    store = SQLiteStore(store_path)  # a task the scheduler does not know
    store.save_task(record("ghost", next_run=None, paused=False))
    store.close()
    application = app(store_path, actions=True, token=TOKEN, refresh=0)
    client = Client(application)
    try:
        status, _, body = client.call("POST", "/api/tasks/ghost/pause", headers=BEARER)
        assert status == 409
        assert json.loads(body)["error"] == "pause task 'ghost' failed: no task 'ghost' " \
                                            "(request #1)"
    finally:
        application.close()
        sched.shutdown()


def test_without_a_token_a_store_dashboard_stays_read_only(store_path):
    with psl.Scheduler(store=store_path) as sched:
        sched.delay("recur", 3600, 1, int, task_id="report")
        application = app(store_path, refresh=0)
        client = Client(application)
        try:
            assert "Pause" not in client.call("GET", "/tasks/report")[2]
            status, _, body = client.call("POST", "/api/tasks/report/pause", headers=BEARER)
            assert status == 403 and "read-only" in body
            assert client.call("POST", "/tasks/report/pause")[0] == 403
            assert client.call("GET", "/login")[0] == 404
            assert client.call("GET", "/api/requests/1")[0] == 404
        finally:
            application.close()
        assert sched.store.control_request(1) is None  # nothing was written
        assert not sched.get_task("report")["paused"]


class _Bare:
    """The store protocol without control requests (another project's store)."""


for _name in ("acquire", "holder", "release", "batch", "load_tasks", "task", "save_task",
              "update_task", "remove_task", "claim_run", "finish_run", "set_aside_runs",
              "release_run", "mark_interrupted", "runs", "count_runs", "purge_runs", "clear",
              "close"):
    setattr(_Bare, _name, lambda self, *args, **kwargs: None)


def test_actions_need_a_store_that_keeps_control_requests():
    with pytest.raises(ValueError, match="has no request_control"):
        app(_Bare(), actions=True, token=TOKEN)
    assert app(MemoryStore(), actions=True, token=TOKEN).source.acts
    assert not app(MemoryStore()).source.acts


def test_a_schema_3_store_is_not_upgraded_by_the_dashboard(store_path):
    SQLiteStore(store_path).close()
    conn = sqlite3.connect(store_path)
    conn.execute("DROP TABLE control_requests")
    conn.execute("PRAGMA user_version = 3")
    conn.close()
    with pytest.raises(sqlite3.DatabaseError, match="schema version 3 has no control requests"):
        app(store_path, actions=True, token=TOKEN)
    app(store_path).close()  # read-only, as before
    conn = sqlite3.connect(store_path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 3
    conn.close()


# -- the command -------------------------------------------------------------------------

@contextlib.contextmanager
def command(*args, env=None):
    """``pysched dashboard`` in a process of its own; yields its URL."""
    proc = subprocess.Popen([sys.executable, "-m", "pysched_lightning.dashboard", *args,
                             "--port", "0"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, **(env or {})))
    try:
        line = proc.stdout.readline()
        assert "http://127.0.0.1:" in line, proc.stderr.read()
        yield line, line.split()[2].rstrip("/")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    assert proc.returncode == 0


def _sign_in(url):
    status, headers, _ = fetch(url + "/login", data={"token": TOKEN, "next": "/"})
    assert status == 303, status
    cookie = headers["Set-Cookie"].split(";")[0]
    page = fetch(url + "/tasks/report", headers={"Cookie": cookie})[2]
    return cookie, re.search(r'name="csrf" value="([0-9a-f]+)"', page).group(1)


@pytest.mark.parametrize("how", ["--token", "environment"])
def test_the_command_with_a_token_acts_on_the_scheduler_of_another_process(
        store_path, tmp_path, how):
    marks = str(tmp_path / "marks")
    args, env = (["--token", TOKEN], None) if how == "--token" else \
        ([], {"PYSCHED_DASHBOARD_TOKEN": TOKEN})
    with scheduler_process(store_path, marks), \
            command("--store", f"sqlite:///{store_path}", *args, env=env) as (line, url):
        assert "actions on" in line
        cookie, csrf = _sign_in(url)
        for action in ("pause", "resume", "run-now", "cancel"):
            status, headers, _ = fetch(f"{url}/tasks/report/{action}", data={"csrf": csrf},
                                       headers={"Cookie": cookie})
            assert (status, headers["Location"]) == (303, f"/tasks/report?done={action}")
            if action == "pause":
                assert fetch_json(url + "/api/tasks/report")[1]["task"]["paused"] is True
            if action == "run-now":
                wait_for(lambda: len(marks_of(marks)) == 1)
        assert fetch(url + "/api/tasks/report")[0] == 404  # canceled: gone from the store
        assert fetch(url + "/tasks/other/pause", data={"csrf": csrf})[0] == 403  # no session


def test_the_command_without_a_token_is_read_only_and_an_empty_token_is_an_error(
        store_path):
    with psl.Scheduler(store=store_path) as sched:
        sched.delay("recur", 3600, 1, int, task_id="report")
        environ = {"PYSCHED_DASHBOARD_TOKEN": ""}
        for args, env in ((["--token", ""], None), ([], environ), (["--token", "  "], None)):
            done = subprocess.run([sys.executable, "-m", "pysched_lightning.dashboard",
                                   "--store", store_path, "--port", "0", *args],
                                  cwd=ROOT, capture_output=True, text=True, timeout=60,
                                  env=dict(os.environ, **(env or {})))
            assert done.returncode == 2 and "empty" in done.stderr, done.stderr
        done = subprocess.run([sys.executable, "-m", "pysched_lightning.dashboard",
                               "--store", store_path, "--port", "0", "--token", "short"],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and "at least 16" in done.stderr
        with command("--store", store_path) as (line, url):
            assert "read-only" in line
            status, _, _ = fetch(url + "/api/tasks/report/pause", data={},
                                 headers={"Authorization": f"Bearer {TOKEN}"})
            assert status == 403
        assert not sched.get_task("report")["paused"]


def test_actions_on_a_postgresql_store_are_applied_once_by_one_of_its_schedulers(
        postgres_url, tmp_path):
    """Two schedulers share the store: a request is taken by one of them,
    applied across both, answered once; a run now runs once."""
    from pysched_lightning.durability.stores import open_store
    marks = str(tmp_path / "marks")
    with scheduler_process(postgres_url, marks), scheduler_process(postgres_url, marks):
        application = app(postgres_url, actions=True, token=TOKEN, refresh=0)
        client = Client(application)
        try:
            status, _, body = client.call("POST", "/api/tasks/report/pause", headers=BEARER)
            assert status == 200 and json.loads(body)["ok"] is True
            assert application.source.task("report").paused
            status, _, body = client.call("POST", "/api/tasks/report/resume", headers=BEARER)
            assert status == 200 and not application.source.task("report").paused
            status, _, body = client.call("POST", "/api/tasks/report/run-now", headers=BEARER)
            answer = json.loads(body)
            assert status == 200 and answer["ok"] is True
            wait_for(lambda: len(marks_of(marks)) == 1)
            status, _, body = client.call("POST", "/api/tasks/other/cancel", headers=BEARER)
            assert status == 200 and application.source.task("other") is None
        finally:
            application.close()
        with pytest.raises(AssertionError):  # a window in which no second run may come
            wait_for(lambda: len(marks_of(marks)) > 1, 1.0)
    reader = open_store(postgres_url, read_only=True)
    try:
        states = [reader.control_request(i)["state"] for i in range(1, 5)]
        assert states == ["done"] * 4 and reader.control_request(5) is None
    finally:
        reader.close()
