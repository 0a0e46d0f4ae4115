"""Helpers for the remote tests (no tests here): the broker, unique names,
the service as a real ``pysched serve`` process, and task functions.

The task functions live here so the service process can import them (the
tests put this folder on its PYTHONPATH); each leaves its trace in files, so
a test counts executions by reading them.
"""
from __future__ import annotations

import os
import pathlib
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from typing import Any, Dict, List, Optional

from conftest import wait_for
from services import missing, require_rabbitmq

HERE = pathlib.Path(__file__).resolve().parent
SECRET = "test-secret-" + "x" * 20


def broker() -> str:
    """The broker URL; skips (locally) or fails (CI) without pika or RabbitMQ."""
    try:
        import pika  # noqa: F401
    except ImportError:
        missing("pika is not installed (pip install -e '.[remote]')")
    return require_rabbitmq()


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class Broker:
    """A plain pika connection, for what a test does beside client and service."""

    def __init__(self, url: str) -> None:
        import pika
        self.pika = pika
        self.connection = pika.BlockingConnection(pika.URLParameters(url))
        self.channel = self.connection.channel()
        self.queues: List[str] = []
        self.services: List["ServiceProcess"] = []  # killed at close() if still running

    def track(self, *queues: str) -> None:
        self.queues.extend(queues)

    def ready(self, queue: str) -> int:
        """Messages waiting in *queue* (not counting delivered, unacknowledged ones)."""
        return self.channel.queue_declare(queue, passive=True).method.message_count

    def consumers(self, queue: str) -> int:
        try:
            return self.channel.queue_declare(queue, passive=True).method.consumer_count
        except self.pika.exceptions.ChannelClosedByBroker:  # no such queue yet
            self.channel = self.connection.channel()
            return 0

    def publish(self, queue: str, body: bytes, headers: Optional[Dict[str, Any]] = None,
                message_id: Optional[str] = None, reply_to: Optional[str] = None) -> None:
        self.channel.queue_declare(queue, durable=True)
        self.channel.basic_publish("", queue, body, self.pika.BasicProperties(
            delivery_mode=2, headers=headers, message_id=message_id, reply_to=reply_to))

    def publish_undecodable(self, queue: str, body: bytes, message_id: str) -> None:
        """Publish a message whose headers hold an AMQP timestamp of 2**64-1:
        RabbitMQ relays it, and pika cannot decode it (no datetime is that late)."""
        self.channel.queue_declare(queue, durable=True)
        self.channel.basic_publish("", queue, body, _late_properties(self.pika, message_id))

    def close(self) -> None:
        for service in self.services:  # a test that failed half-way
            if service.proc is not None and service.proc.poll() is None:
                service.kill()
        for queue in self.queues:
            try:
                self.channel.queue_delete(queue)
            except Exception:
                self.channel = self.connection.channel()
        self.connection.close()


def _late_properties(pika: Any, message_id: str) -> Any:
    import calendar
    import datetime
    import struct
    mark = datetime.datetime(2001, 2, 3, 4, 5, 6)
    stamp = b"T" + struct.pack(">Q", calendar.timegm(mark.utctimetuple()))

    class LateProperties(pika.BasicProperties):
        def encode(self) -> List[bytes]:  # pika's own encoding, the timestamp made 2**64-1
            encoded = b"".join(super().encode())
            assert encoded.count(stamp) == 1
            return [encoded.replace(stamp, b"T" + b"\xff" * 8)]

    return LateProperties(delivery_mode=2, message_id=message_id, headers={"x-when": mark})


class ServiceProcess:
    """``python -m pysched_lightning serve`` in a process of its own."""

    def __init__(self, url: str, name: str, store: pathlib.Path, log: pathlib.Path,
                 *extra: str, secret: Optional[str] = SECRET, workers: int = 2) -> None:
        self.url, self.name, self.store, self.log = url, name, store, log
        self.extra = extra
        self.secret = secret
        self.workers = workers
        self.proc: Optional[subprocess.Popen] = None

    def start(self, probe: Broker) -> "ServiceProcess":
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
        env.pop("PYSCHED_SECRET", None)
        if self.secret is not None:
            env["PYSCHED_SECRET"] = self.secret
        if self not in probe.services:
            probe.services.append(self)
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pysched_lightning", "serve", "--broker", self.url,
                 "--store", str(self.store), "--name", self.name, "--workers", str(self.workers),
                 *self.extra], stdout=log, stderr=subprocess.STDOUT, env=env)
        queue = f"{self.name}.requests"
        wait_for(lambda: probe.consumers(queue) > 0 or self.proc.poll() is not None, 30)
        assert self.proc.poll() is None, f"the service exited:\n{self.log.read_text()}"
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        """SIGTERM, as an operator would; returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise


class Proxy:
    """A TCP relay to the broker that a test can cut: every connection through
    it drops at once (as when a network or the broker goes away), and new
    ones are relayed again. It can also stall: connections stay open and
    nothing passes either way (a broker or network that hangs) until resumed."""

    def __init__(self, target: tuple = ("127.0.0.1", 5672)) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ, None)
        self.wake_r, self.wake_w = socket.socketpair()
        self.selector.register(self.wake_r, selectors.EVENT_READ, "wake")
        self.peers: Dict[socket.socket, socket.socket] = {}
        self.cuts = 0
        self.stalled = False
        self.cutting = threading.Event()
        self.stopping = False
        self.thread = threading.Thread(target=self._relay, name="test-proxy", daemon=True)
        self.thread.start()

    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    def cut(self) -> None:
        """Drop every connection through the proxy now."""
        self.cutting.set()
        self.wake_w.send(b"x")
        wait_for(lambda: not self.cutting.is_set())

    def stall(self) -> None:
        """From now on nothing passes (connections stay open) until resume()."""
        self.stalled = True
        self.wake_w.send(b"x")

    def resume(self) -> None:
        self.stalled = False
        self.wake_w.send(b"x")

    def close(self) -> None:
        self.stopping = True
        self.wake_w.send(b"x")
        self.thread.join(10)

    def _relay(self) -> None:
        while not self.stopping:
            for key, _ in self.selector.select(1.0):
                if key.data == "wake":
                    self.wake_r.recv(64)
                    if self.cutting.is_set():
                        self._drop_all()
                        self.cuts += 1
                        self.cutting.clear()
                elif key.fileobj is self.listener:
                    inside, _ = self.listener.accept()
                    outside = socket.create_connection(self.target)
                    self.peers[inside], self.peers[outside] = outside, inside
                    self.selector.register(inside, selectors.EVENT_READ, "peer")
                    self.selector.register(outside, selectors.EVENT_READ, "peer")
                elif key.fileobj in self.peers and not self.stalled:
                    self._pass(key.fileobj)
            if self.stalled:  # what waits in the sockets stays there
                self._sleep_while_stalled()
        self._drop_all()
        self.selector.close()
        self.listener.close()

    def _sleep_while_stalled(self) -> None:
        held = []  # connections accepted meanwhile: never relayed, closed on resume
        while self.stalled and not self.stopping:
            for key, _ in self.selector.select(0.05):
                if key.data == "wake":
                    self.wake_r.recv(64)
                elif key.fileobj is self.listener:
                    held.append(self.listener.accept()[0])
            time.sleep(0.05)  # the peers stay readable: select() returns at once
        for sock in held:
            sock.close()

    def _pass(self, sock: Any) -> None:
        try:
            data = sock.recv(65536)
            if data:
                self.peers[sock].sendall(data)
                return
        except OSError:
            pass
        self._drop(sock)

    def _drop(self, sock: Any) -> None:
        other = self.peers.pop(sock, None)
        for s in (sock, other):
            if s is None:
                continue
            self.peers.pop(s, None)
            try:
                self.selector.unregister(s)
            except (KeyError, ValueError):
                pass
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def _drop_all(self) -> None:
        for sock in list(self.peers):
            self._drop(sock)


# --------------------------------------------------------------------------
# task functions: run by the service, importable there by reference


def add(a: Any, b: Any) -> Any:
    return a + b


def blob(size: int) -> bytes:
    return b"x" * size


def fail(message: str) -> None:
    raise ValueError(message)


def pid() -> int:
    return os.getpid()


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def touch(path: str, *ignored: Any) -> None:
    pathlib.Path(path).touch()


def record(folder: str, tag: str, seconds: float = 0.0) -> int:
    """One line (the process id) in ``folder/starts/tag`` when it starts and
    in ``folder/ends/tag`` when it ends: a test counts runs by lines."""
    for sub in ("starts", "ends"):
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
    _append(os.path.join(folder, "starts", tag), f"{os.getpid()}\n")
    time.sleep(seconds)
    _append(os.path.join(folder, "ends", tag), f"{os.getpid()}\n")
    return os.getpid()


def gated(folder: str, tag: str, gates: str) -> int:
    """record()'s lines, with a wait in between until the file ``gates/tag``
    exists (a test opens each task's gate when it wants that task to end)."""
    for sub in ("starts", "ends"):
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
    _append(os.path.join(folder, "starts", tag), f"{os.getpid()}\n")
    wait_for_file(os.path.join(gates, tag), timeout=120.0)
    _append(os.path.join(folder, "ends", tag), f"{os.getpid()}\n")
    return os.getpid()


def wait_for_file(path: str, timeout: float = 30.0) -> None:
    """Block until *path* exists (a gate a test opens), at most *timeout* s."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        time.sleep(0.01)


def append_line(path: str, text: str) -> None:
    _append(path, text + "\n")


def lines(path: pathlib.Path) -> List[str]:
    return path.read_text().splitlines() if path.exists() else []


def _append(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


class TouchOnUnpickle:
    """Unpickling this creates *path*: proof that a payload was unpickled."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> Any:
        return (touch, (self.path,))
