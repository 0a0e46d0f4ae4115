"""``pysched dashboard`` (here as ``python -m pysched_lightning.dashboard``):
a real process serving a real store, stopped by SIGTERM."""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest

import pysched_lightning as psl
from conftest import wait_for
from dashboard_stores import fetch
from pysched_lightning.dashboard import command
from pysched_lightning.durability.stores import SQLiteStore
from store_records import record

#: The server's connections at most (pysched_lightning.dashboard.server.MAX_CONNECTIONS).
MAX_CONNECTIONS = 32

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "pysched_lightning.dashboard", *args],
                          capture_output=True, text=True, timeout=60, cwd=ROOT, **kwargs)


@pytest.fixture
def store_path(tmp_path):
    path = str(tmp_path / "pysched.db")
    sched = psl.Scheduler(store=path)
    try:
        sched.delay("once", 0, 1, sum, args=([1, 2],), task_id="add", name="add numbers")
        sched.start()
        wait_for(lambda: sched.get_status("add") is psl.TaskStatus.COMPLETED)
    finally:
        sched.shutdown()
    return path


@contextlib.contextmanager
def _serving(*args):
    """The command running in a process of its own; yields its URL."""
    proc = subprocess.Popen([sys.executable, "-m", "pysched_lightning.dashboard", *args,
                             "--port", "0"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "http://127.0.0.1:" in line and "read-only" in line, proc.stderr.read()
        yield proc, line.split()[2].rstrip("/")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_serves_the_store_until_sigterm(store_path):
    pytest.importorskip("jinja2", reason="the dashboard extra is not installed")
    with _serving("--store", f"sqlite:///{store_path}") as (proc, url):
        status, _, html = fetch(url + "/")
        assert status == 200 and "add numbers" in html
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


def test_the_config_names_the_store(store_path, tmp_path):
    pytest.importorskip("jinja2", reason="the dashboard extra is not installed")
    ini = tmp_path / "pysched.ini"
    ini.write_text(f"[Folders]\nPERSISTENCE_FILE = {os.path.basename(store_path)}\n")
    with _serving("-c", str(ini)) as (proc, url):
        assert "add numbers" in fetch(url + "/tasks/add")[2]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
    result = _run("-c", str(ini), "--port", "99999")
    assert result.returncode == 2 and "99999" in result.stderr          # a usage error


def test_a_missing_store_is_an_error_naming_it(tmp_path):
    missing = tmp_path / "absent.db"
    result = _run("--store", str(missing), "--port", "0")
    assert result.returncode == 1
    assert str(missing) in result.stderr and "pysched run" in result.stderr
    assert not missing.exists()


def test_without_the_extra_the_command_says_what_to_install(store_path):
    code = textwrap.dedent(f"""
        import sys
        sys.modules["jinja2"] = None          # as if the extra were not installed
        import pysched_lightning.cli, pysched_lightning.dashboard.command as c
        assert "jinja2" not in [m for m in sys.modules if sys.modules[m] is not None]
        sys.exit(c.main(["--store", {store_path!r}, "--port", "0"]))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, cwd=ROOT)
    assert result.returncode == 1, result.stderr
    assert "pip install '.[dashboard]' in the pysched_lightning project's folder" in result.stderr


def test_register_adds_the_sub_command_to_a_parser():
    parser = argparse.ArgumentParser(prog="pysched")
    commands = parser.add_subparsers(dest="command")
    sub = command.register(commands)
    assert isinstance(sub, argparse.ArgumentParser)
    args = parser.parse_args(["dashboard", "-s", "sqlite:///jobs.db", "--port", "0",
                              "--host", "::1", "--refresh", "2.5"])
    assert args.command == "dashboard" and args.handler is command.cmd_dashboard
    assert (args.store, args.port, args.host, args.refresh) == ("sqlite:///jobs.db", 0, "::1", 2.5)
    assert args.config is None and args.log_level is None              # what `pysched` reads
    defaults = parser.parse_args(["dashboard"])
    assert (defaults.host, defaults.port) == ("127.0.0.1", command.DEFAULT_PORT)
    with pytest.raises(SystemExit):
        parser.parse_args(["dashboard", "--refresh", "-1"])


@contextlib.contextmanager
def _idle_connections(url, count):
    """*count* connections to the server at *url* that never send a byte,
    closed on leaving."""
    host, port = url.split("//")[1].rsplit(":", 1)
    sockets = []
    try:
        for _ in range(count):
            sockets.append(socket.create_connection((host, int(port)), timeout=10))
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def _threads(pid):
    with open(f"/proc/{pid}/status") as status:
        return int(next(line for line in status if line.startswith("Threads:")).split()[1])


def test_sigterm_stops_it_while_idle_connections_are_open(store_path):
    pytest.importorskip("jinja2", reason="the dashboard extra is not installed")
    with _serving("--store", store_path) as (proc, url), _idle_connections(url, 20):
        assert fetch(url + "/")[0] == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


def test_idle_connections_do_not_pile_up_threads(store_path):
    pytest.importorskip("jinja2", reason="the dashboard extra is not installed")
    with _serving("--store", store_path) as (proc, url), _idle_connections(url, 300):
        # Accepted in order: once this request is answered, so were the 300 before it.
        assert fetch(url + "/")[0] == 200
        assert _threads(proc.pid) <= MAX_CONNECTIONS + 8
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


def test_serving_a_closed_store_leaves_no_wal_or_shm_file(tmp_path):
    pytest.importorskip("jinja2", reason="the dashboard extra is not installed")
    path = tmp_path / "jobs.db"
    writer = SQLiteStore(path)
    writer.save_task(record("a"))
    writer.close()                      # the last connection: no -wal, no -shm
    before = sorted(os.listdir(tmp_path))
    with _serving("--store", str(path)) as (proc, url):
        assert fetch(url + "/tasks/a")[0] == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    assert sorted(os.listdir(tmp_path)) == before
