"""What ``pysched`` shows people, checked against a real ``pysched run``:
its log lines, ``history``, ``list``, the live ``--status`` screen (through
a real pseudo-terminal) and the quick start's time stamps.

No fixed sleeps: every wait is a condition with a deadline.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from datetime import datetime
from pathlib import Path

import pytest

from cli_support import REPO, Daemon, pysched, write_config, write_job
from conftest import wait_for
from pysched_lightning.records.protocols import ERROR, MISSED, RUN_FIELDS, RUNNING
from pysched_lightning.durability.stores import open_store

POLL = 0.05
_STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")
LONG_LINE = ("cp: cannot create regular file '/var/backups/nightly/db-2026-11-30.tar.gz': "
             "No space left on device (needed 12 GiB, 3 GiB free on /var/backups, see "
             "df -h; old archives are kept 30 days) END-OF-LINE")
SLOW_FAIL_STDERR = [f"warning {i}: slow disk" for i in range(1, 8)] + \
    ["fatal: cannot reach db.example:5432"]


def _stored(tmp, task_id=None):
    with open_store(str(Path(tmp) / "state" / "pysched.db")) as store:
        return store.runs(task_id)


@pytest.fixture(scope="module")
def overlap_run(tmp_path_factory):
    """``pysched run --status`` (stdout a file) with a job that runs 2.5 s every
    second and fails, a job that succeeds, one that fails with a long line.
    While the slow job runs, ``pysched list`` is taken."""
    tmp = tmp_path_factory.mktemp("overlap")
    write_config(tmp / "p.ini", fail=5, check=1, sleep=1, level="INFO")
    mark = tmp / "slow.running"
    complaints = "".join(f'echo "{line}" >&2\n' for line in SLOW_FAIL_STDERR)
    write_job(tmp / "jobs" / "1s" / "slow_fail.sh",
              f'echo $$ > "{mark}"\necho progress\n{complaints}'
              f'sleep 2.5\nrm -f "{mark}"\nexit 4')
    write_job(tmp / "jobs" / "1s" / "ok.sh", "echo ok")
    write_job(tmp / "jobs" / "2s" / "long_err.sh",
              f"echo '+ cp db.tar /var/backups' >&2\necho \"{LONG_LINE}\" >&2\nexit 2")
    stdout_path = tmp / "stdout.txt"
    with open(stdout_path, "w") as stdout, \
            Daemon(tmp, "-c", "p.ini", "--status", stdout=stdout) as daemon:
        listed = None
        while listed is None:  # a listing taken wholly while one run went on
            wait_for(lambda: mark.exists() and mark.read_text().strip(), 15, POLL)
            pid = mark.read_text().strip()
            result = pysched("list", "--json", "-c", "p.ini", cwd=tmp)
            table = pysched("list", "-c", "p.ini", cwd=tmp)
            if mark.exists() and mark.read_text().strip() == pid:
                listed = (result, table)

        def enough():
            runs = _stored(tmp, "1s/slow_fail.sh")
            failed = [r for r in runs if r["status"] == ERROR]
            missed = [r for r in runs if r["status"] == MISSED and r["count"] >= 2]
            return len(failed) >= 2 and len(missed) >= 2
        wait_for(enough, 30, POLL)
        code = daemon.stop(signal.SIGTERM)
    return {"tmp": tmp, "code": code, "stderr": daemon.stderr, "pid": daemon.proc.pid,
            "stdout": stdout_path.read_text(), "listed_json": listed[0],
            "listed_table": listed[1], "runs": _stored(tmp)}


def test_run_exits_cleanly(overlap_run):
    assert overlap_run["code"] == 0, overlap_run["stderr"]


def test_one_line_per_job_at_start(overlap_run):
    lines = overlap_run["stderr"].splitlines()
    assert "pysched: jobs " in lines[0] and "; times in " in lines[0]
    first_run = next(i for i, line in enumerate(lines) if " run 1: " in line)
    starts = [line for line in lines[:first_run] if re.search(r"INFO job \S+: every ", line)]
    assert len(starts) == 3
    for job, every in (("1s/ok.sh", "every 1 s"), ("1s/slow_fail.sh", "every 1 s"),
                       ("2s/long_err.sh", "every 2 s")):
        [line] = [s for s in starts if f"job {job}: " in s]
        assert f"job {job}: {every}, next run 20" in line
        assert re.search(r"\((in \d+ \w+|now)\)$", line), line


def test_one_line_per_finished_run(overlap_run):
    text = overlap_run["stderr"]
    logged = re.findall(r"(?:INFO|WARNING|ERROR) job (\S+) run (\d+): ", text)
    stored = [(r["task_id"], str(r["run"])) for r in overlap_run["runs"]
              if r["status"] not in (MISSED, RUNNING)]
    assert sorted(logged) == sorted(stored)                # each finished run, once
    ok = [line for line in text.splitlines() if "job 1s/ok.sh run " in line]
    assert ok and all(" INFO job 1s/ok.sh run " in line and ": Completed in " in line
                      and line.endswith(", exit code 0") for line in ok)


def test_a_failed_command_logs_its_exit_code_and_stderr_tail_not_a_traceback(overlap_run):
    text = overlap_run["stderr"]
    assert "Traceback" not in text and "commands.py" not in text and "CommandError" not in text
    lines = text.splitlines()
    failures = [i for i, line in enumerate(lines) if "ERROR job 1s/slow_fail.sh run " in line]
    assert len(failures) >= 2
    for i in failures:
        assert re.search(r": Error after \d+\.\d\ds, exit code 4", lines[i]), lines[i]
        assert lines[i].endswith("exit code 4; stderr (last 5 of 8 lines) below") or \
            re.search(r"exit code 4 \(\d+ overlapping runs? skipped while it ran\); "
                      r"stderr \(last 5 of 8 lines\) below$", lines[i])
        assert lines[i + 1:i + 6] == ["    " + line for line in SLOW_FAIL_STDERR[-5:]]
    long_err = [line for line in lines if "ERROR job 2s/long_err.sh run " in line]
    assert long_err and all(line.endswith("exit code 2; stderr (2 lines) below")
                            for line in long_err)
    # Nothing else: every line is a log line, or a stderr tail line under one.
    tails = sum(5 if "slow_fail" in line else 2 for line in lines
                if "ERROR job " in line and line.endswith(" below"))
    stamped = [line for line in lines if _STAMP.match(line)]
    assert len(lines) == len(stamped) + tails
    assert all(line.startswith("    ") for line in lines if not _STAMP.match(line))


def test_overlapping_runs_are_one_missed_record_with_a_count(overlap_run):
    runs = [r for r in overlap_run["runs"] if r["task_id"] == "1s/slow_fail.sh"]
    missed = [r for r in runs if r["status"] == MISSED]
    assert missed and all(r["reason"] == "previous run still going" and r["run"] == 0
                          for r in missed)
    assert any(r["count"] >= 2 for r in missed)
    assert not [r for r in overlap_run["runs"] if r["status"] == 4]   # never Canceled
    # Between two runs, one record: never two MISSED records in a row.
    statuses = [r["status"] for r in sorted(runs, key=lambda r: r["scheduled"])]
    assert all(not (a == MISSED and b == MISSED) for a, b in zip(statuses, statuses[1:]))
    text = overlap_run["stderr"]
    assert text.count("job 1s/slow_fail.sh: its run due at") == 1     # warned once
    counted = [int(n) for n in re.findall(
        r"job 1s/slow_fail\.sh run \d+: .*?\((\d+) overlapping runs? skipped", text)]
    total = sum(r["count"] for r in missed)
    last = max(missed, key=lambda r: r["scheduled"])["count"]
    assert counted and total - last <= sum(counted) <= total


def test_list_says_running_while_a_run_goes_on_and_who_holds_the_store(overlap_run):
    result, table = overlap_run["listed_json"], overlap_run["listed_table"]
    assert result.returncode == 0 and table.returncode == 0, result.stderr + table.stderr
    rows = {row["job"]: row for row in json.loads(result.stdout)}
    assert rows["1s/slow_fail.sh"]["last_status"] == "Running"
    assert rows["1s/slow_fail.sh"]["running"] is True
    line = next(line for line in table.stdout.splitlines() if line.startswith("1s/slow_fail"))
    assert " Running " in line and "Missed" not in line and "Canceled" not in line
    assert table.stdout.splitlines()[0].endswith(
        f"in use by a running scheduler (pid {overlap_run['pid']} on {socket.gethostname()})")


def test_list_after_the_run(overlap_run):
    tmp = overlap_run["tmp"]
    rows = {row["job"]: row for row in json.loads(
        pysched("list", "--json", "-c", "p.ini", cwd=tmp).stdout)}
    slow = rows["1s/slow_fail.sh"]
    assert slow["last_status"] == "Error" and slow["last_exit_code"] == 4
    assert slow["missed"] >= 2 and slow["running"] is False
    table = pysched("list", "-c", "p.ini", cwd=tmp).stdout.splitlines()
    assert table[0].endswith("not in use: no scheduler is running on it")
    header = next(line for line in table if line.startswith("JOB"))
    assert header.split() == ["JOB", "SCHEDULE", "NEXT", "RUN", "LAST", "RUN", "LAST",
                              "STATUS", "EXIT", "RUNS", "MISSED", "NOTE"]


@pytest.mark.parametrize("zone", ["America/New_York", "Asia/Kolkata"])
def test_list_names_the_zone_of_its_times(overlap_run, zone):
    tmp = overlap_run["tmp"]
    table = pysched("list", "-c", "p.ini", cwd=tmp, env={"TZ": zone}).stdout.splitlines()
    assert table[1].startswith(f"times: {zone} (")
    rows = json.loads(pysched("list", "--json", "-c", "p.ini", cwd=tmp).stdout)
    from zoneinfo import ZoneInfo
    for row in rows:
        local = datetime.fromisoformat(row["next_run"]).astimezone(ZoneInfo(zone))
        line = next(line for line in table if line.startswith(row["job"] + " "))
        assert local.strftime("%Y-%m-%d %H:%M:%S") in line


def test_list_never_calls_a_job_gone_because_no_jobs_folder_was_given(overlap_run,
                                                                       tmp_path):
    tmp = overlap_run["tmp"]
    store = tmp / "state" / "pysched.db"
    elsewhere = pysched("list", "--json", "-s", store, cwd=tmp_path)   # no ./jobs here
    assert "does not exist (give it with -t)" in elsewhere.stderr
    rows = json.loads(elsewhere.stdout)
    assert len(rows) == 3 and not any(row["in_folder"] for row in rows)
    assert not any("gone" in (row["note"] or "") for row in rows)
    script = tmp / "jobs" / "2s" / "long_err.sh"
    body = script.read_text()
    script.unlink()
    try:
        rows = {row["job"]: row for row in json.loads(
            pysched("list", "--json", "-s", store, cwd=tmp_path).stdout)}
    finally:
        write_job(script, body.split("\n", 1)[1].rstrip("\n"))
    assert rows["2s/long_err.sh"]["note"] == "script gone; dropped at the next start"
    assert not rows["1s/ok.sh"]["note"] or "gone" not in rows["1s/ok.sh"]["note"]


def test_history_shows_missed_runs_exit_codes_and_the_useful_stderr_line_whole(overlap_run):
    tmp = overlap_run["tmp"]
    result = pysched("history", "-n", "0", "-c", "p.ini", cwd=tmp)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("times: ")
    long_rows = [line for line in lines if " 2s/long_err.sh " in line]
    assert long_rows and all(re.search(r" 2 +" + re.escape(LONG_LINE) + "$", line)
                             for line in long_rows)
    slow = [line for line in lines if " 1s/slow_fail.sh " in line]
    assert any(re.search(r" Error +\d\.\d\ds +4 +fatal: cannot reach db\.example:5432$", line)
               for line in slow)
    assert any(re.search(r" - +- +Missed +- +- +skipped \d+ times: previous run still going$",
                         line) for line in slow)


def test_history_wraps_to_the_terminal_and_never_cuts(overlap_run):
    tmp = overlap_run["tmp"]
    result = pysched("history", "2s/long_err.sh", "-n", "1", "-c", "p.ini", cwd=tmp,
                     env={"COLUMNS": "120"})
    lines = result.stdout.splitlines()
    assert all(len(line) <= 120 for line in lines) and len(lines) > 3
    start = lines[1].index("DETAIL")
    assert all(not line[:start].strip() for line in lines[3:])    # under DETAIL
    shown = "".join(line[start:] for line in lines[2:])
    assert shown.split() == LONG_LINE.split() or "".join(shown.split()) == \
        "".join(LONG_LINE.split())                              # a long path may break


def test_history_json_carries_everything_but_the_pickled_outcome(overlap_run):
    tmp = overlap_run["tmp"]
    runs = json.loads(pysched("history", "1s/slow_fail.sh", "-n", "0", "--json", "-c",
                              "p.ini", cwd=tmp).stdout)
    fields = set(RUN_FIELDS) - {"outcome"} | {"status_code"}
    assert all(set(run) == fields for run in runs)
    failed = next(run for run in runs if run["status"] == "Error")
    assert failed["status_code"] == ERROR and failed["exit_code"] == 4
    assert failed["stderr"] == "".join(line + "\n" for line in SLOW_FAIL_STDERR)
    assert failed["output"].startswith("progress\n") and "exit code 4" in failed["error"]
    assert failed["started"].endswith("+00:00") and failed["duration"] >= 2.5
    missed = next(run for run in runs if run["status"] == "Missed")
    assert missed["count"] >= 1 and missed["reason"] == "previous run still going"
    assert missed["started"] is None and missed["run"] == 0


def test_status_is_off_when_stdout_is_not_a_terminal(overlap_run):
    assert "\x1b" not in overlap_run["stdout"]
    assert "--status: standard output is not a terminal, so no live status" in \
        overlap_run["stderr"]


# ------------------------------------------------------ --status on a pty


def _set_size(fd, rows, columns):
    import fcntl
    import struct
    import termios
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))


def test_status_screen_on_a_terminal_is_redrawn_in_place(tmp_path):
    import pty
    write_config(tmp_path / "p.ini", fail=5, check=1, sleep=1, level="INFO")
    write_job(tmp_path / "jobs" / "1s" / "tick.sh", "echo tick")
    write_job(tmp_path / "jobs" / "1s" / "broken.sh", "echo 'no route to host' >&2\nexit 7")
    write_job(tmp_path / "jobs" / "1h" / "hourly.sh", "true")
    master, slave = pty.openpty()
    _set_size(slave, 30, 100)
    screen = bytearray()
    screen_lock = threading.Lock()

    def read():
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the last writer closed the terminal
                return
            if not chunk:
                return
            with screen_lock:
                screen.extend(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()

    def seen():
        with screen_lock:
            return screen.decode("utf-8", "replace")

    def complete_frames():  # each frame starts at the cursor's home; the last may be partial
        return seen().split("\x1b[?1049h", 1)[-1].split("\x1b[H")[1:-1]

    def drawn():
        frames = complete_frames()
        return frames and "Error  exit 7  no route to host" in frames[-1] \
            and "job 1s/broken.sh run 1: Error after" in frames[-1] and frames
    try:
        # stdout and stderr on one terminal, as when a person runs it.
        with Daemon(tmp_path, "-c", "p.ini", "--status", stdout=slave,
                    stderr=slave) as daemon:
            frames = wait_for(drawn, 20, POLL)
            assert daemon.stop() == 0
    finally:
        os.close(slave)
    wait_for(lambda: "stopped (store " in seen().rsplit("\x1b[?1049l", 1)[-1], 10, POLL)
    os.close(master)
    reader.join(5)
    text = seen()
    before, _, rest = text.partition("\x1b[?1049h\x1b[?25l")   # the alternate screen
    assert "INFO job 1s/broken.sh: every 1 s, next run" in before   # the start lines
    during, _, after = rest.partition("\x1b[?25h\x1b[?1049l")    # and back
    assert "SIGTERM: stopping" in after and "SIGTERM" not in during
    frame = frames[-1]
    for title in ("RUNNING NOW (", "NEXT 5 RUNS", "LAST FAILURES", "LOG"):
        assert title in frame
    upcoming = frame.split("NEXT 5 RUNS")[1].split("LAST FAILURES")[0]
    assert len(re.findall(r"\d\d:\d\d:\d\d  (?:in \d+ \w+|now) +1s/\w+\.sh", upcoming)) == 5
    rows = [re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", row).strip("\r")
            for row in frame.split("\n")]
    assert len(rows) <= 30 and all(len(row) < 100 for row in rows)
    assert len(frames) >= 2 and "Traceback" not in text


# ------------------------------------------------------------ quick start


def test_quickstart_stamps_cron_runs_at_their_second(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "examples" / "quickstart.py")],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    cron = [line for line in result.stdout.splitlines() if "cron: " in line]
    assert len(cron) >= 2
    for line in cron:
        stamp = datetime.strptime(line.split()[0], "%H:%M:%S.%f")
        assert stamp.second % 3 == 0, line      # never a second early
