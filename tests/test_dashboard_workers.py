"""The workers view (``/workers``, ``/api/workers``): a live scheduler's
lanes (pool size, busy, waiting, held), and from a store what it knows;
and who holds a store, in the CLI's words."""
from __future__ import annotations

import os
import re
import socket
import threading

import pytest

pytest.importorskip("jinja2", reason="the dashboard extra is not installed")

import pysched_lightning as psl  # noqa: E402
from conftest import wait_for  # noqa: E402
from dashboard_stores import wsgi_get as get  # noqa: E402
from pysched_lightning.dashboard import app  # noqa: E402


def test_a_live_scheduler_shows_pool_size_busy_workers_and_runs_waiting():
    release = threading.Event()
    sched = psl.Scheduler(executor=psl.ThreadPoolExecutor(max_workers=2))
    sched.start()
    try:
        for n in range(3):
            sched.delay("once", 0, 1, release.wait, args=(10,), task_id=f"block-{n}")
        application = app(sched)
        wait_for(lambda: get(application, "/api/workers")[1]["lanes"][0]["waiting"] == 1)
        status, answer = get(application, "/api/workers")
        assert status == 200 and answer["live"] is True
        [lane] = answer["lanes"]
        assert {key: lane[key] for key in ("kind", "size", "busy", "idle", "waiting", "held")} \
            == {"kind": "threads", "size": 2, "busy": 2, "idle": 0, "waiting": 1, "held": 0}
        status, page = get(application, "/workers")
        row = re.search(r'<tr class="lane" data-lane="threads">(.*?)</tr>', page, re.S).group(1)
        assert re.findall(r'<td class="num">([^<]*)</td>', row) == ["2", "2", "0", "1", "0"]
        assert 'id="not-live"' not in page
        release.set()
        wait_for(lambda: get(application, "/api/workers")[1]["lanes"][0]["busy"] == 0)
    finally:
        release.set()
        sched.shutdown()


def test_a_store_says_pools_are_not_known_and_names_its_holder_as_the_cli_does(tmp_path):
    path = str(tmp_path / "jobs.db")
    sched = psl.Scheduler(store=path)
    sched.delay("recur", 3600, 1, int, task_id="hourly")
    sched.start()
    try:
        words = f"pid {os.getpid()} on {socket.gethostname()}"
        application = app(path)
        try:
            status, answer = get(application, "/api/workers")
            assert status == 200 and answer["live"] is False and answer["lanes"] is None
            assert "known only to the scheduler process" in answer["note"]
            assert answer["held_by"] == words and answer["running_recorded"] == 0
            status, page = get(application, "/workers")
            assert 'id="not-live"' in page and "<table" not in page
            assert f"<dd>{words}</dd>" in page
            status, page = get(application, "/tasks")
            visible = re.sub(r'title="[^"]*"', "", page)
            assert f"held by <span class=\"mono\" >{words}</span>" in visible
            assert f":{os.getpid()}:" not in visible             # not the raw owner string
            assert get(application, "/api/summary")[1]["held_by"] == words
        finally:
            application.close()
    finally:
        sched.shutdown()
