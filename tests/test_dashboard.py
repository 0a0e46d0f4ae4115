"""The dashboard over HTTP: a real server on 127.0.0.1 reading a real SQLite
store that a real scheduler filled (two hours replayed on a virtual clock),
and a live scheduler with actions behind a token."""
from __future__ import annotations

import json
import re
import time

import pytest

pytest.importorskip("jinja2", reason="the dashboard extra is not installed")

import pysched_lightning as psl  # noqa: E402
from conftest import wait_for  # noqa: E402
from dashboard_stores import BIG_OUTPUT, fetch, fetch_json, replay_store, serve  # noqa: E402
from pysched_lightning.dashboard import app  # noqa: E402
from pysched_lightning.durability.stores import open_store  # noqa: E402

TOKEN = "s3cret-token-for-tests-0123456789"


@pytest.fixture(scope="module")
def replay(tmp_path_factory):
    folder = tmp_path_factory.mktemp("replay")
    path = str(folder / "jobs.db")
    info = replay_store(path)
    info["path"] = path
    return info


@pytest.fixture(scope="module")
def site(replay):
    """The dashboard of the replayed store, served read-only."""
    application = app(replay["path"], allowed_hosts=["127.0.0.1", "localhost"])
    with serve(application) as url:
        yield url
    application.close()


def rows_of(html):
    """The task ids of the tasks table, in order."""
    return re.findall(r'<tr class="task-row[^"]*" data-task="([^"]*)"', html)


# ----------------------------------------------------------------- tasks page


def test_tasks_page_lists_every_task_with_its_schedule_and_state(site, replay):
    status, headers, html = fetch(site + "/")
    assert status == 200
    assert sorted(rows_of(html)) == sorted(replay["ids"].values())
    assert "Every 15 minutes" in html and "*/15 * * * *" in html      # cron in words and as written
    assert "Every 2 minutes" in html and "every 2 min" in html        # a recurring task
    assert 'datetime="' in html and " UTC</time>" in html              # times in UTC without JS
    assert re.search(r'class="rel"[^>]*>in \d+ (s|min)<', html)        # and relative: "in 4 min"
    assert "Paused" in html                                            # the paused task says so
    assert headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert headers["X-Content-Type-Options"] == "nosniff"


def test_a_failed_task_is_marked_and_says_why(site):
    html = fetch(site + "/tasks")[2]
    row = re.search(r'<tr class="task-row ([^"]*)" data-task="jobs/nightly-backup.sh">(.*?)</tr>',
                    html, re.S)
    assert "failing" in row.group(1) and "error" in row.group(1)
    assert '<span class="badge error">Error</span>' in row.group(2)
    assert "exit 3: tar: /backup: No space left on device" in row.group(2)
    ok = re.search(r'<tr class="task-row ([^"]*)" data-task="crunch-numbers">', html)
    assert "failing" not in ok.group(1)


def test_the_summary_counts_tasks_failures_and_missed_runs(site, replay):
    store = open_store(replay["path"], read_only=True)
    try:
        day = time.time() - 86400
        failures = store.count_runs(since=day, statuses=(1, 5))
        missed = sum(r["count"] for r in store.runs(since=day, statuses=(6,)))
    finally:
        store.close()
    status, summary = fetch_json(site + "/api/summary")
    assert status == 200
    assert summary["tasks"] == len(replay["ids"]) and summary["paused"] == 1
    assert summary["failures_24h"] == failures > 0
    assert summary["missed_24h"] == missed > 0
    assert summary["holder"] is None and summary["live"] is False


@pytest.mark.parametrize("query, expected", [
    ("status=failing", {"jobs/nightly-backup.sh", "send-invoices"}),
    ("status=paused", {"cleanup-tmp"}),
    ("q=BACKUP", {"jobs/nightly-backup.sh"}),
    ("q=every+20+min", {"send-invoices"}),
    ("q=nothing-like-this", set()),
])
def test_filters_by_status_and_text(site, query, expected):
    status, _, html = fetch(f"{site}/tasks?{query}")
    assert status == 200
    assert set(rows_of(html)) == expected


def test_sorting_by_runs_puts_the_busiest_task_first(site, replay):
    store = open_store(replay["path"], read_only=True)
    try:
        runs = {t.id: t.runs for t in store.load_tasks()}
    finally:
        store.close()
    ids = rows_of(fetch(site + "/tasks?sort=runs&order=asc")[2])
    assert [runs[i] for i in ids] == sorted(runs.values(), reverse=True)
    ids = rows_of(fetch(site + "/tasks?sort=runs&order=desc")[2])
    assert [runs[i] for i in ids] == sorted(runs.values())


@pytest.mark.parametrize("query, named", [
    ("status=bogus", "status='bogus'"), ("sort=color", "sort='color'"),
    ("page=x", "page='x'"), ("order=up", "order='up'")])
def test_bad_parameters_are_a_400_naming_the_value(site, query, named):
    status, _, html = fetch(f"{site}/tasks?{query}")
    assert status == 400
    assert named.replace("'", "&#39;") in html


# ----------------------------------------------------------------- one task


def test_task_page_shows_definition_next_runs_and_history(site, replay):
    status, _, html = fetch(site + "/tasks/reports/daily-sales")
    assert status == 200
    assert "daily sales report" in html and "Europe/Berlin" in html
    assert "Work" in html                                             # what it calls
    shown = re.findall(r'<li><time datetime="([^"]+)"', html)
    expected = [time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) for t in replay["cron_preview"]]
    assert [s[:19] for s in shown] == expected                       # the scheduler's own next 10
    store = open_store(replay["path"], read_only=True)
    try:
        stored = store.count_runs("reports/daily-sales")
    finally:
        store.close()
    assert html.count('class="run-row') == stored > 0


def test_history_pages_back_through_every_run_exactly_once(site, replay):
    store = open_store(replay["path"], read_only=True)
    try:
        every = [(r["scheduled"], r["attempt"]) for r in store.runs("send-invoices")]
    finally:
        store.close()
    seen, before = [], None
    for _ in range(50):
        url = f"{site}/api/tasks/send-invoices/runs?limit=2"
        if before is not None:
            url += f"&before={before!r}"
        status, page = fetch_json(url)
        assert status == 200
        seen += [(r["scheduled_ts"], r["attempt"]) for r in page["runs"]]
        before = page["next_before"]
        if before is None:
            break
    assert seen == every and len(every) > 4


def test_task_ids_with_slashes_and_unknown_tasks(site):
    assert fetch(site + "/tasks/jobs/nightly-backup.sh")[0] == 200
    status, _, html = fetch(site + "/tasks/no/such/task")
    assert status == 404 and "no/such/task" in html
    assert fetch_json(site + "/api/tasks/no-such-task")[0] == 404


# ----------------------------------------------------------------- runs


def _first_run_link(site, task_id):
    html = fetch(f"{site}/tasks/{task_id}")[2]
    link = re.search(r'<a href="(/tasks/[^"]+/run\?[^"]+)">#', html).group(1)
    return site + link.replace("&amp;", "&")


def test_a_failed_python_run_shows_its_traceback(site):
    status, _, html = fetch(_first_run_link(site, "send-invoices"))
    assert status == 200
    assert '<span class="badge error">Error</span>' in html
    assert "Traceback (most recent call last)" in html
    assert "in fetch_orders" in html and "ConnectionError: invoice service down" in html


def test_a_failed_command_shows_exit_code_stderr_and_output(site):
    html = fetch(_first_run_link(site, "jobs/nightly-backup.sh"))[2]
    assert "<dt>Exit code</dt><dd class=\"mono\">3</dd>" in html
    assert "tar: /backup: No space left on device" in html
    assert "copying /srv/data to /backup" in html
    # the library's traceback is there, folded, after the job's own output
    assert html.index("Error output (stderr)") < html.index("<details>")


def test_a_large_output_is_cut_in_the_page_with_a_link_to_the_whole(site):
    html = fetch(_first_run_link(site, "export-csv"))[2]
    link = re.search(r'<a href="([^"]+field=output[^"]*)">Whole text</a>', html)
    assert link is not None
    pre = re.search(r'<section class="text output">.*?<pre>(.*?)</pre>', html, re.S).group(1)
    status, headers, whole = fetch(site + link.group(1).replace("&amp;", "&"))
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    assert len(whole) > BIG_OUTPUT and len(pre) < len(whole)
    assert whole.endswith(pre)


# ----------------------------------------------------------------- timeline and JSON


def test_timeline_draws_bars_coloured_by_status_and_marks_missed_runs(site):
    status, _, html = fetch(site + "/timeline?window=24h")
    assert status == 200
    svg = re.search(r"<svg class=\"timeline\".*?</svg>", html, re.S).group(0)
    assert svg.count('class="mark ok"') > 10 and 'class="mark error"' in svg
    assert 'class="missed"' in svg                                    # a diamond at a missed slot
    assert 'class="late"' in svg                                      # a whisker: started late
    assert "exit 3" in svg                                            # titles say what happened
    assert len(re.findall(r'<g class="row"', svg)) == 8


def test_timeline_filters_like_the_tasks_page(site):
    html = fetch(site + "/timeline?window=1h&status=failing")[2]
    tasks = set(re.findall(r'<g class="row" data-task="([^"]+)"', html))
    assert tasks == {"jobs/nightly-backup.sh", "send-invoices"}
    assert fetch(site + "/timeline?window=2y")[0] == 400


def test_json_routes(site, replay):
    status, body = fetch_json(site + "/api/tasks?status=failing")
    assert status == 200 and {t["id"] for t in body["tasks"]} == {"jobs/nightly-backup.sh",
                                                                  "send-invoices"}
    status, body = fetch_json(site + "/api/tasks/reports/daily-sales")
    assert body["task"]["words"].startswith("Every 15 minutes")
    assert len(body["next_run_times"]) == 10 and body["runs"][0]["status"] == "Completed"
    assert "outcome" not in body["runs"][0]                            # pickles never leave the store
    since = replay["end"] - 1800
    status, body = fetch_json(f"{site}/api/timeline?since={since}")
    assert status == 200 and body["runs"]
    assert all(r["scheduled_ts"] >= since for r in body["runs"])
    status, body = fetch_json(site + "/api/timeline?since=yesterday")
    assert status == 400 and "since='yesterday'" in body["error"]


def test_a_foreign_host_header_is_refused(site):
    status, _, _ = fetch(site + "/", headers={"Host": "attacker.example:80"})
    assert status == 400
    assert fetch(site.replace("127.0.0.1", "localhost") + "/")[0] == 200


# ----------------------------------------------------------------- read-only


def test_a_store_dashboard_is_read_only(site, replay):
    for path in ("/tasks/crunch-numbers/run-now", "/api/tasks/crunch-numbers/pause"):
        status, _, _ = fetch(site + path, data={"csrf": "x"},
                             headers={"Authorization": f"Bearer {TOKEN}"})
        assert status == 403
    # (with a token, a store's dashboard writes control requests: test_dashboard_control.py)
    with pytest.raises(ValueError, match="actions=True needs a token"):
        app(replay["path"], actions=True)
    store = open_store(replay["path"], read_only=True)
    try:
        assert store.task("crunch-numbers").paused is False
        assert store.holder() is None                                  # the dashboard never held it
    finally:
        store.close()


def test_a_missing_store_file_is_not_created(tmp_path):
    missing = tmp_path / "nope.db"
    with pytest.raises(FileNotFoundError):
        app(str(missing))
    assert not missing.exists()


# ----------------------------------------------------------------- a live scheduler


def _hostile():
    raise ValueError("<img src=x onerror=alert(2)>")


@pytest.fixture
def live(tmp_path):
    sched = psl.Scheduler(store=str(tmp_path / "live.db"))
    sched.delay("recur", 3600, 1, _hostile, task_id="hostile",
                name="<script>alert(1)</script>")
    sched.delay("recur", 3600, 1, time.time, task_id="report/hourly", name="hourly report")
    sched.start()
    application = app(sched, actions=True, token=TOKEN, refresh=0)
    try:
        with serve(application) as url:
            yield sched, url
    finally:
        sched.shutdown()


def _sign_in(url):
    status, headers, _ = fetch(url + "/login", data={"token": TOKEN, "next": "/tasks"})
    assert status == 303 and headers["Location"] == "/tasks"
    cookie = headers["Set-Cookie"].split(";")[0]
    assert "HttpOnly" in headers["Set-Cookie"] and "SameSite=Strict" in headers["Set-Cookie"]
    html = fetch(url + "/tasks/report/hourly", headers={"Cookie": cookie})[2]
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', html).group(1)
    return cookie, csrf


def test_hostile_names_and_errors_are_shown_as_text(live):
    sched, url = live
    sched.run_now("hostile")
    wait_for(lambda: sched.get_status("hostile") is psl.TaskStatus.ERROR)
    for path in ("/", "/tasks/hostile", "/timeline?window=10m"):
        html = fetch(url + path)[2]
        assert "<script>alert(1)</script>" not in html
        assert "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in fetch(url + "/tasks/hostile")[2]
    wait_for(lambda: sched.runs("hostile"))
    run_html = fetch(_first_run_link(url, "hostile"))[2]
    assert "&lt;img src=x onerror=alert(2)&gt;" in run_html


def test_actions_need_a_signed_in_session_and_its_csrf_token(live):
    sched, url = live
    target = url + "/tasks/report/hourly/pause"
    assert fetch(target, data={})[0] == 403                             # not signed in
    cookie, csrf = _sign_in(url)
    assert fetch(target, data={}, headers={"Cookie": cookie})[0] == 403          # no CSRF token
    assert fetch(target, data={"csrf": "0" * 64}, headers={"Cookie": cookie})[0] == 403
    assert fetch(target, data={"csrf": csrf}, headers={
        "Cookie": cookie, "Origin": "http://evil.example"})[0] == 403             # another site
    assert sched.get_task("report/hourly")["paused"] is False
    status, headers, _ = fetch(target, data={"csrf": csrf}, headers={"Cookie": cookie})
    assert status == 303 and headers["Location"].endswith("/tasks/report/hourly?done=pause")
    assert sched.get_task("report/hourly")["paused"] is True
    fetch(url + "/tasks/report/hourly/resume", data={"csrf": csrf}, headers={"Cookie": cookie})
    assert sched.get_task("report/hourly")["paused"] is False


def test_run_now_and_cancel_through_the_api_with_a_bearer_token(live):
    sched, url = live
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert fetch(url + "/api/tasks/report/hourly/run-now", data={})[0] == 403
    status, body = fetch_json(url + "/api/tasks/report/hourly/run-now", data={}, headers=auth)
    assert status == 200 and body["ok"] is True
    wait_for(lambda: fetch_json(url + "/api/tasks/report/hourly/runs")[1]["runs"])
    status, body = fetch_json(url + "/api/tasks/report/hourly/cancel", data={}, headers=auth)
    assert status == 200
    assert "report/hourly" not in sched.task
    assert fetch_json(url + "/api/tasks/report/hourly/cancel", data={}, headers=auth)[0] == 404


def test_a_scheduler_without_a_store_shows_the_runs_it_keeps(no_leaked_threads):
    sched = psl.Scheduler()
    try:
        tid = sched.delay("recur", 0.05, 1, lambda: 1 / 0, task_id="divide")
        sched.start()
        wait_for(lambda: len(sched.runs(tid)) >= 3)
        application = app(sched)
        with serve(application) as url:
            html = fetch(url + "/tasks/divide")[2]
            assert html.count('class="run-row error') >= 3
            assert "ZeroDivisionError" in fetch(_first_run_link(url, "divide"))[2]
            assert fetch(url + "/tasks/divide/pause", data={})[0] == 403  # actions are off
    finally:
        sched.shutdown()


# ----------------------------------------------------------------- arguments


@pytest.mark.parametrize("kwargs, error", [
    ({"actions": True}, ValueError), ({"token": TOKEN}, ValueError),
    ({"actions": True, "token": "short"}, ValueError), ({"actions": 1, "token": TOKEN}, TypeError),
    ({"refresh": -1}, ValueError), ({"refresh": "5"}, ValueError)])
def test_bad_arguments_are_refused(kwargs, error):
    sched = psl.Scheduler()
    try:
        with pytest.raises(error):
            app(sched, **kwargs)
    finally:
        sched.shutdown()
    with pytest.raises(TypeError, match="42"):
        app(42)


def test_the_token_never_appears_in_errors_or_pages():
    sched = psl.Scheduler()
    try:
        with pytest.raises(ValueError) as caught:
            app(sched, actions=True, token="tooshort-secret")
        assert "tooshort-secret" not in str(caught.value)
    finally:
        sched.shutdown()


def test_json_is_valid_for_every_task(site):
    status, body = fetch_json(site + "/api/tasks")
    for task in body["tasks"]:
        status, one = fetch_json(f"{site}/api/tasks/{task['id']}")
        assert status == 200 and one["task"]["id"] == task["id"]
        json.dumps(one)


def test_the_timeline_draws_at_most_a_mark_per_pixel_and_escapes_titles():
    from pysched_lightning.dashboard.model import TaskRow
    from pysched_lightning.dashboard.timeline import WIDTH, Row, draw
    now = 1_800_000_000.0
    task = TaskRow(id="t&1", name="<b>busy</b>", trigger="recur", written="every 0.2 s",
                   words="Every 0.2 seconds", tz=None, next_run=None, status=0, last_run=None,
                   last_duration=None, last_exit_code=None, last_error=None, runs=0, missed=0,
                   paused=False)
    runs = [{"task_id": "t&1", "name": "<b>busy</b>", "run": k, "attempt": 1, "slot": None,
             "status": 1 if k == 7000 else 0, "scheduled": now - 3600 + k * 0.2,
             "started": now - 3600 + k * 0.2, "finished": now - 3600 + k * 0.2 + 0.1,
             "duration": 0.1, "exit_code": None, "error": "E<rr>", "reason": None, "count": 1}
            for k in range(18000)]
    svg = draw([Row(task, runs)], now - 3600, now, now, lambda run: "/r?a=1&b=2",
               lambda tid: f"/tasks/{tid}")
    marks = re.findall(r'class="mark[^"]*"', svg)
    # 18,000 runs: a green span, the failure's column in red, a green span
    assert marks == ['class="mark group ok"', 'class="mark group error"', 'class="mark group ok"']
    assert "<b>" not in svg and "&lt;b&gt;busy&lt;/b&gt;" in svg
    assert "18000 runs" not in svg and " runs from " in svg  # each mark counts its runs
    assert sum(int(n) for n in re.findall(r"<title>(\d+) runs from", svg)) == 18000
    assert len(svg) < WIDTH * 10


def test_the_status_shown_is_that_of_what_happened_last():
    from pysched_lightning.dashboard.model import display_status
    missed = {"status": 6, "scheduled": 100.0, "started": None}
    late_run = {"status": 0, "scheduled": 50.0, "started": 150.0}
    assert display_status([missed, late_run], 2) == 0      # the catch-up ran after the skip
    assert display_status([dict(missed, scheduled=200.0), late_run], 2) == 6
    assert display_status([missed, dict(late_run, status=3)], 2) == 3   # still going
    assert display_status([], 2) == 2                      # never ran: the task's own


def test_a_dense_row_reads_its_newest_runs_and_every_older_failure(tmp_path):
    from pysched_lightning.dashboard.data import StoreSource
    from pysched_lightning.dashboard.pages import ROW_RUN_LIMIT, timeline_rows
    from pysched_lightning.durability.stores import SQLiteStore
    from store_records import record
    now = time.time()
    store = SQLiteStore(tmp_path / "dense.db")
    total = ROW_RUN_LIMIT + 200
    with store.batch():
        store.save_task(record("dense", paused=False))
        for k in range(total):
            at = now - 3000 + k
            store.finish_run({"task_id": "dense", "name": "dense", "run": k + 1, "attempt": 1,
                              "slot": f"{at:.3f}", "status": 1 if k == 5 else 0,
                              "scheduled": at, "started": at, "finished": at + 0.5,
                              "duration": 0.5, "error": "E: old failure" if k == 5 else None})
    try:
        source = StoreSource(store)
        [row] = timeline_rows(source, source.tasks(), now - 3600)
    finally:
        store.close()
    assert len(row.runs) == ROW_RUN_LIMIT + 1
    assert [r["run"] for r in row.runs if r["status"] == 1] == [6]      # the old failure is there
    assert row.not_drawn == total - ROW_RUN_LIMIT - 1
    assert row.complete_since == now - 3000 + 200


def test_links_follow_the_mount_point(replay):
    import io
    from wsgiref.util import setup_testing_defaults
    application = app(replay["path"])
    try:
        environ = {"SCRIPT_NAME": "/scheduler", "PATH_INFO": "/tasks", "QUERY_STRING": "",
                   "wsgi.input": io.BytesIO()}
        setup_testing_defaults(environ)
        status = []
        html = b"".join(application(environ, lambda s, h: status.append(s))).decode()
    finally:
        application.close()
    assert status == ["200 OK"]
    links = re.findall(r'(?:href|action|src)="([^"]+)"', html)
    local = [link for link in links if not link.startswith(("data:", "http"))]
    assert local and all(link.startswith("/scheduler/") for link in local)
    assert '/scheduler/tasks/jobs/nightly-backup.sh"' in html


def test_a_run_a_crash_interrupted_shows_as_interrupted(tmp_path):
    """A run left RUNNING by a scheduler that died, as the next start records
    it: the dashboard shows it Interrupted (its badge, its colour), among
    the failing tasks, in the pages and the JSON alike."""
    from store_records import record
    from pysched_lightning.durability.stores import SQLiteStore
    path = str(tmp_path / "jobs.db")
    with SQLiteStore(path) as store:
        store.save_task(record("crashed", paused=False, status=psl.TaskStatus.RUNNING,
                               next_run=time.time() + 60))
        store.claim_run("crashed", "1.000", 1, run=1, name="crashed", scheduled=time.time(),
                        started=time.time())
        assert store.mark_interrupted() == 1  # what a restart does first
        store.update_task("crashed", status=int(psl.TaskStatus.INTERRUPTED))
    application = app(path, allowed_hosts=["127.0.0.1"])
    try:
        with serve(application) as url:
            html = fetch(url + "/tasks?status=failing")[2]
            assert rows_of(html) == ["crashed"]
            assert '<span class="badge interrupted">Interrupted</span>' in html
            status, body = fetch_json(url + "/api/tasks/crashed")
            assert status == 200 and body["runs"][0]["status"] == "Interrupted"
            timeline = fetch(url + "/timeline")[2]
            assert 'class="swatch interrupted"' in timeline
    finally:
        application.close()


# ----------------------------------------------------------------- task chart, zoom, phones


def test_the_task_page_charts_duration_and_outcome_of_its_runs(site):
    from pysched_lightning.dashboard.chart import CHART_RUNS
    status, _, html = fetch(site + "/tasks/send-invoices")
    assert status == 200
    svg = re.search(r'<svg class="chart-runs".*?</svg>', html, re.S).group(0)
    runs = fetch_json(site + f"/api/tasks/send-invoices/runs?limit={CHART_RUNS}")[1]["runs"]
    errors = [run for run in runs if run["status"] == "Error"]
    assert errors and svg.count('class="mark error"><circle class="dot"') == len(errors)
    assert svg.count("<circle") == sum(1 for run in runs if run["duration"] is not None)
    assert "<polyline class=\"trend\"" in svg                      # durations joined over time
    assert "invoice service down" in svg                           # a dot's title says why
    assert re.search(r'<a href="/tasks/send-invoices/run\?at=[^"]+" class="mark error">', svg)


def test_a_task_without_runs_has_an_empty_chart(site):
    from pysched_lightning.dashboard.chart import draw_chart
    svg = draw_chart([], lambda run: "/")
    assert "no runs yet" in svg and "<circle" not in svg


def test_timeline_zooms_to_a_minute_where_a_task_every_2_s_is_a_mark_per_run(tmp_path):
    from pysched_lightning.durability.stores import SQLiteStore
    from store_records import record
    now = 1_800_000_030.0
    path = tmp_path / "fast.db"
    store = SQLiteStore(path)
    with store.batch():
        store.save_task(record("fast", name="every 2 s", paused=False, status=0,
                               next_run=now + 2))
        for k in range(300):
            at = now - 600 + 2 * k
            store.finish_run({"task_id": "fast", "name": "every 2 s", "run": k + 1,
                              "attempt": 1, "slot": f"{at:.3f}", "status": 0, "scheduled": at,
                              "started": at, "finished": at + 0.3, "duration": 0.3})
    store.close()
    application = app(str(path), clock=lambda: now)
    try:
        with serve(application) as url:
            status, _, html = fetch(url + "/timeline?window=1m")
            assert status == 200
            svg = re.search(r'<svg class="timeline".*?</svg>', html, re.S).group(0)
            assert svg.count('class="mark ok"') == 30                # one mark per run, apart
            assert 'class="mark group' not in svg
            ticks = re.findall(r'data-format="seconds">(\d\d:\d\d:\d\d)</text>', svg)
            assert len(ticks) >= 4                                    # ticks every 5-15 s
            for label in ("last 1 min", "last 2 min", "last 5 min"):
                assert label in html
            wide = fetch(url + "/timeline?window=10m")[2]
            assert wide.count('class="mark ok"') < 300 // 2           # merged when wide
    finally:
        application.close()


def test_every_page_has_a_viewport_and_its_tables_scroll_inside_a_wrapper(site):
    from pysched_lightning.dashboard.timeline import WINDOWS
    assert "1m" in WINDOWS
    for path in ("/tasks", "/runs", "/timeline", "/workers", "/tasks/send-invoices",
                 "/tasks/nothing-here"):
        status, _, html = fetch(site + path)
        assert status in (200, 404), path
        assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html
        tables = html.count("<table")
        assert html.count('<div class="table-wrap">\n<table') == tables, path
    css = fetch(site + "/static/dashboard.css")[2]
    header = re.search(r"header\.top \{[^}]*\}", css).group(0)
    assert "flex-wrap: wrap" in header                    # the header wraps on a phone...
    assert not re.search(r"[^-]height:", header)          # ...and grows to hold two lines
    assert re.search(r"@media \(max-width: 700px\) \{[^@]*\.table-wrap > table", css)
