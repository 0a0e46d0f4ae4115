"""A small threaded HTTP server for the dashboard, from the standard library
(``wsgiref``): one thread per request, joined when the server closes.

It is meant for a dashboard on a loopback address; behind a proxy or in
production any WSGI server (waitress, gunicorn) can serve ``app()`` instead.
"""
from __future__ import annotations

import ipaddress
import logging
import socket
import socketserver
import threading
from typing import Any, Optional
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

__all__ = ["DashboardServer", "is_loopback"]

_log = logging.getLogger("pysched_lightning.dashboard")


class _Handler(WSGIRequestHandler):
    """Requests go to the library's logger (DEBUG), not to stderr."""

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("%s %s", self.address_string(), format % args)


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = False
    block_on_close = True  # server_close() joins the request threads


class _ThreadingServer6(_ThreadingServer):
    address_family = socket.AF_INET6


class DashboardServer:
    """*application* served on *host*:*port* (port 0: any free port)."""

    def __init__(self, application: Any, host: str = "127.0.0.1", port: int = 8765) -> None:
        if not isinstance(host, str) or not host:
            raise ValueError(f"host must be a host name or address, not {host!r}")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port must be an int from 0 to 65535, not {port!r}")
        kind = _ThreadingServer6 if ":" in host else _ThreadingServer
        self._server = kind((host, port), _Handler)
        self._server.set_app(application)
        self.host = host
        self.port = self._server.server_address[1]
        self._thread: Optional[threading.Thread] = None
        if not is_loopback(host):
            _log.warning("the dashboard listens on %s, reachable from other machines; it "
                         "shows every task and run to anyone who can connect", host)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self) -> "DashboardServer":
        """Serve in a background thread; returns at once."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._server.serve_forever,
                                            name="pysched-dashboard", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving, wait for requests in progress, free the port."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> "DashboardServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
