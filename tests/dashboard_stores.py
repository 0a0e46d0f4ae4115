"""Stores and servers for the dashboard's tests, filled by real schedulers.

``replay_store`` runs a real Scheduler with a SQLite store on a virtual
clock whose wall time ends at the real now: two hours of history (python
tasks that complete or raise, a shell command that fails with exit code 3,
a cron task, retries, a stall that makes missed runs, a paused task) are
written in about a second, and read by a dashboard as if they had just
happened. ``serve`` runs a dashboard app on 127.0.0.1 on a free port.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import wsgiref.util
from typing import Any, Dict, Iterator, Optional, Tuple

import pysched_lightning as psl
from conftest import InlineExecutor, wait_for

#: The replayed span, seconds: 2 h 10 min, so that the slow "rebuild search
#: index" task (every 30 min, first added 582 s in) is not running at the end.
SPAN = 582 + 4 * 1800 - 1
ALL = object()
#: A traceback-sized output: longer than the page shows (views.TEXT_LIMIT).
BIG_OUTPUT = 30_000


class ReplayClock:
    """A virtual clock that runs from *start* to *end* (POSIX seconds) as fast
    as the scheduler asks, then waits in real time. Tasks spend virtual time
    with ``advance``, up to *limit* (a run going at the end may finish after
    it, but never after the real now)."""

    def __init__(self, start: float, end: float, limit: float) -> None:
        self._lock = threading.Lock()
        self.t = start
        self.end = end
        self.limit = limit
        self.finished = threading.Event()

    def now(self) -> float:
        with self._lock:
            return self.t

    def sleep(self, seconds: float) -> None:
        with self._lock:
            if self.t + seconds >= self.end:
                self.t = max(self.t, self.end)
                self.finished.set()
            else:
                self.t += seconds
        if self.finished.is_set():
            time.sleep(0.01)  # at the end: the dispatcher idles until shutdown

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.t = min(self.t + seconds, max(self.t, self.limit))


class Work:
    """A python task that takes *seconds* of virtual time; the calls numbered
    in *fail_on* raise (all of them with ``fail_on=ALL``)."""

    def __init__(self, clock: ReplayClock, seconds: float, fail_on: Any = (),
                 message: str = "the upstream API answered 503") -> None:
        self.clock, self.seconds, self.fail_on, self.message = clock, seconds, fail_on, message
        self.calls = 0

    def __getstate__(self) -> Dict[str, Any]:
        # The store pickles the task; the clock (with its lock) stays out:
        # the replayed history is only read afterwards, never run again.
        return {**self.__dict__, "clock": None}

    def __call__(self) -> Dict[str, int]:
        self.calls += 1
        self.clock.advance(self.seconds * (0.6 + 0.8 * ((self.calls * 7919) % 100) / 100))
        if self.fail_on is ALL or self.calls in self.fail_on:
            fetch_orders(self.message)
        return {"rows": self.calls * 17}


def fetch_orders(message: str) -> None:
    raise ConnectionError(message)


def failing_command(folder: str) -> Any:
    """A shell script that writes to stdout and stderr and exits with 3."""
    path = os.path.join(folder, "nightly-backup.sh")
    with open(path, "w") as script:
        script.write("#!/bin/sh\necho 'copying /srv/data to /backup'\n"
                     "echo 'tar: /backup: No space left on device' >&2\nexit 3\n")
    os.chmod(path, 0o755)
    return psl.command([path])


def big_output_command() -> Any:
    return psl.command([sys.executable, "-c",
                        f"print('line of output ' * {BIG_OUTPUT // 15 + 10})"])


def replay_store(path: str) -> Dict[str, Any]:
    """Fill the SQLite store *path* with SPAN seconds of history ending now;
    return what the tests compare with (task ids, cron preview)."""
    now = time.time()
    end = now - 90  # a run going at the end may finish after it, until just before now
    clock = ReplayClock(end - SPAN, end, now - 2)
    sched = psl.Scheduler(executor=InlineExecutor(), timefunc=clock.now, delayfunc=clock.sleep,
                          wallfunc=clock.now, store=path)
    ids = {}

    def add(key: str, *args: Any, **kwargs: Any) -> None:
        clock.advance(97)  # tasks added a little apart, as in life: their grids differ
        ids[key] = sched.delay(*args, **kwargs)

    try:
        add("sync", "recur", 300, 1, Work(clock, 14, fail_on={3, 7, 11, 16}),
            task_id="sync-inventory", name="sync inventory")
        add("crunch", "recur", 120, 2, Work(clock, 6),
            task_id="crunch-numbers", name="crunch numbers")
        add("backup", "recur", 900, 1, failing_command(os.path.dirname(os.path.abspath(path))),
            task_id="jobs/nightly-backup.sh", name="nightly backup")
        add("report", "cron", "*/15 * * * *", 3, Work(clock, 40),
            task_id="reports/daily-sales", name="daily sales report", tz="Europe/Berlin")
        add("flaky", "recur", 1200, 2, Work(clock, 5, fail_on=ALL, message="invoice service down"),
            task_id="send-invoices", name="send invoices", retries=2, retry_delay=60)
        add("stall", "recur", 1800, 1, Work(clock, 380),
            task_id="rebuild-search-index", name="rebuild search index")
        add("cleanup", "recur", 600, 5, Work(clock, 2), task_id="cleanup-tmp", name="clean up /tmp")
        add("big", "once", 60, 5, big_output_command(), task_id="export-csv", name="export CSV")
        sched.start()
        if not clock.finished.wait(60):
            raise AssertionError("the replayed history did not reach the present")
        wait_for(lambda: all(info["status"] is not psl.TaskStatus.RUNNING
                             for info in sched.get_all()))
        sched.pause(ids["cleanup"])
        cron_preview = [t.timestamp() for t in sched.next_run_times(ids["report"], 10)]
    finally:
        sched.shutdown(wait=True)
    return {"ids": ids, "cron_preview": cron_preview, "end": clock.now()}


@contextlib.contextmanager
def serve(application: Any) -> Iterator[str]:
    """Serve *application* on 127.0.0.1 (a free port); yield its base URL."""
    from pysched_lightning.dashboard import serve as make_server
    server = make_server(application, "127.0.0.1", 0)
    try:
        server.start()
        yield server.url.rstrip("/")
    finally:
        server.close()


def fetch(url: str, data: Optional[Dict[str, str]] = None,
          headers: Optional[Dict[str, str]] = None) -> Tuple[int, Dict[str, str], str]:
    """(status, headers, body) of a GET (or a form POST with *data*);
    redirects are not followed."""
    body = None if data is None else urllib.parse.urlencode(data).encode()
    request = urllib.request.Request(url, data=body, headers=headers or {})
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(request, timeout=10) as answer:
            return answer.status, dict(answer.headers), answer.read().decode("utf-8")
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode("utf-8")


def fetch_json(url: str, **kwargs: Any) -> Tuple[int, Any]:
    status, _, body = fetch(url, **kwargs)
    return status, json.loads(body)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def wsgi_get(application: Any, path: str, query: str = "") -> Tuple[int, Any]:
    """(status, body) of a GET through the WSGI app itself, without a
    server; the body of an ``/api/`` route decoded from JSON."""
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": query,
               "HTTP_HOST": "127.0.0.1:8765", "wsgi.input": io.BytesIO()}
    wsgiref.util.setup_testing_defaults(environ)
    answer = {}

    def start_response(status: str, headers: Any) -> None:
        answer["status"] = int(status.split()[0])

    body = b"".join(application(environ, start_response)).decode()
    return answer["status"], json.loads(body) if path.startswith("/api/") else body
