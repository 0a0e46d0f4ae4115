"""A small threaded HTTP server for the dashboard, from the standard library
(``wsgiref``): a thread per open connection, at most ``max_connections`` at
once.

A connection that has not sent a whole request is idle: it is closed after
``idle_timeout`` seconds without a byte, and sooner when the server is full
and a new one comes (the oldest idle one makes room), so idle sockets can
neither pile up threads nor keep others out. A new connection that finds
every slot busy with a request is answered 503 at once. ``close()`` ends the
idle connections at once and lets the requests in progress finish.

It is meant for a dashboard on a loopback address; behind a proxy or in
production any WSGI server (waitress, gunicorn) can serve ``app()`` instead.
"""
from __future__ import annotations

import collections
import logging
import socket
import threading
import time
from typing import Any, Optional, Tuple
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from .security import is_loopback

__all__ = ["DashboardServer", "is_loopback", "MAX_CONNECTIONS", "IDLE_TIMEOUT"]

_log = logging.getLogger("pysched_lightning.dashboard")

#: Connections served at once (a browser opens about six).
MAX_CONNECTIONS = 32
#: Seconds a connection may stay silent (before its request, or while it is
#: sent or answered) before it is closed.
IDLE_TIMEOUT = 10.0
#: How long a new connection waits for an idle one to make room.
_ROOM_WAIT = 1.0
#: How long close() waits for the requests in progress to finish.
_FINISH_WAIT = 10.0
_BUSY = (b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
         b"Retry-After: 1\r\nConnection: close\r\nContent-Length: 41\r\n\r\n"
         b"the dashboard is busy: try again shortly\n")


class _Handler(WSGIRequestHandler):
    """One connection (one request: HTTP/1.0). Requests go to the library's
    logger (DEBUG), not to stderr."""

    server: "_Server"

    def setup(self) -> None:
        self.request.settimeout(self.server.idle_timeout)  # every read and write on it
        super().setup()

    def parse_request(self) -> bool:
        whole = super().parse_request()
        if whole:  # the request line and headers are in: no longer idle
            self.server.connections.busy(self.connection)
        return whole

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("%s %s", self.address_string(), format % args)


class _Connections:
    """The open connections and their threads: at most *limit*; each idle
    (no whole request yet) or busy."""

    def __init__(self, limit: int) -> None:
        self._slots = threading.BoundedSemaphore(limit)
        self._lock = threading.Lock()
        # socket -> busy?  (insertion order is age: the oldest idle one goes first)
        self._open: "collections.OrderedDict[socket.socket, bool]" = collections.OrderedDict()
        self._threads: "set[threading.Thread]" = set()
        self._closing = False

    def admit(self, sock: socket.socket) -> bool:
        """Take a slot for *sock*, making room by closing the oldest idle
        connection if need be; False when every slot stays busy."""
        if not self._slots.acquire(blocking=False):
            self._drop_oldest_idle()
            if not self._slots.acquire(timeout=_ROOM_WAIT):
                return False
        with self._lock:
            if self._closing:
                self._slots.release()
                return False
            self._open[sock] = False
        return True

    def started(self, thread: threading.Thread) -> None:
        with self._lock:
            self._threads.add(thread)

    def busy(self, sock: socket.socket) -> None:
        with self._lock:
            if sock in self._open:
                self._open[sock] = True

    def done(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.pop(sock, None)
            self._threads.discard(threading.current_thread())
        self._slots.release()

    def _drop_oldest_idle(self) -> None:
        with self._lock:
            oldest = next((sock for sock, busy in self._open.items() if not busy), None)
        if oldest is not None:
            _log.debug("dashboard: all %d connections are open; closing the oldest idle one",
                       len(self._open))
            _end_reading(oldest, socket.SHUT_RDWR)

    def close(self, wait: float) -> None:
        """End the idle connections (their threads return at once) and wait
        up to *wait* seconds for the requests in progress."""
        with self._lock:
            self._closing = True
            idle = [sock for sock, busy in self._open.items() if not busy]
            threads = list(self._threads)
        for sock in idle:
            # Reading ends (the thread sees the end of the stream); a request
            # whose headers came in meanwhile can still write its answer.
            _end_reading(sock, socket.SHUT_RD)
        deadline = time.monotonic() + wait
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        left = sum(thread.is_alive() for thread in threads)
        if left:
            _log.warning("dashboard: %d request(s) still running after %.0f s; not waiting",
                         left, wait)


def _end_reading(sock: socket.socket, how: int) -> None:
    try:
        sock.shutdown(how)
    except OSError:  # already closed by its thread
        pass


class _Server(WSGIServer):
    """wsgiref's server, a thread per admitted connection."""

    request_queue_size = 64  # connections waiting in the kernel for accept()
    connections: _Connections
    idle_timeout: float

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.connections.admit(request):
            _refuse(request)
            self.shutdown_request(request)
            return
        thread = threading.Thread(target=self._serve_one, args=(request, client_address),
                                  name="pysched-dashboard-request", daemon=True)
        self.connections.started(thread)
        thread.start()

    def _serve_one(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            self.connections.done(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that went silent or away is routine, not a traceback on stderr.
        _log.debug("dashboard: a connection from %s ended with an error", client_address,
                   exc_info=True)


class _Server6(_Server):
    address_family = socket.AF_INET6


def _refuse(sock: socket.socket) -> None:
    try:
        sock.settimeout(0.5)
        sock.sendall(_BUSY)
    except OSError:
        pass


class DashboardServer:
    """*application* served on *host*:*port* (port 0: any free port), at
    most *max_connections* connections at once, each closed after
    *idle_timeout* silent seconds."""

    def __init__(self, application: Any, host: str = "127.0.0.1", port: int = 8765, *,
                 max_connections: int = MAX_CONNECTIONS,
                 idle_timeout: float = IDLE_TIMEOUT) -> None:
        if not isinstance(host, str) or not host:
            raise ValueError(f"host must be a host name or address, not {host!r}")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port must be an int from 0 to 65535, not {port!r}")
        if isinstance(max_connections, bool) or not isinstance(max_connections, int) \
                or not 1 <= max_connections <= 10_000:
            raise ValueError(f"max_connections must be an int from 1 to 10000, not "
                             f"{max_connections!r}")
        if isinstance(idle_timeout, bool) or not isinstance(idle_timeout, (int, float)) \
                or not 0 < idle_timeout <= 3600:
            raise ValueError(f"idle_timeout must be seconds above 0, at most 3600, not "
                             f"{idle_timeout!r}")
        kind = _Server6 if ":" in host else _Server
        self._server = kind((host, port), _Handler)
        self._server.connections = _Connections(max_connections)
        self._server.idle_timeout = float(idle_timeout)
        self._server.set_app(application)
        self.host = host
        self.port = self._server.server_address[1]
        self._thread: Optional[threading.Thread] = None
        if not is_loopback(host):
            _log.warning("the dashboard listens on %s, reachable from other machines; it "
                         "shows every task and run to anyone who can connect", host)

    @property
    def address(self) -> Tuple[str, int]:
        return self.host, self.port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self) -> "DashboardServer":
        """Serve in a background thread; returns at once."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._server.serve_forever,
                                            kwargs={"poll_interval": 0.2},
                                            name="pysched-dashboard", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop accepting, close the idle connections, wait (a bounded
        time) for the requests in progress, free the port."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.connections.close(_FINISH_WAIT)
        self._server.server_close()

    def __enter__(self) -> "DashboardServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()
