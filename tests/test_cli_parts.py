"""The ``pysched`` command's parts, in-process: its text helpers, what
``pysched run`` logs for a real scheduler's runs, and optional commands."""
from __future__ import annotations

import io
import logging
import os
import sys
import textwrap

import pytest

import pysched_lightning as psl
from conftest import wait_for
from pysched_lightning.cli import RunReporter, main, setup_logging
from pysched_lightning.cli.common import UsageError, store_spec
from pysched_lightning.cli.main import build_parser
from pysched_lightning.cli.status import render
from pysched_lightning.cli.text import (LocalTime, format_table, relative, stderr_tail,
                                        useful_line)
from pysched_lightning.cli.views import holder_text, stored_script
from pysched_lightning.durability.stores import store_location


# ------------------------------------------------------------------- text


@pytest.mark.parametrize("stderr, error, line", [
    ("boom: disk full\n", None, "boom: disk full"),
    ("\n\n  starting\nstill going\n", None, "still going"),
    ("backup: 3 files\nwarning: slow disk\nfatal: cannot reach db:5432\nbye\n", None,
     "fatal: cannot reach db:5432"),
    ("+ cp a b\ncp: cannot stat 'a': No such file\n", None,
     "cp: cannot stat 'a': No such file"),
    ("[... 12 bytes truncated ...]\nreal error\n", None, "real error"),
    ("starting\nTraceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n"
     "    f()\nValueError: bad input 42\n", None, "ValueError: bad input 42"),
    ("", "TimeoutError: task 'a' run 1 exceeded its timeout of 1 s\nmore",
     "TimeoutError: task 'a' run 1 exceeded its timeout of 1 s"),
    (None, None, ""),
])
def test_useful_line(stderr, error, line):
    assert useful_line(stderr, error) == line


def test_stderr_tail_keeps_the_last_lines_and_counts_all():
    text = "".join(f"line {i}\n\n" for i in range(12))
    tail, total = stderr_tail(text, count=3)
    assert tail == ["line 9", "line 10", "line 11"] and total == 12
    tail, total = stderr_tail("x" * 1000, count=3, width=50)
    assert tail == ["x" * 47 + "..."] and total == 1


def test_table_wraps_its_last_column_and_never_cuts_it():
    detail = "cp: cannot create regular file '/var/backups/nightly/db.tar': " \
             "No space left on device (wanted 12 GiB, 3 GiB free) END"
    rows = [["2026-11-30 13:41:13", "5min/backup.sh", "Error", detail],
            ["2026-11-30 13:36:13", "5min/backup.sh", "Completed", ""]]
    lines = format_table(["STARTED", "JOB", "STATUS", "DETAIL"], rows, width=80)
    assert all(len(line) <= 80 for line in lines)
    assert len(lines) > 3                                   # the detail was wrapped
    start = lines[0].index("DETAIL")
    wrapped = " ".join(line[start:].strip() for line in lines[1:-1])
    assert wrapped == detail                                # whole, in order
    assert all(line[:start].strip() == "" for line in lines[2:-1])  # continuation lines
    one_line = format_table(["STARTED", "JOB", "STATUS", "DETAIL"], rows, width=None)
    assert one_line[1].endswith(detail)                     # no width: one line each
    # Too narrow to wrap beside the row: the detail goes below it, indented.
    narrow = format_table(["STARTED", "JOB", "STATUS", "DETAIL"], rows, width=50)
    assert narrow[1].rstrip().endswith("Error")
    assert all(line.startswith("    ") and len(line) <= 50 for line in narrow[2:-1])
    assert " ".join(line.strip() for line in narrow[2:-1]) == detail


def test_local_time_names_its_zone(monkeypatch):
    monkeypatch.setenv("TZ", "Europe/Berlin")
    local = LocalTime()
    winter, summer = 1795000000.0, 1783000000.0             # Nov 2026, Jul 2026
    assert local.name(winter) == "Europe/Berlin (CET, UTC+01:00)"
    assert local.name(summer) == "Europe/Berlin (CEST, UTC+02:00)"
    assert local.text(summer) == "2026-07-02 15:46:40"
    monkeypatch.setenv("TZ", "UTC")
    assert LocalTime().name() == "UTC" and LocalTime().text(summer) == "2026-07-02 13:46:40"


def test_relative():
    assert [relative(s) for s in (0.2, 30, 299, -0.5, -12.7, 7200, -90000)] == \
        ["in 1 s", "in 30 s", "in 4 min", "now", "12 s ago", "in 2 h", "1 d ago"]


def test_store_spec_reads_every_form_as_the_library_does(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for spec in ("jobs.db", "sqlite:///jobs.db", f"sqlite:///{tmp_path}/jobs.db",
                 str(tmp_path / "jobs.db")):
        assert store_spec(spec) == store_location(spec) == str(tmp_path / "jobs.db")
    assert store_spec("~/jobs.db") == str(tmp_path / "home" / "jobs.db")
    assert store_spec("postgresql://u@db/jobs") == "postgresql://u@db/jobs"
    with pytest.raises(UsageError, match="three slashes"):
        store_spec("sqlite:jobs.db")


def test_holder_text():
    assert holder_text("web-1.example:4242:7f3a9c") == "pid 4242 on web-1.example"
    assert holder_text(None) == "nobody"
    assert holder_text("something else") == "something else"


def test_stored_script_reads_a_stored_command(tmp_path):
    script = tmp_path / "5min" / "backup.sh"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\ntrue\n")
    script.chmod(0o755)
    with psl.Scheduler(store="memory://") as sched:
        sched.delay("recur", 300, 1, psl.command([str(script)], cwd=str(script.parent)),
                    task_id="5min/backup.sh")
        sched.delay("recur", 300, 1, psl.command("echo hi"), task_id="plain")
        sched.delay("recur", 300, 1, print, task_id="python")
        store = sched.store
        assert stored_script(store.task("5min/backup.sh")) == str(script)
        assert stored_script(store.task("plain")) is None    # not an absolute path
        assert stored_script(store.task("python")) is None


# -------------------------------------------------- what `pysched run` logs


@pytest.fixture
def root_logging():
    """Puts the root logger back as it was: the CLI sets up its own handler."""
    root = logging.getLogger()
    saved = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved[0]:
        root.addHandler(handler)
    root.setLevel(saved[1])


@pytest.fixture
def cli_log(root_logging):
    """The CLI's logging set up on a StringIO."""
    stream = io.StringIO()

    def setup(level=logging.INFO):
        setup_logging(level, stream)
        return stream
    return setup


def _fail_python():
    raise ValueError("bad input 42")


def _run_failures(tmp_path, level, cli_log):
    stream = cli_log(level)
    script = tmp_path / "fail.sh"
    script.write_text("#!/bin/sh\necho 'first complaint' >&2\necho 'disk full' >&2\nexit 4\n")
    script.chmod(0o755)
    with psl.Scheduler(store="memory://") as sched:
        reporter = RunReporter.for_scheduler(sched)
        sched.add_listener(reporter, RunReporter.KINDS)
        sched.delay("once", 0, 1, _fail_python, task_id="py")
        sched.delay("once", 0, 1, psl.command([str(script)]), task_id="cmd")
        sched.delay("once", 0, 1, psl.command("true"), task_id="ok")
        for task_id in ("py", "cmd"):
            with pytest.raises((ValueError, psl.CommandError)):
                sched.get_result(task_id, timeout=30)
        sched.get_result("ok", timeout=30)
        wait_for(lambda: stream.getvalue().count(" run 1: ") == 3, 10)
    return stream.getvalue()


def test_run_lines_a_traceback_only_for_python_tasks_and_once(tmp_path, cli_log):
    text = _run_failures(tmp_path, logging.INFO, cli_log)
    assert text.count("Traceback (most recent call last)") == 1
    assert "in _fail_python" in text and "ValueError: bad input 42" in text
    assert "job ok run 1: Completed in " in text and ", exit code 0" in text
    cmd = [line for line in text.splitlines() if "job cmd run 1" in line]
    assert len(cmd) == 1 and "ERROR job cmd run 1: Error after" in cmd[0]
    assert cmd[0].endswith("exit code 4; stderr (2 lines) below")
    after = text.splitlines()[text.splitlines().index(cmd[0]) + 1:][:2]
    assert after == ["    first complaint", "    disk full"]
    assert "commands.py" not in text          # no frame of the library's own code
    assert "failed:\n" not in text            # the library's own line is not shown


def test_library_run_records_show_at_debug(tmp_path, cli_log):
    text = _run_failures(tmp_path, logging.DEBUG, cli_log)
    assert "DEBUG pysched_lightning: task 'cmd' run 1 failed:" in text
    assert "ERROR job cmd run 1: Error after" in text


# ---------------------------------------------------------- status screen


def test_status_screen_fits_the_terminal():
    local = LocalTime()
    now = 1795000000.0
    lines = render(now=now, local=local, title="pysched /srv/jobs",
                   running=[("1min/backup.sh", 7, 1, now - 42)],
                   upcoming=[(now + i, f"1s/job{i}.sh") for i in range(1, 9)],
                   failures=[{"task_id": "5min/x.sh", "run": 3, "status": 1, "exit_code": 2,
                              "finished": now - 60, "started": now - 61, "scheduled": now - 61,
                              "stderr": "x.sh: cannot reach db\n", "error": None}],
                   log_lines=[f"log {i}" for i in range(100)], columns=90, rows=24)
    assert len(lines) == 24 and all(len(line) < 90 for line in lines)
    text = "\n".join(lines)
    assert "1min/backup.sh  run 7  since" in text and "(42 s)" in text
    assert text.count("1s/job") == 5                        # the next five runs
    assert "5min/x.sh  run 3  Error  exit 2  x.sh: cannot reach db" in text
    assert "log 99" in text and "log 0\n" not in text       # the last log lines that fit
    cut = render(now=now, local=local, title="t", running=[], upcoming=[], failures=[],
                 log_lines=["x" * 200], columns=40, rows=30)
    assert max(len(line) for line in cut) == 39              # cut, never wrapped


# ------------------------------------------------------- optional commands


def test_optional_commands_register_or_say_which_extra_they_need(tmp_path, monkeypatch,
                                                                  capsys, root_logging):
    (tmp_path / "psl_fake_dashboard.py").write_text(textwrap.dedent("""
        def _show(args, config):
            print(f"dashboard on port {args.port}")
            return 0

        def register(subparsers):
            parser = subparsers.add_parser("dashboard", help="the web dashboard")
            parser.add_argument("--port", type=int, default=8765)
            parser.set_defaults(handler=_show)
    """))
    (tmp_path / "psl_fake_remote.py").write_text("import psl_no_such_broker_client\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    plugins = (("psl_fake_dashboard", "dashboard", "dashboard"),
               ("psl_fake_remote", "serve", "remote"),
               ("psl_not_installed_at_all", "other", "other"))
    assert main(["dashboard", "--port", "9000"], plugins=plugins) == 0
    assert capsys.readouterr().out == "dashboard on port 9000\n"
    assert main(["serve", "--broker", "amqp://x"], plugins=plugins) == 2
    err = capsys.readouterr().err
    assert "'pysched serve' needs the 'remote' extra" in err
    assert "pip install '.[remote]' in the pysched_lightning project's folder" in err
    assert sys.prefix in err and "psl_no_such_broker" in err  # the environment to install in
    parser, missing = build_parser(plugins)
    helptext = parser.format_help()
    assert "dashboard" in helptext and "serve" in helptext and "other" not in helptext
    assert set(missing) == {"serve"}
    assert main(["other"], plugins=plugins) == 2
    assert "invalid choice: 'other'" in capsys.readouterr().err


def test_pysched_works_without_the_optional_parts(tmp_path):
    import subprocess
    result = subprocess.run([sys.executable, "-m", "pysched_lightning", "--help"],
                            capture_output=True, text=True, cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": os.path.dirname(
                                os.path.dirname(os.path.abspath(psl.__file__)))})
    assert result.returncode == 0, result.stderr
    assert "run" in result.stdout and "history" in result.stdout
