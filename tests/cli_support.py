"""Helpers for the tests of the ``pysched`` command: running it as a real
subprocess on real temporary folders, and reading what it left."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pysched_lightning.durability.runlog import read_run_log
from pysched_lightning.durability.stores import open_store

REPO = Path(__file__).resolve().parents[1]
POLL = 0.05


# ------------------------------------------------------------------ helpers


def _env(**extra):
    # A table's width is the test's to give: a terminal's size, or pytest-xdist's
    # workers (COLUMNS=80), must not wrap what the command writes to a pipe.
    env = {key: value for key, value in os.environ.items() if key not in ("COLUMNS", "LINES")}
    env.update(extra)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def pysched(*args, cwd, timeout=30, env=None):
    """Run ``python -m pysched_lightning ARGS`` to completion."""
    return subprocess.run([sys.executable, "-m", "pysched_lightning", *map(str, args)],
                          cwd=cwd, env=_env(**(env or {})), capture_output=True, text=True,
                          timeout=timeout)


class Daemon:
    """``pysched run`` in the background; stderr goes to a file (no pipe to fill)."""

    def __init__(self, tmp, *args, stdout=subprocess.DEVNULL, stderr=None, env=None):
        self.stderr_path = Path(tmp) / f"stderr-{time.monotonic_ns()}.txt"
        self._stderr = open(self.stderr_path, "w")
        self.started = time.time()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pysched_lightning", "run", *map(str, args)],
            cwd=tmp, env=_env(**(env or {})), stdout=stdout,
            stderr=self._stderr if stderr is None else stderr)

    @property
    def stderr(self):
        return self.stderr_path.read_text()

    def stop(self, sig=signal.SIGTERM, timeout=15):
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"pysched run did not stop on {sig!r}:\n{self.stderr}")

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._stderr.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def write_job(path, body, executable=True):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body + "\n")
    if executable:
        path.chmod(0o755)
    return path


def write_config(path, fail=0.01, check=0.01, sleep=0.01, extra="", level="DEBUG"):
    """A config file at *path*, and the folder it names for the store."""
    (Path(path).parent / "state").mkdir(exist_ok=True)
    Path(path).write_text(
        "[Timings]\n"
        f"SLEEP_DURATION = {sleep}\n"
        f"CHECK_FOR_NEW_JOBS_EVERY = {check}\n"
        f"JOB_FAIL_TIMEOUT_PERIOD_MINUTES = {fail}\n"
        "[Folders]\n"
        "JOBS_FOLDER_DEFAULT = jobs\n"
        "LOGS_FOLDER_DEFAULT = logs\n"
        "PERSISTENCE_FILE = state/pysched.db\n"
        "[Logging]\n"
        f"LOG_LEVEL = {level}\n" + extra)
    return path


def logged(tmp, task_id=None):
    """The records in the JSON run log, of one task or all."""
    path = Path(tmp) / "logs" / "job_status.log"
    if not path.exists():
        return []
    return [r for r in read_run_log(path) if task_id is None or r["task_id"] == task_id]


def stamp(iso):
    from datetime import datetime
    return datetime.fromisoformat(iso).timestamp()


@pytest.fixture
def store_of():
    """Open stores read-only-style (as `pysched list` does) and close them after."""
    opened = []

    def open_(tmp):
        store = open_store(str(Path(tmp) / "state" / "pysched.db"))
        opened.append(store)
        return store

    yield open_
    for store in opened:
        store.close()


def tasks(store):
    return {record.id: record for record in store.load_tasks()}
