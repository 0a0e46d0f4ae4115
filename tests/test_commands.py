"""Command tasks, with real processes: output, exit codes, timeouts, validation, pickling."""
from __future__ import annotations

import os
import pickle
import signal
import stat
import subprocess
import sys
import threading
import time

import cloudpickle
import psutil
import pytest

from conftest import process_gone
from pysched_lightning.records.context import RunContext, _set_current_run
from pysched_lightning.execution.commands import (Command, CommandError, CommandResult,
                                                  CommandTimeout, command)

PY = sys.executable


# -- helpers ----------------------------------------------------------------

def _wait_until(condition, timeout=10.0, what="condition"):
    """Wait for *condition()* to be true, failing after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def _assert_dies(pid, timeout=10.0):
    _wait_until(lambda: process_gone(pid), timeout, f"process {pid} to die")


def _open_fds():
    return set(os.listdir("/proc/self/fd"))


def _read_pid(path):
    """The pid a shell wrote to *path* (atomically, through a rename)."""
    _wait_until(path.exists, what=f"{path.name} to be written")
    return int(path.read_text().strip())


# -- commands: running ------------------------------------------------------

def test_command_success_returns_stdout():
    result = command([PY, "-c", "print('hello')"])()
    assert result == CommandResult(0, "hello\n", "")
    assert isinstance(result, tuple)


def test_failing_command_raises_with_exit_code_and_stderr():
    code = "import sys; sys.stderr.write('first line\\nlast words\\n'); sys.exit(3)"
    cmd = command([PY, "-c", code])
    with pytest.raises(CommandError) as info:
        cmd()
    err = info.value
    assert isinstance(err, RuntimeError)
    assert err.result.exit_code == 3
    assert err.result.error == "first line\nlast words\n"
    message = str(err)
    assert "exit code 3" in message
    assert "last words" in message
    assert cmd.name in message


def test_command_killed_by_signal_is_an_error():
    with pytest.raises(CommandError) as info:
        command(["sh", "-c", "kill -9 $$"])()
    assert info.value.result.exit_code == -9
    assert "SIGKILL" in str(info.value)


def test_string_is_split_with_shlex_without_a_shell():
    result = command("printf '%s|' 'a b' \"c d\" e")()
    assert result.output == "a b|c d|e|"


def test_shell_true_runs_pipelines():
    result = command("printf 'x\\ny\\nz\\n' | wc -l", shell=True)()
    assert result.output.strip() == "3"


def test_list_with_shell_true_is_quoted_with_shlex_join():
    cmd = command(["echo", "a;b", "$HOME"], shell=True)
    assert cmd.cmd == "echo 'a;b' '$HOME'"
    assert cmd().output == "a;b $HOME\n"


def test_env_is_merged_over_the_environment(monkeypatch):
    monkeypatch.setenv("PSL_PARENT", "from-parent")
    code = "import os; print(os.environ['PSL_PARENT'], os.environ['PSL_CHILD'])"
    result = command([PY, "-c", code], env={"PSL_CHILD": "from-env"})()
    assert result.output == "from-parent from-env\n"
    # Merged at run time: the stored command holds only the overrides.
    assert command([PY, "-c", code], env={"PSL_CHILD": "x"}).env == {"PSL_CHILD": "x"}


def test_env_path_is_used_to_find_the_program(tmp_path):
    prog = tmp_path / "psl-hello"
    prog.write_text("#!/bin/sh\necho hi from prog\n")
    prog.chmod(prog.stat().st_mode | stat.S_IXUSR)
    with pytest.raises(ValueError, match="psl-hello"):
        command("psl-hello")
    path = f"{tmp_path}{os.pathsep}{os.environ.get('PATH', os.defpath)}"
    assert command("psl-hello", env={"PATH": path})().output == "hi from prog\n"


def test_cwd(tmp_path):
    result = command([PY, "-c", "import os; print(os.getcwd())"], cwd=tmp_path)()
    assert os.path.realpath(result.output.strip()) == os.path.realpath(tmp_path)


def test_relative_program_path_is_resolved_against_cwd(tmp_path):
    prog = tmp_path / "run.sh"
    prog.write_text("#!/bin/sh\necho relative ok\n")
    prog.chmod(0o755)
    assert command("./run.sh", cwd=tmp_path)().output == "relative ok\n"


def test_output_is_bounded_to_the_last_max_output_bytes():
    # 3 MiB of numbered 8-byte lines: only the last 1 MiB is kept.
    lines = 3 * (1 << 20) // 8
    code = ("import sys; w = sys.stdout.buffer.write\n"
            f"for i in range({lines}): w(b'%07d\\n' % i)")
    result = command([PY, "-c", code])()
    marker = f"[... {2 * (1 << 20)} bytes truncated ...]\n"
    assert result.output.startswith(marker)
    tail = result.output[len(marker):]
    assert len(tail) == 1 << 20
    kept = lines - (1 << 20) // 8
    assert tail == "".join("%07d\n" % i for i in range(kept, lines))


def test_stderr_is_bounded_too_and_the_cut_does_not_split_a_character():
    code = "import sys; sys.stderr.write('é' * 100)"  # 200 bytes
    result = command([PY, "-c", code], max_output=11)()
    head, tail = result.error.split("\n", 1)
    assert head == "[... 190 bytes truncated ...]"
    assert tail == "é" * 5
    assert result.output == ""


def test_undecodable_output_is_replaced():
    result = command([PY, "-c", "import sys; sys.stdout.buffer.write(b'ok\\xff')"])()
    assert result.output == "ok\ufffd"


# -- commands: timeouts and process groups ----------------------------------

def test_own_timeout_kills_the_process_group_with_grandchild(tmp_path):
    pids = tmp_path / "pids"
    line = (f"echo $$ > {pids}.tmp; sleep 100 & echo $! >> {pids}.tmp; "
            f"mv {pids}.tmp {pids}; sleep 100")
    cmd = command(["sh", "-c", line], timeout=1)
    with pytest.raises(CommandTimeout) as info:
        cmd()
    err = info.value
    assert isinstance(err, TimeoutError)
    assert err.timeout == 1
    assert err.result.exit_code == -15  # SIGTERM was enough
    assert "timed out after 1 s" in str(err)
    leader, grandchild = (int(p) for p in pids.read_text().split())
    _assert_dies(leader)
    _assert_dies(grandchild)


def _run_in_thread(cmd, ctx):
    """Run *cmd* in a thread as the scheduler would, with *ctx* as its run."""
    box = {}

    def target():
        _set_current_run(ctx)
        try:
            box["result"] = cmd()
        except BaseException as exc:  # noqa: B902 - the test inspects it
            box["error"] = exc
        finally:
            _set_current_run(None)

    thread = threading.Thread(target=target)
    thread.start()
    return thread, box


def test_run_context_timeout_kills_the_process_group(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    line = (f"sleep 100 & echo $! > {pid_file}.tmp; mv {pid_file}.tmp {pid_file}; "
            "sleep 100")
    ctx = RunContext("task-1", 1, timeout=5)
    thread, box = _run_in_thread(command(["sh", "-c", line]), ctx)
    grandchild = _read_pid(pid_file)
    assert not process_gone(grandchild)
    ctx._mark_timed_out()
    thread.join(10)
    assert not thread.is_alive()
    err = box["error"]
    assert isinstance(err, CommandTimeout)
    assert err.timeout is None
    assert "deadline" in str(err)
    _assert_dies(grandchild)
    # The callback was removed when the process ended.
    assert not ctx._callbacks


def test_timeout_escalates_to_sigkill_when_sigterm_is_ignored(tmp_path):
    ready = tmp_path / "ready"
    line = f"trap '' TERM; sleep 100 & touch {ready}; sleep 100"
    ctx = RunContext("task-1", 1)
    thread, box = _run_in_thread(command(["sh", "-c", line]), ctx)
    _wait_until(ready.exists, what="the shell to ignore SIGTERM")
    ctx._mark_timed_out()
    thread.join(10)
    assert not thread.is_alive()
    assert box["error"].result.exit_code == -9


def test_timeout_keeps_the_output_captured_so_far(tmp_path):
    ready = tmp_path / "ready"
    line = f"echo partial; echo oops >&2; touch {ready}; sleep 100"
    ctx = RunContext("task-1", 1)
    thread, box = _run_in_thread(command(["sh", "-c", line]), ctx)
    _wait_until(ready.exists, what="the output")
    ctx._mark_timed_out()
    thread.join(10)
    assert box["error"].result == CommandResult(-15, "partial\n", "oops\n")


def test_run_context_callback_is_removed_after_a_normal_run():
    ctx = RunContext("task-1", 1)
    thread, box = _run_in_thread(command(["true"]), ctx)
    thread.join(10)
    assert box["result"].exit_code == 0
    assert not ctx._callbacks


# A scheduler in a process of its own, running a shell command that starts a
# grandchild; both write their pids (through a rename), then it waits.
_SCHEDULER_WITH_A_SHELL_JOB = r"""
import sys, time
import pysched_lightning as psl
pids, then = sys.argv[1], sys.argv[2]
line = (f"echo $$ > {pids}.tmp; sleep 100 & echo $! >> {pids}.tmp; "
        f"mv {pids}.tmp {pids}; {then}; wait")
sched = psl.Scheduler()
sched.delay("once", 0, 1, psl.command(line, shell=True))
sched.start()
time.sleep(100)
"""


def _with_this_checkout():
    """The environment of a child process that imports this checkout."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [here, os.environ.get("PYTHONPATH")])))


def _scheduler_with_a_shell_job(tmp_path, then=":"):
    """The scheduler's process, in a session (and process group) of its own
    as a terminal's foreground job or a service's main process is, and the
    pids of the shell and of its grandchild once they run (then the shell
    runs *then*, and waits)."""
    pids = tmp_path / "pids"
    scheduler = subprocess.Popen([PY, "-c", _SCHEDULER_WITH_A_SHELL_JOB, str(pids), then],
                                 env=_with_this_checkout(), start_new_session=True)
    try:
        _wait_until(pids.exists, 30, "the shell job to start")
    except BaseException:
        scheduler.kill()
        scheduler.wait()
        raise
    return scheduler, [int(pid) for pid in pids.read_text().split()]


def _kill_leftovers(pids):
    for pid in pids:
        if not process_gone(pid):
            os.kill(pid, signal.SIGKILL)


def test_a_shell_job_and_its_child_die_with_a_sigkilled_scheduler(tmp_path):
    """SIGKILL leaves the scheduler no time to act: the guardian kills the
    command's process group, and the parent-death signal its leader."""
    scheduler, pids = _scheduler_with_a_shell_job(tmp_path)
    try:
        scheduler.kill()
        assert scheduler.wait(10) == -signal.SIGKILL
        for pid in pids:
            _assert_dies(pid)
    finally:
        _kill_leftovers(pids)


_SCHEDULER_KILLED_BY_ITS_COMMAND = r"""
import sys, time
import pysched_lightning as psl
sched = psl.Scheduler()
sched.delay("once", 0, 1, psl.command(f"sleep {sys.argv[1]} & kill -9 $PPID; wait",
                                      shell=True))
sched.start()
time.sleep(100)
"""


def test_a_shell_job_that_kills_its_scheduler_at_once_leaves_no_child_behind():
    """The scheduler dies the moment the command has started a child (the
    shell SIGKILLs it): the guardian was told of the command's group before
    the program ran, not after, when the child would have escaped it."""
    token = f"1000.{os.getpid()}{time.monotonic_ns() % 10 ** 9}"  # sleep's unique argument

    def left():
        found = []
        for process in psutil.process_iter(["cmdline", "status"]):
            if token in " ".join(process.info["cmdline"] or ()) \
                    and process.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(process)
        return found
    scheduler = subprocess.Popen([PY, "-c", _SCHEDULER_KILLED_BY_ITS_COMMAND, token],
                                 env=_with_this_checkout(), start_new_session=True)
    try:
        assert scheduler.wait(30) == -signal.SIGKILL
        _wait_until(lambda: not left(), 10, "the command's processes to die")
    finally:
        if scheduler.poll() is None:
            scheduler.kill()
            scheduler.wait()
        for process in left():
            process.kill()


def test_a_command_dies_with_its_scheduler_by_the_parent_death_signal_alone(tmp_path):
    """Without its guardian (killed first here; a command's group is told to
    it only once the program started), a command's leader still dies with
    the scheduler: the Linux parent-death signal, set before it started."""
    scheduler, pids = _scheduler_with_a_shell_job(tmp_path)
    try:
        guardians = [child for child in psutil.Process(scheduler.pid).children()
                     if "-S" in child.cmdline() and child.pid not in pids]
        assert len(guardians) == 1
        guardians[0].kill()
        _assert_dies(guardians[0].pid)  # (a zombie: the scheduler does not reap it)
        scheduler.kill()
        assert scheduler.wait(10) == -signal.SIGKILL
        _assert_dies(pids[0])  # the shell (its child is the guardian's to kill)
    finally:
        _kill_leftovers(pids)


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGQUIT], ids=["SIGHUP", "SIGQUIT"])
def test_a_shell_job_dies_with_a_scheduler_its_terminal_kills(tmp_path, signum):
    """A closed terminal sends SIGHUP (Ctrl-\\ sends SIGQUIT) to the whole
    foreground process group: it kills the scheduler, and must not kill the
    guardian with it, which kills the command's group, grandchildren
    included (they were left running, children of init)."""
    scheduler, pids = _scheduler_with_a_shell_job(tmp_path)
    try:
        os.killpg(scheduler.pid, signum)
        assert scheduler.wait(10) in (-signum, 128 + signum)
        for pid in pids:
            _assert_dies(pid)
    finally:
        _kill_leftovers(pids)


def test_run_already_timed_out_kills_the_command_at_once():
    ctx = RunContext("task-1", 1)
    ctx._mark_timed_out()
    thread, box = _run_in_thread(command(["sleep", "100"]), ctx)
    thread.join(10)
    assert not thread.is_alive()
    assert isinstance(box["error"], CommandTimeout)


def test_no_threads_or_fds_leak():
    threads, fds = threading.active_count(), _open_fds()
    command(["true"])()
    with pytest.raises(CommandError):
        command(["false"])()
    with pytest.raises(CommandTimeout):
        command(["sleep", "100"], timeout=0.1)()
    assert threading.active_count() == threads
    assert _open_fds() == fds


def test_background_process_holding_the_pipes_does_not_hang_the_run():
    threads, fds = threading.active_count(), _open_fds()
    result = command(["sh", "-c", "sleep 100 & echo $!"])()
    background = int(result.output.split()[0])
    try:
        assert result.exit_code == 0
        assert threading.active_count() == threads
        assert _open_fds() == fds
    finally:
        os.kill(background, 9)
    _assert_dies(background)


# -- commands: validation, pickling, display --------------------------------

@pytest.mark.parametrize("kwargs, exc, fragment", [
    (dict(cmd=""), ValueError, "''"),
    (dict(cmd="   "), ValueError, "'   '"),
    (dict(cmd=[]), ValueError, "[]"),
    (dict(cmd=123), TypeError, "123"),
    (dict(cmd=b"ls"), TypeError, "b'ls'"),
    (dict(cmd=["ls", 1]), TypeError, "1"),
    (dict(cmd="'unbalanced"), ValueError, "'unbalanced"),
    (dict(cmd="psl-no-such-program-xyz --flag"), ValueError, "psl-no-such-program-xyz"),
    (dict(cmd="./psl-missing.sh"), ValueError, "psl-missing.sh"),
    (dict(cmd="ls", timeout=-1), ValueError, "-1"),
    (dict(cmd="ls", timeout=0), ValueError, "0"),
    (dict(cmd="ls", timeout=float("nan")), ValueError, "nan"),
    (dict(cmd="ls", timeout="5"), TypeError, "'5'"),
    (dict(cmd="ls", shell="yes"), TypeError, "'yes'"),
    (dict(cmd="ls", env={"A": 1}), TypeError, "1"),
    (dict(cmd="ls", env={"A=B": "x"}), ValueError, "'A=B'"),
    (dict(cmd="ls", env=["A"]), TypeError, "['A']"),
    (dict(cmd="ls", max_output=-1), ValueError, "-1"),
])
def test_command_validation(kwargs, exc, fragment):
    cmd = kwargs.pop("cmd")
    with pytest.raises(exc) as info:
        command(cmd, **kwargs)
    assert fragment in str(info.value)


def test_cwd_must_be_an_existing_directory(tmp_path):
    missing = tmp_path / "missing"
    with pytest.raises(ValueError, match="missing"):
        command("ls", cwd=missing)
    afile = tmp_path / "file"
    afile.write_text("")
    with pytest.raises(ValueError, match="file"):
        command("ls", cwd=afile)


def test_program_path_must_be_executable(tmp_path):
    prog = tmp_path / "prog.sh"
    prog.write_text("#!/bin/sh\n")
    prog.chmod(0o644)
    with pytest.raises(ValueError, match="not executable"):
        command(str(prog))


def test_shell_command_is_not_checked_for_a_program():
    # The shell reports it: exit code 127, at run time.
    with pytest.raises(CommandError) as info:
        command("psl-no-such-program-xyz", shell=True)()
    assert info.value.result.exit_code == 127


def test_command_pickles_and_runs_after_a_round_trip(tmp_path):
    cmd = command("sh -c 'echo $PSL_V; pwd'", cwd=tmp_path, env={"PSL_V": "v"},
                  timeout=30, max_output=4096)
    copy = pickle.loads(pickle.dumps(cmd))
    assert copy == cmd and hash(copy) == hash(cmd)
    assert copy.name == cmd.name
    out = copy().output.split()
    assert out[0] == "v"
    assert os.path.realpath(out[1]) == os.path.realpath(tmp_path)


def test_command_errors_pickle_with_their_result():
    with pytest.raises(CommandError) as info:
        command(["sh", "-c", "echo out; echo err >&2; exit 2"])()
    copy = pickle.loads(pickle.dumps(info.value))
    assert type(copy) is CommandError
    assert str(copy) == str(info.value)
    assert copy.result == CommandResult(2, "out\n", "err\n")
    timeout = pickle.loads(pickle.dumps(CommandTimeout("late", CommandResult(-15, "", ""), 2.0)))
    assert (str(timeout), timeout.result, timeout.timeout) == ("late", (-15, "", ""), 2.0)


def _slots_pickle(module, name, slots):
    """A protocol 2 pickle of a __slots__ object, written opcode by opcode as
    pickle writes one: the class by *module* and *name*, NEWOBJ, then BUILD
    with the state ``(None, slots)``."""
    state = pickle.dumps(slots, protocol=2)[2:-1]  # the dict without PROTO and STOP
    return (b"\x80\x02c" + f"{module}\n{name}\n".encode() + b")\x81N" + state
            + b"\x86b.")


def test_pickles_name_the_package_not_the_module():
    # Stored tasks and results from worker processes are pickles: naming the
    # public path keeps them loadable when the modules inside the package move.
    result = CommandResult(2, "out\n", "err\n")
    for value in (command(["echo", "hi"], timeout=5), result, CommandError("failed", result),
                  CommandTimeout("late", result, 2.0)):
        for data in (pickle.dumps(value, protocol=2), pickle.dumps(value, protocol=4),
                     cloudpickle.dumps(value, protocol=4)):
            assert b"pysched_lightning.commands" not in data, (value, data)
            assert b"pysched_lightning" in data and type(value).__name__.encode() in data
    assert b"cpysched_lightning\nCommand\n" in pickle.dumps(command(["true"]), protocol=2)


def test_hand_built_command_pickle_loads_and_runs(tmp_path):
    slots = {"cmd": ("sh", "-c", "echo $PSL_V; pwd"), "cwd": str(tmp_path),
             "env": {"PSL_V": "v"}, "shell": False, "timeout": 30.0, "max_output": 4096,
             "name": "command \"sh -c 'echo $PSL_V; pwd'\""}
    copy = pickle.loads(_slots_pickle("pysched_lightning", "Command", slots))
    assert copy == command(["sh", "-c", "echo $PSL_V; pwd"], cwd=tmp_path, env={"PSL_V": "v"},
                           timeout=30, max_output=4096)
    assert copy.name == slots["name"]
    out = copy().output.split()
    assert out[0] == "v"
    assert os.path.realpath(out[1]) == os.path.realpath(tmp_path)


def test_command_name_and_repr():
    assert command("ls -l").name == "command 'ls -l'"
    assert command(["echo", "a b"]).name == "command \"echo 'a b'\""
    cmd = command("ls", env={"SECRET": "hunter2"}, timeout=3)
    assert repr(cmd) == "Command(['ls'], env=<SECRET>, timeout=3.0)"
    assert "hunter2" not in repr(cmd)
    assert isinstance(cmd, Command)


def test_a_script_without_a_shebang_says_so_not_exec_format_error(tmp_path):
    """An executable script with no ``#!`` line failed with the
    system's bare "Exec format error"; the error now says what is missing."""
    script = tmp_path / "no_shebang.sh"
    script.write_text("echo hello\n")
    script.chmod(0o755)
    with pytest.raises(OSError) as caught:
        Command([str(script)])()
    text = str(caught.value)
    assert f"{script} has no '#!' line (e.g. #!/bin/sh)" in text
    assert "is not a binary this system runs" in text
    assert "Exec format error" not in text
