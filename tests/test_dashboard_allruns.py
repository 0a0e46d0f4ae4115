"""The runs view (``/runs``, ``/api/runs``): every task's runs newest first,
filtered by status, task (id or name), window and text in the error, paged
by a cursor; over a SQLite and a PostgreSQL store, and a live scheduler."""
from __future__ import annotations

import collections
import html
import re
import time
import urllib.parse

import pytest

pytest.importorskip("jinja2", reason="the dashboard extra is not installed")

import pysched_lightning as psl  # noqa: E402
from conftest import wait_for  # noqa: E402
from dashboard_stores import wsgi_get as get  # noqa: E402
from pysched_lightning.dashboard import app  # noqa: E402
from pysched_lightning.dashboard.allruns import SCAN_LIMIT  # noqa: E402
from pysched_lightning.durability.stores import SQLiteStore  # noqa: E402
from store_records import record  # noqa: E402

NOW = time.time()
COMPLETED, ERROR, TIMEOUT, MISSED = 0, 1, 5, 6
FAILING = (1, 5, 7)


def _run(task_id, name, k, at, status=COMPLETED, attempt=1, error=None, count=1):
    return {"task_id": task_id, "name": name, "run": k, "attempt": attempt,
            "slot": f"{at:.3f}", "status": status, "scheduled": at,
            "started": None if status == MISSED else at + 0.1,
            "finished": None if status == MISSED else at + 0.6,
            "duration": None if status == MISSED else 0.5, "error": error, "count": count}


def _history():
    """The runs written: a busy task whose failures are retried at the same
    due time, a task that failed then recovered, an old failure, two tasks
    of one name with missed runs."""
    runs = []
    for k in range(120):
        at = NOW - 7200 + k * 60
        if k % 10 == 3:
            runs.append(_run("alpha", "alpha job", k + 1, at, ERROR,
                             error="ConnectionError: upstream answered 503"))
            runs.append(_run("alpha", "alpha job", k + 1, at, attempt=2))
        elif k == 50:
            runs.append(_run("alpha", "alpha job", k + 1, at, TIMEOUT, error="Timeout after 30 s"))
        else:
            runs.append(_run("alpha", "alpha job", k + 1, at))
    for k in range(3):
        runs.append(_run("flaky", "send invoices", k + 1, NOW - 5000 + k * 600, ERROR,
                         error="ConnectionError: invoice service DOWN"))
    for k in range(2):
        runs.append(_run("flaky", "send invoices", k + 4, NOW - 600 + k * 300))
    runs.append(_run("old", "old job", 1, NOW - 3 * 86400, ERROR, error="OSError: disk full"))
    runs.append(_run("twin-a", "twin", 0, NOW - 1000, MISSED, count=4))
    runs.append(_run("twin-b", "twin", 0, NOW - 900, MISSED))
    return runs


def _fill(store, runs):
    for task_id, name in {(run["task_id"], run["name"]) for run in runs}:
        store.save_task(record(task_id, name=name, paused=False, status=COMPLETED,
                               next_run=NOW + 60))
    for run in runs:
        store.finish_run(dict(run))


@pytest.fixture(params=["sqlite", "postgres"], scope="module")
def target(request, tmp_path_factory):
    """A store URL or path holding _history(), written and closed."""
    if request.param == "postgres":
        from services import create_database, drop_database, require_postgres
        from pysched_lightning.durability.stores.postgres import PostgresStore
        admin = require_postgres()
        name = f"psl_test_runs_{time.time_ns()}"
        url = create_database(admin, name)
        store = PostgresStore(url)
        try:
            _fill(store, _history())
        finally:
            store.close()
        yield url
        drop_database(admin, name)
    else:
        path = str(tmp_path_factory.mktemp("runs") / "jobs.db")
        store = SQLiteStore(path)
        try:
            with store.batch():
                _fill(store, _history())
        finally:
            store.close()
        yield path


@pytest.fixture(scope="module")
def dash(target):
    application = app(target, clock=lambda: NOW)
    try:
        yield application
    finally:
        application.close()


def keys(runs):
    return [(run["task_id"], run["scheduled_ts"], run["attempt"]) for run in runs]


def expected(test):
    return sorted(((run["task_id"], run["scheduled"], run["attempt"]) for run in _history()
                   if test(run)), key=lambda key: -key[1])


def test_every_run_is_listed_newest_first_and_paged_exactly_once(dash):
    seen, before, pages = [], None, 0
    while True:
        query = urllib.parse.urlencode({"limit": 7, **({"before": repr(before)} if before else {})})
        status, answer = get(dash, "/api/runs", query)
        assert status == 200, answer
        seen.extend(keys(answer["runs"]))
        pages += 1
        before = answer["next_before"]
        if before is None:
            break
    times = [key[1] for key in seen]
    assert times == sorted(times, reverse=True)
    assert collections.Counter(seen) == collections.Counter(expected(lambda run: True))
    assert pages >= len(seen) // 8                       # pages of about 7, none split


@pytest.mark.parametrize("query, test", [
    ("status=failing&window=24h",
     lambda run: run["status"] in FAILING and run["scheduled"] >= NOW - 86400),
    ("status=failing", lambda run: run["status"] in FAILING),
    ("status=missed&window=24h", lambda run: run["status"] == MISSED),
    ("task=alpha&status=timeout", lambda run: run["task_id"] == "alpha" and run["status"] == 5),
    ("task=SEND+INVOICES", lambda run: run["task_id"] == "flaky"),          # a name, any case
    ("task=twin", lambda run: run["task_id"] in ("twin-a", "twin-b")),     # a name of two
    ("q=service+down", lambda run: run["task_id"] == "flaky" and run["status"] == ERROR),
    ("q=disk", lambda run: run["task_id"] == "old"),
    ("q=disk&window=24h", lambda run: False),
    ("q=503&task=alpha&window=1h",
     lambda run: run["task_id"] == "alpha" and run["status"] == ERROR
     and run["scheduled"] >= NOW - 3600),
    ("task=no-such-task", lambda run: False),
])
def test_filters_give_exactly_the_runs_they_name(dash, query, test):
    status, answer = get(dash, "/api/runs", query + "&limit=1000")
    assert status == 200, answer
    assert keys(answer["runs"]) == expected(test)
    assert answer["next_before"] is None


def test_a_failure_card_leads_to_the_runs_after_the_task_recovered(dash):
    """Regression: the "failures, last 24 h" card led to the tasks filter,
    which said "No task matches" once the failing task had recovered."""
    status, page = get(dash, "/tasks", "status=failing")
    assert 'data-task="flaky"' not in page                  # recovered: not failing now
    card = re.search(r'<a class="stat bad" href="([^"]+)"><span class="n">(\d+)</span>'
                     r'<span class="l">failures, last 24 h', page)
    assert card is not None
    path, _, query = html.unescape(card.group(1)).partition("?")
    assert (path, urllib.parse.parse_qs(query)) == ("/runs", {"status": ["failing"],
                                                              "window": ["24h"]})
    status, runs_page = get(dash, path, query)
    assert status == 200
    shown = re.findall(r'<tr class="run-row [a-z]+" data-task="([^"]+)"', runs_page)
    assert len(shown) == int(card.group(2)) > 0
    assert shown.count("flaky") == 3 and "old" not in shown
    missed = re.search(r'<a class="stat warn" href="([^"]+)"><span class="n">(\d+)</span>', page)
    _, _, query = html.unescape(missed.group(1)).partition("?")
    _, answer = get(dash, "/api/runs", query)
    assert sum(run["count"] for run in answer["runs"]) == int(missed.group(2)) == 5


def test_the_page_lists_runs_with_their_task_and_says_when_none_match(dash):
    status, page = get(dash, "/runs", "task=send+invoices")
    assert status == 200
    assert page.count('data-task="flaky"') == 5
    assert "invoice service DOWN" in page and 'href="/tasks/flaky"' in page
    assert '<option value="failing">' in page
    status, page = get(dash, "/runs", "q=nothing+like+this")
    assert status == 200 and "No run matches." in page


@pytest.mark.parametrize("query, named", [
    ("status=bogus", "status='bogus'"), ("window=3h", "window='3h'"),
    ("limit=0", "limit='0'"), ("before=soon", "before='soon'")])
def test_bad_parameters_are_a_400_naming_the_value(dash, query, named):
    status, answer = get(dash, "/api/runs", query)
    assert status == 400 and named in answer["error"]
    status, page = get(dash, "/runs", query)
    assert status == 400 and named in html.unescape(page)


def test_a_rare_text_on_a_big_store_says_how_far_it_looked(tmp_path):
    """A text search reads at most SCAN_LIMIT runs per page, then offers to
    look further back; following it finds the old match."""
    path = tmp_path / "big.db"
    store = SQLiteStore(path)
    with store.batch():
        store.save_task(record("noisy", name="noisy", paused=False))
        store.finish_run(_run("noisy", "noisy", 1, NOW - 90_000, ERROR, error="the needle"))
        for k in range(SCAN_LIMIT + 500):
            store.finish_run(_run("noisy", "noisy", k + 2, NOW - 80_000 + k, ERROR,
                                  error="routine failure"))
    store.close()
    application = app(str(path), clock=lambda: NOW)
    try:
        status, first = get(application, "/api/runs", "q=needle")
        assert status == 200 and first["runs"] == [] and first["searched_to"] is not None
        status, page = get(application, "/runs", "q=needle")
        assert "Searched back to" in page and "search older runs" in page
        before = first["next_before"]
        status, second = get(application, "/api/runs", f"q=needle&before={before!r}")
        assert [run["error"] for run in second["runs"]] == ["the needle"]
        assert second["next_before"] is None
    finally:
        application.close()


def test_a_live_scheduler_without_a_store_lists_the_runs_it_keeps(no_leaked_threads):
    sched = psl.Scheduler()
    sched.delay("recur", 0.02, 1, int, task_id="tick", name="tick")
    sched.delay("recur", 0.02, 1, _fail, task_id="boom", name="boom")
    sched.start()
    try:
        wait_for(lambda: len(sched.runs("tick")) >= 3 and len(sched.runs("boom")) >= 3)
        application = app(sched)
        status, answer = get(application, "/api/runs", "status=failing&limit=1000")
        assert status == 200 and answer["runs"]
        assert {run["task_id"] for run in answer["runs"]} == {"boom"}
        assert all("it broke" in run["error"] for run in answer["runs"])
        status, answer = get(application, "/api/runs", "task=tick&limit=2")
        assert [run["task_id"] for run in answer["runs"]] == ["tick", "tick"]
        assert answer["next_before"] is not None
    finally:
        sched.shutdown()


def _fail():
    raise RuntimeError("it broke")
