"""Script tasks, with real files: return values, exit codes, fresh imports, pickling."""
from __future__ import annotations

import os
import pickle
import sys
import textwrap

import pytest

from pysched_lightning.execution.commands import CommandError, CommandResult
from pysched_lightning.execution.scripts import Script, script


def _write_script(path, body):
    path.write_text(textwrap.dedent(body))
    return path


# -- scripts ----------------------------------------------------------------

def test_script_return_values_are_normalized(tmp_path):
    path = _write_script(tmp_path / "job.py", """
        def none():
            pass

        def one():
            return 0

        def two():
            return [0, "out"]

        def three(a, b=None):
            return 0, f"{a}-{b}", "warn"

        def four():
            return 0, "out", "err", "extra"
    """)
    assert script(path, "none")() == CommandResult(None, None, None)
    assert script(path, "one")() == CommandResult(0, None, None)
    assert script(path, "two")() == CommandResult(0, "out", None)
    result = script(path, "three", args=("x",), kwargs={"b": "y"})()
    assert result == CommandResult(0, "x-y", "warn")
    assert isinstance(result, CommandResult)
    with pytest.raises(ValueError, match=r"4 values.*only 3 values"):
        script(path, "four")()


def test_script_non_int_value_is_the_exit_code_slot(tmp_path):
    path = _write_script(tmp_path / "job.py", """
        def run():
            return {"rows": 3}
    """)
    assert script(path)() == CommandResult({"rows": 3}, None, None)


def test_script_non_zero_exit_code_raises(tmp_path):
    path = _write_script(tmp_path / "job.py", """
        import sys

        def run():
            return 2, "partial", "disk full"

        def flag():
            return True, "ok", None

        def exits():
            sys.exit(4)

        def exits_with_message():
            sys.exit("bad config")
    """)
    with pytest.raises(CommandError) as info:
        script(path)()
    assert info.value.result == CommandResult(2, "partial", "disk full")
    assert "exit code 2" in str(info.value) and "disk full" in str(info.value)
    assert script(path, "flag")().exit_code is True  # a bool is not an exit code
    with pytest.raises(CommandError) as info:
        script(path, "exits")()
    assert info.value.result.exit_code == 4
    with pytest.raises(CommandError) as info:
        script(path, "exits_with_message")()
    assert info.value.result == CommandResult(1, None, "bad config")


def test_script_validation_at_construction(tmp_path):
    path = _write_script(tmp_path / "job.py", """
        NOT_CALLABLE = 3

        def run():
            return 0
    """)
    with pytest.raises(ValueError, match="missing.py"):
        script(tmp_path / "missing.py")
    notpy = tmp_path / "job.txt"
    notpy.write_text("def run(): pass\n")
    with pytest.raises(ValueError, match=r"job\.txt"):
        script(notpy)
    with pytest.raises(ValueError, match="'nope'"):
        script(path, "nope")
    with pytest.raises(TypeError, match="NOT_CALLABLE"):
        script(path, "NOT_CALLABLE")
    with pytest.raises(TypeError):
        script(path, args="abc")
    with pytest.raises(TypeError):
        script(path, kwargs={1: 2})
    with pytest.raises(TypeError):
        script(123)


def test_script_that_fails_to_import_fails_at_construction(tmp_path):
    broken = _write_script(tmp_path / "broken.py", "def run(:\n")
    with pytest.raises(ValueError, match="SyntaxError"):
        script(broken)
    exits = _write_script(tmp_path / "exits.py", "import sys\nsys.exit(1)\n")
    with pytest.raises(ValueError, match="SystemExit"):
        script(exits)


def test_sibling_import_error_explains_the_path(tmp_path):
    _write_script(tmp_path / "helpers_psl.py", "X = 1\n")
    path = _write_script(tmp_path / "job.py", """
        import helpers_psl

        def run():
            return helpers_psl.X
    """)
    with pytest.raises(ValueError, match="PYTHONPATH"):
        script(path)


def test_fresh_script_sees_the_current_file_and_cached_does_not(tmp_path):
    path = _write_script(tmp_path / "job.py", """
        CALLS = []
        VERSION = "one"

        def run():
            CALLS.append(1)
            return 0, VERSION, len(CALLS)
    """)
    fresh, cached = script(path), script(path, fresh=False)
    assert fresh() == (0, "one", 1)
    assert cached() == (0, "one", 1)
    # Same size and likely the same mtime second: no stale bytecode is used.
    path.write_text(path.read_text().replace('"one"', '"two"'))
    assert fresh() == (0, "two", 1)         # a new module every run
    assert cached() == (0, "one", 2)        # the module kept in the Script
    assert not (tmp_path / "__pycache__").exists()


def test_script_leaves_no_global_import_state(tmp_path):
    path = _write_script(tmp_path / "job.py", """
        from __future__ import annotations
        import dataclasses

        @dataclasses.dataclass
        class Row:
            name: str
            count: int = 0

        def run():
            return 0, repr(Row("a")), None
    """)
    modules, sys_path = set(sys.modules), list(sys.path)
    job = script(path)
    assert job().output == "Row(name='a', count=0)"
    assert set(sys.modules) == modules
    assert sys.path == sys_path


def test_script_pickles_without_its_module(tmp_path):
    path = _write_script(tmp_path / "job.py", """
        CALLS = []

        def run(n, scale=1):
            CALLS.append(n)
            return 0, str(n * scale * len(CALLS)), None
    """)
    cached = script(path, args=(2,), kwargs={"scale": 3}, fresh=False)
    assert cached().output == "6"
    copy = pickle.loads(pickle.dumps(cached))
    assert copy == cached and hash(copy) == hash(cached)
    assert copy._module is None
    assert copy().output == "6"   # imported again: a new CALLS list
    assert cached().output == "12"
    assert os.path.isabs(copy.path)


def test_script_pickle_names_the_package_and_a_hand_built_one_loads(tmp_path):
    path = _write_script(tmp_path / "job.py", """
        def run(n, scale=1):
            return 0, str(n * scale), None
    """)
    job = script(path, args=(2,), kwargs={"scale": 3}, fresh=False)
    data = pickle.dumps(job, protocol=2)
    assert b"cpysched_lightning\nScript\n" in data
    assert b"pysched_lightning.scripts" not in pickle.dumps(job, protocol=4)
    # The stored form, opcode by opcode: the class by its public path,
    # NEWOBJ, then BUILD with the state dict that __setstate__ reads.
    state = {"path": str(path), "func": "run", "args": (2,), "kwargs": {"scale": 3},
             "fresh": False, "name": f"script {path}:run"}
    built = (b"\x80\x02cpysched_lightning\nScript\n)\x81"
             + pickle.dumps(state, protocol=2)[2:-1] + b"b.")
    copy = pickle.loads(built)
    assert copy == job and copy.name == job.name
    assert copy().output == "6"


def test_script_name_and_repr(tmp_path, monkeypatch):
    (tmp_path / "jobs").mkdir()
    _write_script(tmp_path / "jobs" / "report.py", "def run():\n    return 0\n")
    monkeypatch.chdir(tmp_path)
    job = script("jobs/report.py")
    assert job.name == "script jobs/report.py:run"
    assert job.path == str(tmp_path / "jobs" / "report.py")
    assert repr(job) == f"Script({job.path!r}, 'run')"
    assert isinstance(job, Script)
