"""The dashboard as a standard WSGI application: requests, routes, answers.

Every route answers HTML, and JSON under ``/api/``. Task ids may hold
slashes (``30s/hello.sh``), so a task's path is the rest of the URL; what
follows it (``/run``, an action) is read only where the method and the
query say it must be there. Nothing is read from disk but the packaged
templates and static files, by fixed names.
"""
from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple

from . import allruns, pages
from .chart import CHART_RUNS, draw_chart
from .data import ACTIONS, Source, make_source
from .http import REASONS, HTTPError, Request, Response
from .model import RUN_KEYS, iso, run_json
from .pages import BadRequest
from .security import SECURITY_HEADERS, HostGuard, safe_next
from .signin import Guard, Throttled
from .timeline import WINDOW_LABELS, WINDOWS, draw
from .views import environment, render, tail
from .workers import workers_view

__all__ = ["Dashboard"]

_log = logging.getLogger("pysched_lightning.dashboard")

_STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
_STATIC = {"dashboard.css": "text/css; charset=utf-8",
           "dashboard.js": "text/javascript; charset=utf-8"}
_TEXT_FIELDS = ("traceback", "output", "stderr", "result")


class Dashboard:
    """A WSGI application showing *target*: a live ``Scheduler``, a store, or
    a store URL or path (read-only; closed by :meth:`close`).

    ``actions=True`` with a ``token`` offers pause, resume, run now and
    cancel to viewers who sign in with the token: on a live scheduler at
    once, on a store as control requests that its active scheduler applies
    (the answer is awaited a few seconds; see ``control``).
    ``refresh`` is the seconds between the pages' own refreshes (0: never).
    ``allowed_hosts`` are the Host names answered (any port; ``["*"]``: any
    name); by default only this machine's own (``localhost``, 127.0.0.0/8,
    ::1), a guard against DNS rebinding.
    """

    def __init__(self, target: Any, *, actions: bool = False, token: Optional[str] = None,
                 refresh: float = 5.0, title: str = "pysched dashboard",
                 allowed_hosts: Optional[Iterable[str]] = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._guard = Guard(actions, token, clock)
        if isinstance(refresh, bool) or not isinstance(refresh, (int, float)) \
                or not 0 <= refresh < 86400:
            raise ValueError(f"refresh must be seconds from 0 (off) to a day, not {refresh!r}")
        if not isinstance(title, str):
            raise TypeError(f"title must be a str, not {title!r}")
        self._hosts = HostGuard(allowed_hosts)
        self.source: Source = make_source(target, actions)
        if actions and not self.source.acts:
            self.source.close()
            raise ValueError(f"actions=True needs a live Scheduler or a store that keeps "
                             f"control requests; {target!r} has no request_control()")
        self.refresh, self.title, self._clock = float(refresh), title, clock
        self._env = environment()
        self._static = {}
        for name in _STATIC:
            with open(os.path.join(_STATIC_DIR, name), "rb") as stream:
                self._static[name] = stream.read()

    def close(self) -> None:
        """Close the store if the dashboard opened it."""
        self.source.close()

    def __call__(self, environ: Dict[str, Any],
                 start_response: Callable[..., Any]) -> List[bytes]:
        request = Request(environ)
        try:
            response = self._route(request)
        except HTTPError as exc:
            response = self._error(request, exc.status, str(exc))
        except BadRequest as exc:
            response = self._error(request, 400, str(exc))
        except Throttled as exc:
            response = self._error(request, 429, str(exc))
            response.headers.append(("Retry-After", str(max(1, round(exc.retry_after)))))
        except Exception:
            _log.exception("dashboard: %s %s failed", request.method, request.path)
            response = self._error(request, 500, "the dashboard failed to answer; the "
                                                 "server's log has the traceback")
        headers = [("Content-Type", response.content_type),
                   ("Content-Length", str(len(response.body))), *SECURITY_HEADERS,
                   *response.headers]
        start_response(f"{response.status} {REASONS.get(response.status, '')}", headers)
        return [response.body] if request.method != "HEAD" else [b""]

    # -- routes -----------------------------------------------------------------

    def _route(self, req: Request) -> Response:
        refusal = self._hosts.refusal(req.environ)
        if refusal is not None:
            raise HTTPError(400, refusal)
        path, get = req.path, req.method in ("GET", "HEAD")
        if path.startswith("/api/"):
            return self._api(req, path[len("/api"):])
        if path in ("/", "/tasks") and get:
            return self._tasks_page(req)
        if path == "/timeline" and get:
            return self._timeline_page(req)
        if path == "/runs" and get:
            return self._runs_page(req)
        if path == "/workers" and get:
            return self._html("workers.html", self._context(
                req, self._clock(), view=workers_view(self.source)))
        if path == "/login":
            return self._login(req)
        if path == "/logout" and req.method == "POST":
            return self._logout(req)
        if path.startswith("/static/") and get and path[8:] in _STATIC:
            return Response(200, self._static[path[8:]], _STATIC[path[8:]])
        if path.startswith("/tasks/") and len(path) > 7:
            rest = path[len("/tasks/"):]
            if req.method == "POST":
                task_id, action = _split(rest, ACTIONS)
                if action is None:
                    raise HTTPError(405, f"POST {path!r}: nothing to do here")
                return self._act(req, task_id, action, api=False)
            if get and "at" in req.query:
                task_id, part = _split(rest, ("run", "text"))
                if part == "run":
                    return self._run_page(req, task_id)
                if part == "text":
                    return self._text(req, task_id)
            if get:
                return self._task_page(req, rest)
        raise HTTPError(404 if req.method in ("GET", "HEAD", "POST") else 405,
                        f"nothing at {req.method} {path}")

    def _api(self, req: Request, path: str) -> Response:
        now = self._clock()
        get = req.method in ("GET", "HEAD")
        if path == "/tasks" and get:
            rows = self._filtered(req, self.source.tasks())
            return _json({"now": iso(now), "tasks": [row.as_json() for row in rows]})
        if path == "/summary" and get:
            return _json(pages.summary(self.source, self.source.tasks(), now).as_json())
        if path == "/runs" and get:
            query = allruns.parse_query(req.query)
            return _json({"now": iso(now), **allruns.runs_page(self.source, query,
                                                               now).as_json(query)})
        if path == "/workers" and get:
            return _json({"now": iso(now), **workers_view(self.source).as_json()})
        if path == "/timeline" and get:
            since = pages.parse_time("since", req.query.get("since"))
            until = pages.parse_time("until", req.query.get("until"))
            limit = pages.parse_int("limit", req.query.get("limit"), 1000, 1,
                                    pages.API_TIMELINE_LIMIT)
            since = now - 3600 if since is None else since
            runs = self.source.runs.select(None, limit + 1, since=since, before=until)
            return _json({"since": iso(since), "until": iso(until), "truncated": len(runs) > limit,
                          "runs": [run_json(run) for run in runs[:limit]]})
        if path.startswith("/requests/") and get:
            number = pages.parse_int("request id", path[len("/requests/"):], 0, 1, 2 ** 62)
            request = self.source.control_request(number) if number else None
            if request is None:
                raise HTTPError(404, f"no control request #{number}")
            return _json({key: iso(value) if key in ("requested", "answered")
                          and isinstance(value, (int, float)) else value
                          for key, value in request.items()})
        if path.startswith("/tasks/") and len(path) > 7:
            rest = path[len("/tasks/"):]
            if req.method == "POST":
                task_id, action = _split(rest, ACTIONS)
                if action is not None:
                    return self._act(req, task_id, action, api=True)
            elif get:
                if self.source.task(rest) is None and rest.endswith("/runs"):
                    return self._api_runs(req, rest[:-len("/runs")])
                row = self.source.task(rest)
                if row is None:
                    raise HTTPError(404, f"no task {rest!r}")
                runs, cursor = self.source.runs.page(rest, pages.RUNS_PER_PAGE)
                return _json({"task": row.as_json(),
                              "next_run_times": [iso(t) for t in self.source.next_run_times(
                                  rest, pages.NEXT_TIMES)],
                              "runs": [run_json(run) for run in runs], "next_before": cursor})
        raise HTTPError(404, f"nothing at {req.method} /api{path}")

    def _api_runs(self, req: Request, task_id: str) -> Response:
        limit = pages.parse_int("limit", req.query.get("limit"), pages.RUNS_PER_PAGE, 1,
                                pages.MAX_RUNS_PER_PAGE)
        before = pages.parse_time("before", req.query.get("before"))
        runs, cursor = self.source.runs.page(task_id, limit, before)
        if not runs and before is None and self.source.task(task_id) is None:
            raise HTTPError(404, f"no task {task_id!r}")
        return _json({"task_id": task_id, "runs": [run_json(run) for run in runs],
                      "next_before": cursor})

    # -- pages --------------------------------------------------------------------

    def _context(self, req: Request, now: float, every: Optional[List[Any]] = None,
                 **extra: Any) -> Dict[str, Any]:
        """What every page shows (the summary strip needs every task)."""
        every = self.source.tasks() if every is None else every
        def run_url(run: Dict[str, Any], part: str = "run", **params: Any) -> str:
            return _run_url(req, run, part, **params)

        return dict(req=req, now=now, title=self.title, refresh=self.refresh, run_url=run_url,
                    summary=pages.summary(self.source, every, now), active="",
                    source=self.source.describe(), live=self.source.live, acts=self.source.acts,
                    actions=self._guard.enabled, signed_in=self._guard.signed_in(req.environ),
                    csrf=self._guard.csrf(req.environ), **extra)

    def _filtered(self, req: Request, rows: List[Any]) -> List[Any]:
        rows = pages.filter_tasks(rows, req.query.get("q", ""), req.query.get("status", ""))
        return pages.sort_tasks(rows, req.query.get("sort", "name"),
                                req.query.get("order", "asc"))

    def _tasks_page(self, req: Request) -> Response:
        now = self._clock()
        every = self.source.tasks()
        rows = self._filtered(req, every)
        page = pages.parse_int("page", req.query.get("page"), 1, 1, 1_000_000)
        shown, count = pages.paged(rows, page, pages.TASKS_PER_PAGE)
        return self._html("tasks.html", self._context(
            req, now, every, rows=shown, matched=len(rows), page=min(page, count), pages=count,
            query=req.query, filters=pages.STATUS_FILTERS, sorts=pages.SORTS))

    def _task_page(self, req: Request, task_id: str) -> Response:
        now = self._clock()
        row = self.source.task(task_id)
        limit = pages.parse_int("limit", req.query.get("limit"), pages.RUNS_PER_PAGE, 1,
                                pages.MAX_RUNS_PER_PAGE)
        before = pages.parse_time("before", req.query.get("before"))
        runs, cursor = self.source.runs.page(task_id, limit, before)
        if row is None and not runs and before is None:
            raise HTTPError(404, f"no task {task_id!r}")
        chart = draw_chart(self.source.runs.select(task_id, CHART_RUNS),
                           lambda run: _run_url(req, run))
        return self._html("task.html", self._context(
            req, now, task=row, task_id=task_id, runs=runs, cursor=cursor, before=before,
            chart=chart, chart_runs=CHART_RUNS,
            limit=limit, next_times=self.source.next_run_times(task_id, pages.NEXT_TIMES),
            done=req.query.get("done"), requested=pages.parse_int(
                "requested", req.query.get("requested"), 0, 0, 2 ** 62) or None))

    def _find_run(self, req: Request, task_id: str) -> Dict[str, Any]:
        at = pages.parse_time("at", req.query.get("at"))
        attempt = pages.parse_int("attempt", req.query.get("attempt"), 1, 1, 1_000_000)
        run = self.source.runs.find(task_id, at, attempt, req.query.get("slot") or None) \
            if at is not None else None
        if run is None:
            raise HTTPError(404, f"no run of task {task_id!r} scheduled at {req.query.get('at')!r} "
                                 f"attempt {attempt}")
        return run

    def _run_page(self, req: Request, task_id: str) -> Response:
        now = self._clock()
        run = self._find_run(req, task_id)
        texts = {field: tail(run.get(field)) for field in _TEXT_FIELDS}
        return self._html("run.html", self._context(
            req, now, task_id=task_id, task=self.source.task(task_id), run=run, texts=texts,
            run_keys=RUN_KEYS))

    def _text(self, req: Request, task_id: str) -> Response:
        field = req.query.get("field", "")
        if field not in _TEXT_FIELDS:
            raise BadRequest(f"field={field!r}: use one of {', '.join(map(repr, _TEXT_FIELDS))}")
        text = self._find_run(req, task_id).get(field) or ""
        return Response(200, str(text).encode("utf-8", "replace"), "text/plain; charset=utf-8")

    def _timeline_page(self, req: Request) -> Response:
        now = self._clock()
        window = req.query.get("window", "1h")
        span = pages.window_of(window)
        every = self.source.tasks()
        matched = self._filtered(req, every)
        page = pages.parse_int("page", req.query.get("page"), 1, 1, 1_000_000)
        shown, count = pages.paged(matched, page, pages.ROWS_PER_PAGE)
        rows = pages.timeline_rows(self.source, shown, now - span)

        svg = draw(rows, now - span, now, now, lambda run: _run_url(req, run),
                   lambda tid: req.url(f"/tasks/{tid}"))
        return self._html("timeline.html", self._context(
            req, now, every, svg=svg, window=window, windows=WINDOWS, query=req.query,
            window_labels=WINDOW_LABELS,
            filters=pages.STATUS_FILTERS, matched=len(matched), page=min(page, count),
            pages=count, drawn=sum(len(row.runs) for row in rows)))

    def _runs_page(self, req: Request) -> Response:
        now = self._clock()
        query = allruns.parse_query(req.query)
        return self._html("runs.html", self._context(
            req, now, found=allruns.runs_page(self.source, query, now), query=query,
            filters=allruns.RUN_STATUSES, windows=allruns.RUN_WINDOWS))

    def _login(self, req: Request) -> Response:
        if not self._guard.enabled:
            raise HTTPError(404, "actions are off: this dashboard is read-only, with no sign-in")
        target = safe_next((req.form.get("next") if req.method == "POST" else None)
                           or req.query.get("next"))
        if req.method == "POST":
            if self._guard.check_token(req.form.get("token"), req.environ):
                cookie = self._guard.session_cookie(self._guard.open_session(),
                                                    req.prefix + "/", _secure(req))
                return _redirect(req.prefix + target, [("Set-Cookie", cookie)])
            _log.warning("dashboard: a sign-in with a wrong token from %s",
                         req.environ.get("REMOTE_ADDR"))
            return self._html("login.html", self._context(req, self._clock(), target=target,
                                                          wrong=True), 403)
        return self._html("login.html", self._context(req, self._clock(), target=target,
                                                      wrong=False))

    def _logout(self, req: Request) -> Response:
        """Sign-out is a POST with the session's CSRF token (no other site
        can sign a viewer out); the session ends here, not just its cookie."""
        refusal = self._guard.refuse_post(req.environ, req.form) if self._guard.enabled \
            else "actions are off: there is no sign-in"
        if refusal is not None:
            raise HTTPError(403, refusal)
        self._guard.close_session(req.environ)
        cookie = self._guard.clear_cookie(req.prefix + "/", _secure(req))
        return _redirect(req.url("/"), [("Set-Cookie", cookie)])

    def _act(self, req: Request, task_id: str, action: str, api: bool) -> Response:
        refusal = self._guard.refuse_action(req.environ, req.form)
        if refusal is not None:
            raise HTTPError(403, refusal)
        try:
            outcome = self.source.act(action, task_id)
        except KeyError:
            raise HTTPError(404, f"no scheduled task {task_id!r} to {action}") from None
        request = None if outcome is None else outcome.request
        if outcome is not None and outcome.state == "failed":
            raise HTTPError(409, f"{action} task {task_id!r} failed: {outcome.message} "
                                 f"(request #{request})")
        if outcome is not None and outcome.state != "done":  # no answer in time
            if api:
                return _json({"ok": None, "action": action, "state": outcome.state,
                              "message": outcome.message, "request": request,
                              "url": req.url(f"/api/requests/{request}")}, 202)
            return _redirect(req.url(f"/tasks/{task_id}", requested=request))
        if api:
            row = self.source.task(task_id)
            return _json({"ok": True, "action": action, "request": request,
                          "task": row.as_json() if row else None})
        return _redirect(req.url(f"/tasks/{task_id}", done=action))

    # -- answers ------------------------------------------------------------------

    def _html(self, template: str, context: Dict[str, Any], status: int = 200) -> Response:
        return Response(status, render(self._env, template, context).encode("utf-8"))

    def _error(self, req: Request, status: int, message: str) -> Response:
        if req.path.startswith("/api/"):
            return _json({"error": message, "status": status}, status)
        try:
            context = self._context(req, self._clock(), status=status, message=message)
            return self._html("error.html", context, status)
        except Exception:  # the store itself may be what failed
            _log.exception("dashboard: the error page failed too")
            return Response(status, message.encode("utf-8"), "text/plain; charset=utf-8")


def _split(rest: str, suffixes: Iterable[str]) -> Tuple[str, Optional[str]]:
    """``('30s/hello.sh', 'run')`` from ``'30s/hello.sh/run'``; no suffix: (rest, None)."""
    for suffix in suffixes:
        if rest.endswith("/" + suffix) and len(rest) > len(suffix) + 1:
            return rest[:-len(suffix) - 1], suffix
    return rest, None


def _run_url(req: Request, run: Mapping[str, Any], part: str = "run", **extra: Any) -> str:
    """A run's page: its task, due time and attempt name it; the slot only
    when it says more than the due time (a manual run's own key)."""
    slot = run.get("slot")
    if slot == f"{run['scheduled']:.3f}":
        slot = None
    return req.url(f"/tasks/{run['task_id']}/{part}", at=repr(run["scheduled"]),
                   attempt=run["attempt"], slot=slot, **extra)


def _secure(req: Request) -> bool:
    return req.environ.get("wsgi.url_scheme") == "https"


def _json(value: Any, status: int = 200) -> Response:
    body = json.dumps(value, ensure_ascii=False, default=str, indent=1).encode("utf-8")
    return Response(status, body, "application/json; charset=utf-8")


def _redirect(location: str, headers: Optional[List[Tuple[str, str]]] = None) -> Response:
    return Response(303, b"", "text/plain; charset=utf-8",
                    [("Location", location or "/"), *(headers or [])])
