"""The web dashboard: tasks, runs, failures, a timeline and workers, in a browser.

``app(sched_or_store)`` returns a standard WSGI application to serve with
any WSGI server or mount in Flask, Django or FastAPI; ``pysched dashboard``
serves one on 127.0.0.1. It needs the extra: ``pip install
'.[dashboard]'`` in the project's folder (Jinja2, cron-descriptor). This module
imports nothing web-related until ``app()`` is called, so ``pysched``
works without the extra.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional

if TYPE_CHECKING:  # pragma: no cover
    from .wsgi import Dashboard

__all__ = ["app", "serve", "MissingExtra"]


class MissingExtra(ImportError):
    """The dashboard's packages are not installed."""


def _require() -> None:
    try:
        import jinja2  # noqa: F401
    except ImportError as exc:
        from ..records.errors import install_hint
        raise MissingExtra(f"the dashboard needs Jinja2: {install_hint('dashboard')}") from exc


def app(target: Any, *, actions: bool = False, token: Optional[str] = None,
        refresh: float = 5.0, title: str = "pysched dashboard",
        allowed_hosts: Optional[Iterable[str]] = None,
        clock: Optional[Callable[[], float]] = None) -> "Dashboard":
    """A WSGI application showing *target*: a live ``Scheduler``, a store
    object, or a store URL or path (opened read-only; ``close()`` it).

    ``actions=True`` and a ``token`` of at least 16 characters offer pause,
    resume, run now and cancel to viewers who sign in with the token (POST
    with a CSRF token; 403 otherwise). A live scheduler applies them at
    once. On a store, each is written as a control request (the only thing
    the dashboard writes; a SQLite store is opened for that alone, and never
    upgraded: it needs schema 4) that the store's running scheduler applies
    within about a second; the page waits up to 5 s for the answer, else
    says the request is pending (``GET /api/requests/<id>`` follows it).
    Without actions, a store is only read.

    Only requests naming this machine (Host ``localhost``, 127.0.0.0/8,
    ``::1``) are answered unless ``allowed_hosts`` names others (any port;
    ``["*"]``: every name, for a proxy that checks it); the others get a 400.
    This keeps web pages elsewhere from reaching it through DNS rebinding.
    """
    _require()
    from .wsgi import Dashboard
    return Dashboard(target, actions=actions, token=token, refresh=refresh, title=title,
                     allowed_hosts=allowed_hosts, clock=clock or time.time)


def serve(application: Any, host: str = "127.0.0.1", port: int = 8765, *,
          max_connections: int = 32, idle_timeout: float = 10.0) -> Any:
    """A server for the WSGI *application*, a thread per connection, at most
    *max_connections* at once (idle ones make room for new ones; 503 when
    all are busy), each closed after *idle_timeout* silent seconds:
    ``.url``, ``.start()`` (serves in the background), ``.close()`` (prompt,
    even with idle connections open); a context manager too. Port 0 picks a
    free port."""
    from .server import DashboardServer
    return DashboardServer(application, host, port, max_connections=max_connections,
                           idle_timeout=idle_timeout)
