"""The dashboard in a real Chromium (Debian's, driven by Playwright): what a
user sees and clicks. Without a browser they skip locally, and fail in CI.

They also take the documentation's screenshots, into a temporary folder
(tests write nothing to the checkout); ``python tools/screenshots.py docs``
runs them to refresh the ones in docs/."""
from __future__ import annotations

import datetime as dt
import os
import re
import time
from zoneinfo import ZoneInfo

import pytest

pytest.importorskip("jinja2", reason="the dashboard extra is not installed")

import pysched_lightning as psl  # noqa: E402
from dashboard_stores import replay_store, serve  # noqa: E402
from pysched_lightning.dashboard import app  # noqa: E402
from services import missing, require_chromium  # noqa: E402

#: Where tools/screenshots.py has the screenshots kept (None: in tmp_path).
SHOTS = os.environ.get("PYSCHED_SCREENSHOTS_DIR")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TOKEN = "browser-test-token-0123456789abcdef"
ZONE = "Australia/Adelaide"  # +09:30 or +10:30: no viewer's clock can match UTC by chance


@pytest.fixture(scope="module")
def chromium():
    path = require_chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("playwright is not installed (pip install playwright)")
    with sync_playwright() as driver:
        yield driver, path


def _context(chromium, tmp_path, viewport=None, **options):
    driver, path = chromium
    profile = tmp_path / f"profile-{len(os.listdir(tmp_path))}"
    profile.mkdir()
    return driver.chromium.launch_persistent_context(
        str(profile), executable_path=path, args=ARGS, headless=True,
        viewport=viewport or {"width": 1360, "height": 760}, timezone_id=ZONE, locale="en-GB",
        **options)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("browser") / "jobs.db")
    replay_store(path)
    application = app(path, refresh=2)
    with serve(application) as url:
        yield url
    application.close()


@pytest.fixture
def page(chromium, tmp_path):
    context = _context(chromium, tmp_path)
    try:
        yield context.new_page()
    finally:
        context.close()


def _shot(page, tmp_path, name):
    """The page as the PNG file *name*: in tmp_path, or where tools/screenshots.py says."""
    path = os.path.join(SHOTS or tmp_path, name)
    page.screenshot(path=path, full_page=True)
    with open(path, "rb") as image:
        assert image.read(8) == b"\x89PNG\r\n\x1a\n"  # the page rendered to an image


def test_a_failed_task_is_red_and_its_run_shows_the_traceback(site, page, tmp_path):
    page.goto(site + "/")
    row = page.locator('tr[data-task="send-invoices"]')
    badge = row.locator(".badge.error")
    assert badge.inner_text() == "Error"
    assert badge.evaluate("e => getComputedStyle(e).color") == "rgb(185, 28, 28)"
    assert row.locator("td").first.evaluate(
        "e => getComputedStyle(e).backgroundColor") == "rgb(255, 245, 245)"
    assert page.locator('tr[data-task="reports/daily-sales"] .badge.ok').inner_text() == "Completed"
    # times are in the viewer's zone, named once at the top
    assert page.locator("#zone").inner_text() == ZONE
    cell = row.locator("td.when time").first
    utc = dt.datetime.fromisoformat(cell.get_attribute("datetime"))
    assert cell.inner_text() == utc.astimezone(ZoneInfo(ZONE)).strftime("%Y-%m-%d %H:%M:%S")
    _shot(page, tmp_path, "dashboard-tasks.png")

    row.locator("td.task a").click()
    page.wait_for_url(re.compile(r".*/tasks/send-invoices$"))
    page.locator("tr.run-row.error a").first.click()
    page.wait_for_url(re.compile(r".*/tasks/send-invoices/run\?.*"))
    traceback = page.locator("section.traceback pre").inner_text()
    assert "Traceback (most recent call last)" in traceback
    assert "fetch_orders" in traceback and "ConnectionError: invoice service down" in traceback
    _shot(page, tmp_path, "dashboard-failed-run.png")


def test_the_timeline_shows_bars_and_its_windows(site, page, tmp_path):
    page.goto(site + "/timeline")
    bars = page.locator("svg.timeline rect.bar")
    assert bars.count() > 20
    assert page.locator("svg.timeline .mark.error rect.bar").count() > 0
    assert page.locator("svg.timeline g.row").count() == 8
    title = page.locator("svg.timeline .mark.error title").first.text_content()
    assert "Error" in title
    ticks = page.locator("svg.timeline text.tick[data-time]")
    first = dt.datetime.fromisoformat(ticks.first.get_attribute("data-time"))
    assert ticks.first.text_content() == first.astimezone(ZoneInfo(ZONE)).strftime("%H:%M")
    _shot(page, tmp_path, "dashboard-timeline.png")
    page.get_by_role("link", name="last day").click()
    page.wait_for_url(re.compile(r".*window=24h.*"))
    assert page.locator("svg.timeline rect.bar").count() >= bars.count() > 0


def test_filters_narrow_the_tasks(site, page):
    page.goto(site + "/tasks")
    assert page.locator("tr.task-row").count() == 8
    page.get_by_placeholder("Filter by id, name, call or schedule").fill("backup")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r".*q=backup.*"))
    assert page.locator("tr.task-row").all_inner_texts()[0].startswith("nightly backup")
    assert page.locator("tr.task-row").count() == 1
    page.get_by_placeholder("Filter by id, name, call or schedule").fill("")
    page.get_by_label("Status").select_option("failing")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r".*status=failing.*"))
    ids = page.locator("tr.task-row").evaluate_all("rows => rows.map(r => r.dataset.task)")
    assert sorted(ids) == ["jobs/nightly-backup.sh", "send-invoices"]


def test_with_javascript_off_the_pages_work_and_show_utc(site, chromium, tmp_path):
    context = _context(chromium, tmp_path, java_script_enabled=False)
    try:
        page = context.new_page()
        page.goto(site + "/tasks?status=failing")
        assert page.locator("#zone").inner_text() == "UTC"
        assert page.locator("tr.task-row time").first.inner_text().endswith(" UTC")
        assert not page.locator("label.autorefresh").is_visible()
        page.locator('tr[data-task="jobs/nightly-backup.sh"] td.task a').click()
        page.wait_for_url(re.compile(r".*/tasks/jobs/nightly-backup.sh$"))
        assert page.locator("tr.run-row").count() > 0
    finally:
        context.close()


@pytest.mark.parametrize("path", ["/tasks", "/runs?status=failing&window=24h", "/timeline",
                                  "/tasks/send-invoices", "/workers"])
def test_on_a_phone_390_px_wide_the_pages_fit_and_tables_scroll_inside(site, chromium,
                                                                      tmp_path, path):
    context = _context(chromium, tmp_path, viewport={"width": 390, "height": 844},
                       is_mobile=True, has_touch=True)
    try:
        page = context.new_page()
        page.goto(site + path)
        # the page itself never scrolls sideways: wide content scrolls in its box
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        for link in page.locator("header.top nav a").all() + [page.locator("header.top .brand")]:
            box = link.bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390, path
        brand = page.locator("header.top .brand").bounding_box()
        who = page.locator("header.top .who").bounding_box()
        assert brand["x"] + brand["width"] <= who["x"] or brand["y"] + brand["height"] <= who["y"]
        for card in page.locator(".summary .stat").all():
            box = card.bounding_box()
            assert box["x"] + box["width"] <= 390
        wraps = page.locator(".table-wrap")
        for index in range(wraps.count()):
            wrap = wraps.nth(index)
            assert wrap.evaluate("e => getComputedStyle(e).overflowX") == "auto"
            assert wrap.evaluate("e => e.scrollWidth > e.clientWidth")   # scrolls inside
    finally:
        context.close()


def _report():
    return time.time()


def test_signed_in_run_now_adds_a_run_that_appears_by_itself(chromium, tmp_path):
    sched = psl.Scheduler(store=str(tmp_path / "live.db"))
    sched.delay("recur", 3600, 1, _report, task_id="report/hourly", name="hourly report")
    sched.start()
    application = app(sched, actions=True, token=TOKEN, refresh=0.5)
    context = _context(chromium, tmp_path)
    try:
        with serve(application) as url:
            page = context.new_page()
            page.goto(url + "/tasks/report/hourly")
            assert page.locator("tr.run-row").count() == 0
            assert page.get_by_role("button", name="Run now").count() == 0  # not signed in
            page.get_by_role("link", name="Sign in").first.click()
            page.get_by_label("Token").fill(TOKEN)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(re.compile(r".*/tasks/report/hourly$"))
            page.get_by_role("button", name="Run now").click()
            page.wait_for_url(re.compile(r".*done=run-now$"))
            # the page refreshes itself until the run is there
            page.locator("tr.run-row.ok").wait_for(timeout=15_000)
            assert page.locator("tr.run-row").count() == 1
            assert sched.get_task("report/hourly")["runs"] == 1
    finally:
        context.close()
        sched.shutdown()
