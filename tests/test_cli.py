"""The ``pysched`` command, run as a real subprocess on real temporary folders.

No mocks and no fixed sleeps: each test waits for a condition (a line in the
JSON run log, a row in the store) with a deadline, and always stops the
processes it started.
"""
from __future__ import annotations

import json
import signal
import time

import pytest

import pysched_lightning as psl
from cli_support import (POLL, Daemon, logged, pysched, stamp, tasks, write_config,
                         write_job)
from cli_support import store_of  # noqa: F401  (a fixture)
from conftest import process_gone, wait_for
from pysched_lightning.cli import (FolderSchedule, parse_folder_name, parse_schedule_file,
                                   retry_policy, scan_jobs)
from pysched_lightning.cli.config import ConfigError, load_config
from pysched_lightning.durability.stores import open_store
from pysched_lightning.records.protocols import INTERRUPTED

# ----------------------------------------------------- parsing (in-process)


@pytest.mark.parametrize("name, trigger, interval", [
    ("30s", "recur", 30),
    ("1s", "recur", 1),
    ("5min", "recur", 300),
    ("5m", "recur", 300),
    ("2h", "recur", 7200),
    ("1d", "recur", 86400),
    ("1w", "recur", 604800),
    ("90s", "recur", 90),
    ("010s", "recur", 10),
    ("@hourly", "cron", "@hourly"),
    ("@daily", "cron", "@daily"),
    ("@midnight", "cron", "@midnight"),
    ("@weekly", "cron", "@weekly"),
    ("@monthly", "cron", "@monthly"),
    ("@yearly", "cron", "@yearly"),
    ("@annually", "cron", "@annually"),
])
def test_valid_folder_names(name, trigger, interval):
    assert parse_folder_name(name) == FolderSchedule(trigger, interval, name)


@pytest.mark.parametrize("name, says", [
    ("0s", "positive"),
    ("0min", "positive"),
    ("-5s", "not a schedule"),
    ("5", "not a schedule"),
    ("min", "not a schedule"),
    ("5 min", "not a schedule"),
    ("5mins", "not a schedule"),
    ("5sec", "not a schedule"),
    ("1.5h", "not a schedule"),
    ("5y", "not a schedule"),
    ("5MIN", "lower case"),
    ("@Hourly", "lower case"),
    ("@reboot", "not a schedule"),
    ("@every", "not a schedule"),
    ("hourly", "not a schedule"),
    ("", "not a schedule"),
    ("99999w", "10 years"),
])
def test_invalid_folder_names(name, says):
    with pytest.raises(ValueError, match=says):
        parse_folder_name(name)


def test_schedule_file(tmp_path):
    path = tmp_path / "schedule"
    path.write_text("# every 15 minutes\n\n  */15 * * * *  \n0 0 * * *\n")
    assert parse_schedule_file(str(path)) == FolderSchedule("cron", "*/15 * * * *",
                                                            "*/15 * * * *")
    path.write_text("@daily\n")
    assert parse_schedule_file(str(path)).interval == "@daily"
    path.write_text("90s\n")
    assert parse_schedule_file(str(path)) == FolderSchedule("recur", 90, "90s")
    for bad, says in [("# nothing\n\n", "no schedule"), ("61 * * * *\n", "minute"),
                      ("* * *\n", "3 fields"), ("@reboot\n", "reboot")]:
        path.write_text(bad)
        with pytest.raises(ValueError, match=says) as info:
            parse_schedule_file(str(path))
        assert str(path) in str(info.value)


@pytest.mark.parametrize("schedule, fail_minutes, retries", [
    (FolderSchedule("recur", 3600, "1h"), 5, 11),      # re-runs at +5 ... +55 min
    (FolderSchedule("recur", 60, "1min"), 0.01, 99),   # every 0.6 s, never on the slot
    (FolderSchedule("recur", 600, "10min"), 5, 1),
    (FolderSchedule("recur", 300, "5min"), 5, 0),      # the next slot comes first
    (FolderSchedule("recur", 30, "30s"), 5, 0),
    (FolderSchedule("cron", "@hourly", "@hourly"), 5, 11),
    (FolderSchedule("cron", "*/15 8-11 * * 1-5", "*/15 8-11 * * 1-5"), 5, 2),
    (FolderSchedule("cron", "* * * * * *", "* * * * * *"), 0.01, 1),
])
def test_retry_policy(schedule, fail_minutes, retries):
    assert retry_policy(schedule, fail_minutes) == (retries, fail_minutes * 60)


def test_scan_jobs(tmp_path):
    write_job(tmp_path / "30s" / "hello.sh", "echo hi")
    write_job(tmp_path / "30s" / "forgot_chmod.sh", "echo x", executable=False)
    (tmp_path / "30s" / "data.txt").write_text("not a script\n")
    (tmp_path / "30s" / "lib").mkdir()
    (tmp_path / "README.md").write_text("# my jobs\n")
    write_job(tmp_path / "30s" / ".hidden.sh", "echo hidden")
    write_job(tmp_path / "any name" / "report.sh", "echo report")
    (tmp_path / "any name" / "schedule").write_text("*/5 * * * *\n")
    write_job(tmp_path / "bogus" / "x.sh", "echo x")
    write_job(tmp_path / "top.sh", "echo top")
    jobs, problems = scan_jobs(str(tmp_path))
    assert sorted(jobs) == ["30s/hello.sh", "any name/report.sh"]
    assert jobs["30s/hello.sh"].schedule == FolderSchedule("recur", 30, "30s")
    assert jobs["any name/report.sh"].schedule.interval == "*/5 * * * *"
    assert jobs["any name/report.sh"].folder == str(tmp_path / "any name")
    text = "\n".join(problems)
    assert "forgot_chmod.sh: not executable" in text and "'bogus' is not a schedule" in text
    assert "top.sh" in text
    assert not any(word in text for word in ("hidden", "data.txt", "lib", "README"))


def test_config_defaults_and_relative_paths(tmp_path):
    config = load_config(None)
    assert (config.jobs_folder, config.logs_folder, config.persistence_file) == \
        ("jobs", "logs", "pysched.db")
    assert (config.sleep_duration, config.check_for_new_jobs_every,
            config.job_fail_timeout_period_minutes) == (1, 15, 5)
    path = tmp_path / "conf" / "p.ini"
    path.parent.mkdir()
    path.write_text("[timings]\njob_fail_timeout_period_minutes = 0.05 ; 3 s\n"
                    "[Folders]\nJOBS_FOLDER_DEFAULT = my jobs\nLOGS_FOLDER_DEFAULT = /var/x\n"
                    "[Logging]\nLOG_LEVEL = warning\n")
    config = load_config(path)
    assert config.job_fail_timeout_period_minutes == 0.05
    assert config.jobs_folder == str(tmp_path / "conf" / "my jobs")
    assert config.logs_folder == "/var/x" and config.log_level == 30


# ----------------------------------------------------------- usage errors


@pytest.mark.parametrize("text, section, key, says", [
    ("[Timings]\nSLEEP_DURATON = 1\n", "[Timings]", "SLEEP_DURATON", "unknown key"),
    ("[Timings]\nCHECK_FOR_NEW_JOBS_EVERY = soon\n", "[Timings]",
     "CHECK_FOR_NEW_JOBS_EVERY", "not a number"),
    ("[Timings]\nJOB_FAIL_TIMEOUT_PERIOD_MINUTES = -1\n", "[Timings]",
     "JOB_FAIL_TIMEOUT_PERIOD_MINUTES", "positive"),
    ("[Logging]\nLOG_LEVEL = LOUD\n", "[Logging]", "LOG_LEVEL", "not a log level"),
    ("[Folders]\nPERSISTENCE_FILE =\n", "[Folders]", "PERSISTENCE_FILE", "empty"),
    ("[Timings]\nSLEEP_DURATION = 1\nsleep_duration = 2\n", "[Timings]",
     "sleep_duration", "twice"),
    ("[Timing]\nSLEEP_DURATION = 1\n", "[Timing]", "", "unknown section"),
])
def test_bad_config_is_a_clear_error_with_exit_code_2(tmp_path, text, section, key, says):
    (tmp_path / "jobs").mkdir()
    path = tmp_path / "bad.ini"
    path.write_text(text)
    result = pysched("run", "-c", path, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert str(path) in result.stderr and section in result.stderr
    assert key in result.stderr and says in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert not (tmp_path / "pysched.db").exists()
    with pytest.raises(ConfigError):
        load_config(path)


@pytest.mark.parametrize("args, says", [
    ([], "required"),
    (["run", "-c", "missing.ini"], "cannot read the config file"),
    (["run", "-t", "no-such-folder"], "does not exist"),
    (["run", "--grace", "-1"], "--grace"),
    (["frobnicate"], "invalid choice"),
    (["history", "5min/nope.sh"], "no job or task '5min/nope.sh'"),
])
def test_usage_errors_exit_2(tmp_path, args, says):
    open_store(str(tmp_path / "pysched.db")).close()  # (history reads it)
    result = pysched(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert says in result.stderr and "Traceback" not in result.stderr


# ------------------------------------------------------------------ the store


STORE_FORMS = ["path", "sqlite:/// relative", "sqlite://// absolute"]


def _spelled(form, path, cwd):
    """*path* (in *cwd*) as the --store *form* writes it."""
    return {"path": str(path), "sqlite:/// relative": f"sqlite:///{path.relative_to(cwd)}",
            "sqlite://// absolute": f"sqlite:///{path}"}[form]


@pytest.mark.parametrize("form", STORE_FORMS)
@pytest.mark.parametrize("command", ["list", "history", "dashboard"])
def test_reading_a_store_that_is_not_there_names_it_and_creates_nothing(tmp_path, command,
                                                                       form):
    where = tmp_path / "state" / "jobs.db"
    result = pysched(command, "-s", _spelled(form, where, tmp_path), cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert f"no store at {where} " in result.stderr and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []  # no folder 'sqlite:', no state/, no file


@pytest.mark.parametrize("form", STORE_FORMS)
def test_every_store_form_is_the_same_file_for_the_library_and_the_commands(tmp_path, form,
                                                                           monkeypatch):
    monkeypatch.chdir(tmp_path)
    where = tmp_path / "state" / "jobs.db"
    where.parent.mkdir()
    sched = psl.Scheduler(store=_spelled(form, where, tmp_path))
    sched.delay('once', 3600, 1, print, task_id='stored')
    sched.shutdown()
    listed = pysched("list", "-s", _spelled(form, where, tmp_path), "-t", tmp_path,
                     cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith(f"store: {where}, ") and "stored" in listed.stdout
    history = pysched("history", "-s", _spelled(form, where, tmp_path), cwd=tmp_path)
    assert history.returncode == 0, history.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state"]


def test_run_refuses_a_store_in_a_missing_folder_and_creates_nothing(tmp_path):
    (tmp_path / "jobs").mkdir()
    missing = tmp_path / "no" / "such"
    result = pysched("run", "-s", f"sqlite:///{missing}/jobs.db", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert f"its folder {str(missing)!r} does not exist" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jobs"]  # no store, no logs/


def test_run_in_a_folder_it_may_not_write_says_permission_denied_once(tmp_path,
                                                                     unwritable_folder):
    (tmp_path / "jobs").mkdir()
    result = pysched("run", "-s", unwritable_folder / "jobs.db", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("cannot open the store") == 1, result.stderr
    assert "permission denied" in result.stderr and str(unwritable_folder) in result.stderr


# ----------------------------------------------------- pysched run for real


def test_sigterm_stops_cleanly_and_state_is_saved(tmp_path, store_of):
    write_config(tmp_path / "p.ini")
    write_job(tmp_path / "jobs" / "1s" / "hello.sh", 'echo "hello from $(basename "$PWD")"')
    claims = tmp_path / "state" / "pysched.db"
    with Daemon(tmp_path, "-c", "p.ini") as daemon:
        def claimed():
            if not claims.exists():
                return 0
            with open_store(str(claims)) as store:
                return len(store.runs("1s/hello.sh"))
        wait_for(lambda: claimed() >= 2, 10, POLL)
        assert daemon.stop(signal.SIGTERM) == 0, daemon.stderr
    assert "Traceback" not in daemon.stderr and "SIGTERM: stopping" in daemon.stderr
    log = logged(tmp_path, "1s/hello.sh")
    assert len(log) >= 2 and all(r["status"] == "Completed" and r["output"] == "hello from 1s\n"
               and r["exit_code"] == 0 for r in log)

    store = store_of(tmp_path)
    assert store.holder() is None                       # the hold was released
    record = tasks(store)["1s/hello.sh"]
    assert record.runs == len(log) and record.next_run > time.time() - 5
    assert record.trigger == "recur" and json.loads(record.interval) == 1
    stored = {(r["slot"], r["attempt"]): r for r in store.runs("1s/hello.sh")}
    assert len(stored) == len(log)
    for line in log:                                    # the run log and the store agree
        run = stored[(line["slot"], line["attempt"])]
        assert run["status"] == 0 and run["output"] == line["output"]

    history = pysched("history", "--json", "-c", "p.ini", cwd=tmp_path)
    assert history.returncode == 0, history.stderr
    runs = json.loads(history.stdout)
    assert len(runs) == len(log) and {r["task_id"] for r in runs} == {"1s/hello.sh"}
    assert runs[0]["status"] == "Completed" and runs[0]["output"] == "hello from 1s\n"
    assert runs[0]["started"].endswith("+00:00") and runs[0]["started"] >= runs[1]["started"]
    one = json.loads(pysched("history", "./1s/hello.sh", "-n", "1", "--json", "-c", "p.ini",
                             cwd=tmp_path).stdout)
    assert one == runs[:1]
    by_path = pysched("history", tmp_path / "jobs" / "1s" / "hello.sh", "-n", "1", "--json",
                      "-c", "p.ini", cwd=tmp_path)
    assert json.loads(by_path.stdout) == runs[:1]
    table = pysched("history", "-c", "p.ini", cwd=tmp_path).stdout
    assert "STATUS" in table and "1s/hello.sh" in table and "Completed" in table

    write_job(tmp_path / "jobs" / "5min" / "later.sh", "true")  # not run yet
    listed = pysched("list", "--json", "-c", "p.ini", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    jobs = {row["job"]: row for row in json.loads(listed.stdout)}
    assert set(jobs) == {"1s/hello.sh", "5min/later.sh"}
    hello, later = jobs["1s/hello.sh"], jobs["5min/later.sh"]
    assert (hello["schedule"], hello["trigger"], hello["interval"]) == ("every 1 s", "recur", 1)
    assert hello["last_status"] == "Completed" and hello["runs"] == len(log)
    assert hello["in_store"] and hello["next_run"].endswith("+00:00")
    assert later["in_folder"] and not later["in_store"] and later["next_run"] is None
    table = pysched("list", "-c", "p.ini", cwd=tmp_path).stdout
    assert "NEXT RUN" in table and "5min/later.sh" in table and "not scheduled" in table


@pytest.fixture(scope="module")
def interrupted_run(tmp_path_factory):
    """SIGTERM while a job sleeps for a minute, with a 0.3 s grace period."""
    tmp = tmp_path_factory.mktemp("grace")
    write_config(tmp / "p.ini")
    pid_file = tmp / "slow.pid"
    write_job(tmp / "jobs" / "1s" / "slow.sh", f'echo $$ > "{pid_file}"\nsleep 60')
    with Daemon(tmp, "-c", "p.ini", "--grace", "0.3") as daemon:
        wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), 10, POLL)
        began = time.monotonic()
        code = daemon.stop(signal.SIGTERM)
        took = time.monotonic() - began
    store = open_store(str(tmp / "state" / "pysched.db"))
    try:
        runs = store.runs("1s/slow.sh")
    finally:
        store.close()
    return {"code": code, "took": took, "pid": int(pid_file.read_text()), "runs": runs,
            "log": logged(tmp, "1s/slow.sh"), "stderr": daemon.stderr}


def test_sigterm_kills_a_running_job_after_the_grace_period(interrupted_run):
    assert interrupted_run["code"] == 0, interrupted_run["stderr"]
    assert interrupted_run["took"] < 8
    assert "shutdown: interrupted task '1s/slow.sh' run 1" in interrupted_run["stderr"]

    wait_for(lambda: process_gone(interrupted_run["pid"]), 5, POLL)


def test_interrupted_run_is_recorded_interrupted_not_timeout(interrupted_run):
    """A run that SIGTERM's grace cut short was recorded Timeout
    (its own timeout never passed)."""
    first = next(r for r in interrupted_run["runs"] if r["run"] == 1)
    assert first["status"] == INTERRUPTED and first["finished"] is not None
    assert "interrupted: the scheduler shut down" in first["error"]
    [logged_run] = [r for r in interrupted_run["log"] if r["run"] == 1]
    assert logged_run["status"] == "Interrupted"


def test_sigterm_logs_one_warning_per_interrupted_run_not_an_error(interrupted_run):
    """A normal SIGTERM stop logged an ERROR and three WARNINGs
    for the run it interrupted."""
    lines = interrupted_run["stderr"].splitlines()
    assert not [line for line in lines if " ERROR " in line or " CRITICAL " in line]
    about_run = [line for line in lines if " WARNING " in line and "run 1" in line]
    assert len(about_run) == 1, lines
    # (the job retries a failed run: the run after the next start, it says)
    assert (" WARNING pysched_lightning: shutdown: interrupted task '1s/slow.sh' run 1 "
            "attempt 1, still going after shutdown's timeout; its retry is left to the "
            "next start") in about_run[0]


def test_a_shell_job_dies_with_a_sigkilled_pysched_run(tmp_path):
    """SIGKILL while a job's shell sleeps: the shell and its ``sleep`` die
    too, not left running under init (a restart would run a second copy)."""
    import os

    write_config(tmp_path / "p.ini")
    pids = tmp_path / "pids"
    write_job(tmp_path / "jobs" / "1s" / "slow.sh",
              f'sleep 20 & echo $$ $! > "{pids}.tmp"; mv "{pids}.tmp" "{pids}"; wait')
    with Daemon(tmp_path, "-c", "p.ini") as daemon:
        wait_for(pids.exists, 10, POLL)
        assert daemon.stop(signal.SIGKILL) == -signal.SIGKILL
    shell, sleep = (int(pid) for pid in pids.read_text().split())

    try:
        wait_for(lambda: process_gone(shell) and process_gone(sleep), 10, POLL)
    finally:
        for pid in (shell, sleep):
            if not process_gone(pid):
                os.kill(pid, signal.SIGKILL)


def test_rescan_picks_up_new_changed_and_removed_scripts(tmp_path, store_of):
    write_config(tmp_path / "p.ini", check=0.01)        # rescan every 0.6 s
    jobs = tmp_path / "jobs"
    a = write_job(jobs / "1s" / "a.sh", "echo a")
    write_job(jobs / "fast" / "c.sh", "echo c")
    (jobs / "fast" / "schedule").write_text("# every second\n* * * * * *\n")
    store = store_of(tmp_path)

    def started(task_id, after=0.0):
        # A run's row is in the store before the run starts (its claim).
        return [r for r in store.runs(task_id) if (r["started"] or 0) > after]

    with Daemon(tmp_path, "-c", "p.ini") as daemon:
        wait_for(lambda: started("1s/a.sh"), 10, POLL)
        assert json.loads(tasks(store)["fast/c.sh"].interval) == "* * * * * *"

        write_job(jobs / "1s" / "b.sh", "echo b")                        # new
        wait_for(lambda: started("1s/b.sh"), 10, POLL)

        (jobs / "fast" / "schedule").write_text("*/2 * * * * *\n")       # changed
        wait_for(lambda: json.loads(tasks(store)["fast/c.sh"].interval) == "*/2 * * * * *",
                 10, POLL)

        a.unlink()                                                        # removed
        wait_for(lambda: "1s/a.sh" not in tasks(store), 10, POLL)
        removed_at = time.time()
        wait_for(lambda: len(started("1s/b.sh", removed_at)) >= 2, 10, POLL)
        assert daemon.proc.poll() is None, daemon.stderr
        assert daemon.stop() == 0
    assert started("1s/a.sh") and not started("1s/a.sh", removed_at)
    assert logged(tmp_path, "1s/b.sh")
    assert "job 1s/b.sh: added" in daemon.stderr and "job 1s/a.sh: removed" in daemon.stderr
    assert "job fast/c.sh: changed" in daemon.stderr


@pytest.fixture(scope="module")
def flaky_run(tmp_path_factory):
    """A job that fails once, then succeeds, with a 0.6 s fail period."""
    tmp = tmp_path_factory.mktemp("flaky")
    write_config(tmp / "p.ini", fail=0.01)
    count = tmp / "count"
    write_job(tmp / "jobs" / "3s" / "flaky.sh",
              f'n=$(( $(cat "{count}" 2>/dev/null || echo 0) + 1 )); echo $n > "{count}"\n'
              'if [ $n -eq 1 ]; then echo "first attempt fails" >&2; exit 3; fi\n'
              'echo "attempt $n ok"')
    with Daemon(tmp, "-c", "p.ini") as daemon:
        wait_for(lambda: count.exists() and count.read_text().strip() == "2", 15, POLL)
        assert daemon.stop() == 0, daemon.stderr      # the re-run is over: it was quick
    store = open_store(str(tmp / "state" / "pysched.db"))
    try:
        runs = store.runs("3s/flaky.sh")
    finally:
        store.close()
    return {"log": logged(tmp, "3s/flaky.sh"), "runs": runs, "count": count.read_text(),
            "stderr": daemon.stderr, "started": daemon.started}


def test_failed_job_is_rerun_after_the_fail_period(flaky_run):
    assert int(flaky_run["count"]) >= 2
    done = next(r for r in flaky_run["log"] if r["status"] == "Completed")
    assert done["attempt"] == 2 and done["run"] == 1 and done["output"] == "attempt 2 ok\n"
    first = next(r for r in flaky_run["runs"] if r["attempt"] == 1 and r["run"] == 1)
    gap = stamp(done["started"]) - first["started"]
    # Re-run after JOB_FAIL_TIMEOUT_PERIOD_MINUTES (0.6 s), well before the next
    # normal slot (3 s after the first).
    assert 0.55 <= gap < 2.5, gap
    assert "job 3s/flaky.sh run 1 attempt 1: Error after " in flaky_run["stderr"]
    assert ", exit code 3: first attempt fails; retrying in 0.6 s" in flaky_run["stderr"]
    assert "job 3s/flaky.sh run 1 attempt 2: Completed in " in flaky_run["stderr"]


def test_failed_attempt_is_visible_in_the_run_log(flaky_run):
    failed = [r for r in flaky_run["log"] if r["attempt"] == 1 and r["run"] == 1]
    assert failed and failed[0]["status"] == "Error" and failed[0]["exit_code"] == 3
    first = next(r for r in flaky_run["runs"] if r["attempt"] == 1 and r["run"] == 1)
    assert first["status"] == 1 and "first attempt fails" in first["stderr"]


def test_nuke_clears_the_store(tmp_path, store_of):
    write_config(tmp_path / "p.ini")
    write_job(tmp_path / "jobs" / "1s" / "hello.sh", "echo hello")
    store = store_of(tmp_path)
    with Daemon(tmp_path, "-c", "p.ini") as daemon:
        wait_for(lambda: store.runs("1s/hello.sh"), 10, POLL)
        assert daemon.stop() == 0, daemon.stderr
    old = store.runs()
    assert old and tasks(store)["1s/hello.sh"].runs >= 1

    with Daemon(tmp_path, "-c", "p.ini", "--nuke") as daemon:
        wait_for(lambda: tasks(store).get("1s/hello.sh")
                 and tasks(store)["1s/hello.sh"].created >= daemon.started, 10, POLL)
        wait_for(lambda: store.runs(), 10, POLL)
        assert daemon.stop() == 0, daemon.stderr
    assert "--nuke: cleared the store" in daemon.stderr
    runs = store.runs()
    assert runs and all(r["started"] >= daemon.started for r in runs)
    assert not {(r["scheduled"], r["attempt"]) for r in old} & \
        {(r["scheduled"], r["attempt"]) for r in runs}
    assert tasks(store)["1s/hello.sh"].runs == len(runs)


def test_sigkill_then_restart_runs_the_missed_slot_once(tmp_path, store_of):
    write_config(tmp_path / "p.ini")
    write_job(tmp_path / "jobs" / "2s" / "tick.sh", "echo tick")
    store = store_of(tmp_path)
    with Daemon(tmp_path, "-c", "p.ini") as daemon:
        wait_for(lambda: store.runs("2s/tick.sh"), 10, POLL)   # the first run was claimed
        assert daemon.stop(signal.SIGKILL) == -signal.SIGKILL
    missed_slot = tasks(store)["2s/tick.sh"].next_run
    # Down for two slots: missed_slot and the one after it.
    wait_for(lambda: time.time() > missed_slot + 2.2, 10, POLL)

    with Daemon(tmp_path, "-c", "p.ini") as daemon:
        def after_restart():
            return [r for r in store.runs("2s/tick.sh")
                    if r["started"] is not None and r["started"] >= daemon.started]
        wait_for(lambda: after_restart(), 10, POLL)
        [caught_up] = after_restart()
        # It ran at once, for the slot that passed while the process was down
        # (a run waiting for the next fresh slot would carry that slot)...
        assert caught_up["slot"] == f"{missed_slot:.3f}"
        # ...once: the next run is the next slot on the grid, not another missed one.
        wait_for(lambda: len(after_restart()) >= 2, 10, POLL)
        following = sorted(after_restart(), key=lambda r: r["scheduled"])[1]
        assert following["scheduled"] > daemon.started
        assert daemon.stop() == 0, daemon.stderr
    assert tasks(store)["2s/tick.sh"].missed >= 1
    assert "Traceback" not in daemon.stderr
    assert "job 2s/tick.sh: every 2 s, next run at once (due " in daemon.stderr


def test_restart_keeps_unchanged_jobs_and_drops_removed_ones(tmp_path, store_of):
    write_config(tmp_path / "p.ini")
    write_job(tmp_path / "jobs" / "1h" / "idle.sh", "true")
    gone = write_job(tmp_path / "jobs" / "1h" / "gone.sh", "true")
    store = store_of(tmp_path)
    with Daemon(tmp_path, "-c", "p.ini") as daemon:
        wait_for(lambda: {"1h/idle.sh", "1h/gone.sh"} <= set(tasks(store)), 10, POLL)
        second = pysched("run", "-c", "p.ini", cwd=tmp_path)     # one store, one runner
        assert second.returncode == 1 and "in use by another scheduler" in second.stderr
        assert daemon.stop() == 0, daemon.stderr
    before = tasks(store)["1h/idle.sh"]

    gone.unlink()                                    # removed while pysched is down
    listed = {row["job"]: row for row in json.loads(
        pysched("list", "--json", "-c", "p.ini", cwd=tmp_path).stdout)}
    assert listed["1h/gone.sh"]["in_store"] and not listed["1h/gone.sh"]["in_folder"]

    with Daemon(tmp_path, "-c", "p.ini") as daemon:
        wait_for(lambda: "1h/gone.sh" not in tasks(store), 10, POLL)
        assert daemon.stop() == 0, daemon.stderr
    after = tasks(store)["1h/idle.sh"]               # the same definition: kept as stored
    assert (after.created, after.next_run) == (before.created, before.next_run)


# ------------------------------------------- a run a SIGKILL cut short: one story


def test_a_run_a_sigkill_cut_short_reads_interrupted_in_list_history_and_the_run_log(
        tmp_path, store_of):
    """`pysched run` SIGKILLed while a job runs, then restarted: the run reads
    Interrupted in the store, `list`, `history` (text and JSON) and the run
    log (once), and the restart's warning names it. No re-run is owed (a
    failure waits 6 s, after the next 5 s slot), so it stays the last run
    until that slot."""
    write_config(tmp_path / "p.ini", fail=0.1)
    write_job(tmp_path / "jobs" / "5s" / "slow.sh", "echo started; sleep 30")
    store = store_of(tmp_path)
    with Daemon(tmp_path, "-c", "p.ini") as daemon:
        wait_for(lambda: [r for r in store.runs("5s/slow.sh") if r["status"] == 3], 20, POLL)
        assert daemon.stop(signal.SIGKILL) == -signal.SIGKILL
    with Daemon(tmp_path, "-c", "p.ini") as daemon:
        [cut] = wait_for(lambda: [r for r in store.runs("5s/slow.sh") if r["status"] != 3],
                         20, POLL)
        assert daemon.stop() == 0, daemon.stderr
    assert (cut["run"], cut["attempt"], cut["status"]) == (1, 1, 7)  # TaskStatus.INTERRUPTED
    assert "task '5s/slow.sh' run 1 attempt 1 was interrupted" in daemon.stderr
    assert "Traceback" not in daemon.stderr

    listed = json.loads(pysched("list", "-c", "p.ini", "--json", cwd=tmp_path).stdout)
    assert [(j["job"], j["last_status"]) for j in listed] == [("5s/slow.sh", "Interrupted")]
    table = pysched("list", "-c", "p.ini", cwd=tmp_path).stdout
    assert "Interrupted" in table and "Error" not in table
    history = json.loads(pysched("history", "-c", "p.ini", "--json", cwd=tmp_path).stdout)
    assert [(r["run"], r["status"], r["status_code"]) for r in history] == [
        (1, "Interrupted", 7)]
    assert "Interrupted" in pysched("history", "-c", "p.ini", cwd=tmp_path).stdout
    assert [(r["run"], r["attempt"], r["status"]) for r in logged(tmp_path)] == [
        (1, 1, "Interrupted")]


def test_a_restart_with_a_changed_config_runs_the_missed_slot_and_numbers_on(
        tmp_path, store_of):
    """SIGKILLed, down for a slot, restarted with a changed config (its retry
    policy: the job's definition changes). The slot missed while down runs
    once at start, under the new definition; run numbers go on; the runs
    skipped while down are said to be due while no scheduler ran (not a
    stalled one)."""
    write_config(tmp_path / "p.ini")
    write_config(tmp_path / "q.ini", fail=0.02)
    write_job(tmp_path / "jobs" / "2s" / "tick.sh", "echo tick")
    store = store_of(tmp_path)
    with Daemon(tmp_path, "-c", "p.ini") as daemon:
        wait_for(lambda: len([r for r in store.runs("2s/tick.sh") if r["status"] == 0]) >= 2,
                 20, POLL)
        assert daemon.stop(signal.SIGKILL) == -signal.SIGKILL
    before = store.runs("2s/tick.sh")
    missed_slot = tasks(store)["2s/tick.sh"].next_run
    wait_for(lambda: time.time() > missed_slot + 2.2, 10, POLL)  # down for two slots

    with Daemon(tmp_path, "-c", "q.ini") as daemon:
        def after_restart():
            return [r for r in store.runs("2s/tick.sh")
                    if r["started"] is not None and r["started"] >= daemon.started]
        wait_for(lambda: len(after_restart()) >= 2, 20, POLL)
        assert daemon.stop() == 0, daemon.stderr
    assert "job 2s/tick.sh: every 2 s, next run at once (due " in daemon.stderr
    caught_up = min(after_restart(), key=lambda r: r["scheduled"])
    assert caught_up["slot"] == f"{missed_slot:.3f}"
    runs = [(r["run"], r["attempt"]) for r in store.runs("2s/tick.sh") if r["status"] != 6]
    assert len(runs) == len(set(runs)), runs  # no number used twice
    highest = max(r["run"] for r in before if r["status"] != 6)
    assert sorted(r["run"] for r in after_restart())[:2] == [highest + 1, highest + 2]
    skipped = [r for r in store.runs("2s/tick.sh") if r["status"] == 6]
    assert skipped and all("stalled" not in (r["reason"] or "") for r in skipped)
    assert any(r["reason"] == "the scheduler was not running" for r in skipped)
