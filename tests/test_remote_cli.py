"""``pysched serve``: the secret's sources, refusals, and a clean stop on
SIGTERM, run as real processes."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pysched_lightning.cli.config import ConfigError
from pysched_lightning.durability.stores import SQLiteStore
from pysched_lightning.remote.cli import read_secret
from test_remote_support import HERE, SECRET, Broker, ServiceProcess, add, broker, unique


def serve(*args, env=None, timeout=60):
    environ = {k: v for k, v in os.environ.items() if k != "PYSCHED_SECRET"}
    environ.update(env or {})
    return subprocess.run([sys.executable, "-m", "pysched_lightning", "serve", *map(str, args)],
                          capture_output=True, text=True, env=environ, timeout=timeout)


def secret_file(tmp_path, mode, text=SECRET + "\n"):
    path = tmp_path / "secret"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_the_secret_comes_from_the_file_or_else_the_environment(tmp_path, caplog):
    path = secret_file(tmp_path, 0o600)
    assert read_secret(str(path), {"PYSCHED_SECRET": "env"}) == SECRET  # newline dropped
    assert read_secret(None, {"PYSCHED_SECRET": "env"}) == "env"
    assert read_secret(None, {}) is None
    assert read_secret(None, {"PYSCHED_SECRET": ""}) is None
    path.chmod(0o640)
    assert read_secret(str(path), {}) == SECRET
    assert "readable by its group" in caplog.text


@pytest.mark.parametrize("mode, text, fragment", [
    (0o644, SECRET, "readable or writable by every user"),
    (0o602, SECRET, "readable or writable by every user"),
    (0o600, "\n", "is empty"),
])
def test_an_unsafe_or_empty_secret_file_is_refused(tmp_path, mode, text, fragment):
    with pytest.raises(ConfigError, match=fragment):
        read_secret(str(secret_file(tmp_path, mode, text)), {})
    with pytest.raises(ConfigError, match="cannot read"):
        read_secret(str(tmp_path / "missing"), {})


def test_serve_refuses_to_start_without_a_secret(tmp_path):
    done = serve("--broker", "amqp://localhost", "--store", tmp_path / "s.db")
    assert done.returncode == 2
    assert "no secret: set $PYSCHED_SECRET or pass --secret-file" in done.stderr
    done = serve("--broker", "amqp://localhost", "--store", tmp_path / "s.db",
                 "--secret-file", secret_file(tmp_path, 0o644))
    assert done.returncode == 2 and "chmod 600" in done.stderr
    assert not (tmp_path / "s.db").exists()


def test_serve_reports_an_unreachable_broker(tmp_path):
    done = serve("--broker", "amqp://guest:secretpw@127.0.0.1:1/%2F", "--store",
                 tmp_path / "s.db", env={"PYSCHED_SECRET": SECRET})
    assert done.returncode == 1
    assert "cannot reach the broker at amqp://guest:***@127.0.0.1:1" in done.stderr
    assert "secretpw" not in done.stderr


def test_serve_help_names_both_stores_and_the_lease():
    done = serve("--help")
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    assert "postgresql://" in text and "SQLite" in text and "--lease SECONDS" in text


def test_serve_refuses_a_bad_lease_naming_it(tmp_path):
    done = serve("--broker", "amqp://localhost", "--store", "postgresql://127.0.0.1:1/db",
                 "--lease", "0", env={"PYSCHED_SECRET": SECRET})
    assert done.returncode == 2 and "lease must be > 0, got 0" in done.stderr


def test_serve_reports_an_unreachable_postgresql_store(tmp_path):
    pytest.importorskip("psycopg")
    done = serve("--broker", "amqp://guest:guest@127.0.0.1:1/%2F", "--store",
                 "postgresql://postgres:secretpw@127.0.0.1:1/db", env={"PYSCHED_SECRET": SECRET})
    assert done.returncode == 1
    assert "cannot use the PostgreSQL store postgresql://postgres:***@127.0.0.1:1/db" \
        in done.stderr
    assert "secretpw" not in done.stderr


def test_serve_with_a_secret_file_answers_and_stops_cleanly_on_sigterm(tmp_path):
    from pysched_lightning.remote import Client
    url = broker()
    probe = Broker(url)
    name, client_name = unique("svc"), unique("client")
    probe.track(f"{name}.requests", f"{name}.replies.{client_name}")
    path = secret_file(tmp_path, 0o600)
    service = ServiceProcess(url, name, tmp_path / "s.db", tmp_path / "log",
                             "--secret-file", str(path), secret="the env is not used")
    try:
        service.start(probe)
        with Client(client_name, service=name, broker=url, secret=SECRET) as client:
            response = client.sync_await_response(client.task(add).launch(1, 2), timeout=30)
        assert response.result == 3
        assert service.stop() == 0
        log = service.log.read_text()
        assert "SIGTERM received; stopping" in log and f"service {name!r} stopped" in log
    finally:
        if service.proc is not None and service.proc.poll() is None:
            service.kill()
        probe.close()


def test_serve_kills_a_hard_task_still_running_at_the_end_of_its_grace(tmp_path):
    """``pysched serve --grace 1``, SIGTERM while a hard task without a
    lifetime sleeps for minutes: its worker process is killed once the
    second is over (it was left running, and the service with it, until the
    task ended), the client is answered "timeout", and the service exits."""
    from conftest import process_gone, wait_for
    from pysched_lightning.remote import Client
    from test_remote_support import record
    url = broker()
    probe = Broker(url)
    name, client_name = unique("svc"), unique("client")
    probe.track(f"{name}.requests", f"{name}.replies.{client_name}")
    service = ServiceProcess(url, name, tmp_path / "s.db", tmp_path / "log", "--grace", "1")
    started = tmp_path / "starts" / "slow"
    worker = None

    try:
        service.start(probe)
        with Client(client_name, service=name, broker=url, secret=SECRET) as client:
            slow = client.task(record).set_parameters(hard=True)
            message_id = slow.launch(str(tmp_path), "slow", 600)
            wait_for(lambda: started.exists() and started.read_text().strip(), 60)
            worker = int(started.read_text())
            assert service.stop() == 0
            response = client.sync_await_response(message_id, timeout=30)
        assert response.status == "interrupted"  # (the service stopped during the run)
        wait_for(lambda: process_gone(worker), 10)
        assert f"service {name!r} stopped" in service.log.read_text()
    finally:
        if service.proc is not None and service.proc.poll() is None:
            service.kill()
        if worker is not None and not process_gone(worker):
            os.kill(worker, 9)
        probe.close()


def test_a_sigkilled_service_leaves_no_process_of_a_hard_task_behind(tmp_path):
    """``pysched serve`` SIGKILLed while a hard task runs for minutes: its
    worker process and the pool's resource trackers exit within seconds
    (they finished the task, for nobody, 23 minutes later)."""
    import psutil
    from conftest import process_gone, wait_for
    from pysched_lightning.remote import Client
    from test_remote_support import record
    url = broker()
    probe = Broker(url)
    name, client_name = unique("svc"), unique("client")
    probe.track(f"{name}.requests", f"{name}.replies.{client_name}")
    service = ServiceProcess(url, name, tmp_path / "s.db", tmp_path / "log")
    started = tmp_path / "starts" / "slow"
    children = []

    try:
        service.start(probe)
        with Client(client_name, service=name, broker=url, secret=SECRET) as client:
            client.task(record).set_parameters(hard=True).launch(str(tmp_path), "slow", 600)
            wait_for(lambda: started.exists() and started.read_text().strip(), 60)
        children = psutil.Process(service.pid).children(recursive=True)
        assert int(started.read_text()) in [child.pid for child in children]
        service.kill()
        wait_for(lambda: all(process_gone(child) for child in children), 15)
    finally:
        if service.proc is not None and service.proc.poll() is None:
            service.kill()
        for child in children:
            if not process_gone(child):
                child.kill()
        probe.close()


WITHOUT_PIKA = """
import sys
sys.modules["pika"] = None  # as if the 'remote' extra were not installed
from pysched_lightning.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_pysched_works_without_the_remote_extra(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-c", WITHOUT_PIKA, *map(str, args)],
                              capture_output=True, text=True, timeout=60,
                              env={**os.environ, "PYSCHED_SECRET": SECRET})
    SQLiteStore(tmp_path / "p.db").close()
    assert run("list", "-t", tmp_path, "-s", tmp_path / "p.db").returncode == 0
    done = run("serve", "--broker", "amqp://localhost", "--store", tmp_path / "s.db")
    assert done.returncode == 1
    assert "pip install '.[remote]' in the pysched_lightning project's folder" in done.stderr


def test_the_examples_run_as_written(tmp_path):
    """examples/remote_service.py, then examples/remote_client.py against it."""
    import signal
    from conftest import wait_for
    url = broker()
    probe = Broker(url)
    name = unique("example")
    probe.track(f"{name}.requests", f"{name}.replies.example-client")
    examples = HERE.parent / "examples"
    env = {**os.environ, "PYSCHED_SECRET": SECRET, "PYSCHED_SERVICE": name,
           "PYSCHED_BROKER": url}
    log = open(tmp_path / "service.log", "w")
    service = subprocess.Popen(
        [sys.executable, str(examples / "remote_service.py")], cwd=tmp_path, env=env,
        stdout=log, stderr=subprocess.STDOUT,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # Ctrl-C works
    try:
        wait_for(lambda: probe.consumers(f"{name}.requests") > 0 or service.poll() is not None,
                 30)
        client = subprocess.run([sys.executable, str(examples / "remote_client.py")],
                                env=env, capture_output=True, text=True, timeout=120)
        assert client.returncode == 0, client.stderr
        for line in ("add(2, 3)              completed 5", "ZeroDivisionError: division by zero",
                     "lifetime 1 s   timeout", "add in 2 s             completed 42",
                     "awaited: [0, 2, 4, 6, 8]"):
            assert line in client.stdout, client.stdout
        service.send_signal(signal.SIGINT)
        assert service.wait(30) == 0
    finally:
        if service.poll() is None:
            service.kill()
        log.close()
        probe.close()
    assert f"service {name!r} stopped" in (tmp_path / "service.log").read_text()
    assert (tmp_path / "service.db").exists()


def test_serve_insecure_says_so_in_a_warning(tmp_path):
    done = serve("--broker", "amqp://guest:guest@127.0.0.1:1/%2F", "--store", tmp_path / "s.db",
                 "--insecure")
    assert done.returncode == 1  # (no broker there: it says so and exits)
    assert "WARNING" in done.stderr and "runs without a secret (insecure)" in done.stderr
    assert "Connection refused" in done.stderr


def test_the_example_service_stops_cleanly_on_sigterm_and_leaves_no_process(tmp_path):
    """examples/remote_service.py after a hard task ran (its worker process
    and the pool's resource trackers are up), then SIGTERM, as ``kill`` or a
    service manager sends: it stops as on Ctrl-C, exit code 0, and every
    process it started is gone. (It died of the signal, with no clean stop.)"""
    import signal
    import psutil
    from conftest import process_gone, wait_for
    from pysched_lightning.remote import Client
    from test_remote_support import pid
    url = broker()
    probe = Broker(url)
    name, client_name = unique("example"), unique("client")
    probe.track(f"{name}.requests", f"{name}.replies.{client_name}")
    path = os.pathsep.join([str(HERE.parent), str(HERE), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYSCHED_SECRET": SECRET, "PYSCHED_SERVICE": name,
           "PYSCHED_BROKER": url, "PYTHONPATH": path}
    log_path = tmp_path / "service.log"
    started = []
    with open(log_path, "w") as log:
        service = subprocess.Popen(
            [sys.executable, str(HERE.parent / "examples" / "remote_service.py")],
            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: probe.consumers(f"{name}.requests") > 0 or service.poll() is not None,
                 30)
        with Client(client_name, service=name, broker=url, secret=SECRET) as client:
            in_process = client.task(pid).set_parameters(hard=True)
            response = client.sync_await_response(in_process.launch(), timeout=60)
        assert response.status == "completed" and response.result != service.pid
        started = psutil.Process(service.pid).children(recursive=True)
        assert response.result in [child.pid for child in started]
        service.send_signal(signal.SIGTERM)
        assert service.wait(30) == 0, log_path.read_text()
        wait_for(lambda: all(process_gone(child) for child in started), 10)
    finally:
        if service.poll() is None:
            service.kill()
        for child in started:
            if child.is_running():
                child.kill()
        probe.close()
    assert f"service {name!r} stopped" in log_path.read_text()

