"""Nodes of a shared PostgreSQL store, in processes of their own, and a TCP
proxy that can cut one of them off from the database (``test_cluster.py``)."""
from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
from typing import Any, Dict, List, Optional

from conftest import wait_for

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


class Nodes:
    """Scheduler nodes (``cluster_node.py``) on one store; every one is
    killed at the end, whatever the test did."""

    def __init__(self, store: str, tmp: Any) -> None:
        self.store = store
        self.tmp = tmp
        self.log = str(tmp / "executions.log")
        self.procs: Dict[str, subprocess.Popen] = {}

    def start(self, name: str, tasks: List[Dict[str, Any]] = (), *, lease: float = 1.0,
              store: Optional[str] = None, wall_shift: float = 0.0,
              workers: int = 4, adds: Optional[Dict[str, Any]] = None) -> subprocess.Popen:
        plan = {"store": store or self.store, "name": name, "lease": lease, "log": self.log,
                "tasks": list(tasks), "wall_shift": wall_shift, "workers": workers,
                "adds": adds}
        path = self.tmp / f"plan-{name}.json"
        path.write_text(json.dumps(plan))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, HERE]))
        stderr = open(self.tmp / f"{name}.err", "wb")
        proc = subprocess.Popen([sys.executable, "-c", "import cluster_node; cluster_node.main()",
                                 str(path)], env=env, stdout=subprocess.DEVNULL,
                                stderr=stderr, start_new_session=True)
        stderr.close()
        self.procs[name] = proc
        wait_for(lambda: any(e["event"] == "ready" and e["node"] == name
                             for e in self.entries()) or proc.poll() is not None, 60)
        assert proc.poll() is None, self.stderr(name)
        return proc

    def entries(self) -> List[Dict[str, Any]]:
        try:
            with open(self.log) as file:
                return [json.loads(line) for line in file if line.endswith("\n")]
        except FileNotFoundError:
            return []

    def runs(self, tid: Optional[str] = None, event: str = "run") -> List[Dict[str, Any]]:
        return [e for e in self.entries()
                if e["event"] == event and (tid is None or e["tid"] == tid)]

    def stderr(self, name: str) -> str:
        return (self.tmp / f"{name}.err").read_text(errors="replace")

    def kill(self, name: str) -> None:
        """SIGKILL the node and everything it started (nothing if it is down)."""
        proc = self.procs[name]
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)

    def stop(self, name: str) -> None:
        """A clean stop (SIGTERM: run_forever shuts down, waiting for runs)."""
        proc = self.procs[name]
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(30)


def duplicates(entries: List[Dict[str, Any]]) -> List[Any]:
    """Executions of one slot and attempt more than once."""
    seen: Dict[Any, int] = {}
    for e in entries:
        key = (e["tid"], e["scheduled"], e["attempt"])
        seen[key] = seen.get(key, 0) + 1
    return [key for key, count in seen.items() if count > 1]


class Proxy:
    """A TCP proxy to *target* on a free loopback port. ``cut()`` stops
    passing bytes either way (connections stay open, as on a network
    partition); ``restore()`` passes them again."""

    def __init__(self, target: Any) -> None:
        self.target = target
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self._open = threading.Event()
        self._open.set()
        self._closed = False
        self._socks: List[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, url: str) -> str:
        """*url* (postgresql://user@127.0.0.1:5432/db) through this proxy."""
        return url.replace(f"{self.target[0]}:{self.target[1]}", f"127.0.0.1:{self.port}")

    def cut(self) -> None:
        self._open.clear()

    def restore(self) -> None:
        self._open.set()

    def close(self) -> None:
        self._closed = True
        self._open.set()
        for sock in [self._listener] + self._socks:
            try:
                sock.close()
            except OSError:
                pass

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            self._socks += [client, server]
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        peers = {a: b, b: a}
        try:
            while not self._closed:
                ready, _, _ = select.select([a, b], [], [], 0.1)
                if not self._open.is_set():
                    continue  # the partition: nothing passes, nothing is lost
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)
        except OSError:
            return
        finally:
            a.close()
            b.close()
