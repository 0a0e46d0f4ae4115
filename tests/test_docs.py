"""Every Python and shell example of the README and of docs/*.md runs.

The fenced ```python, ```sh, ```bash and ```console blocks are collected
from the Markdown. Each runs in a fresh subprocess, in a temporary folder
that holds a copy of examples/, with this checkout's package first on
PYTHONPATH and this interpreter's bin folder first on PATH (so `python`
and `pysched` are the ones under test). A block that is not meant to run
(it starts a server that runs until Ctrl-C, needs a host the page names,
is a fragment) says so in an HTML comment right above its fence:
``<!-- not-run: why -->``; a test holds every such comment to a reason.
A block that needs something made first names a shell command in
``<!-- setup: command -->`` instead, run in the same folder before it.

Blocks that talk to RabbitMQ (``amqp://``) skip when no broker listens on
127.0.0.1:5672, unless PYSCHED_REQUIRE_SERVICES is set (as in CI).

The blocks of one page run in parallel threads; the pages are separate
tests, so pytest-xdist spreads them over its workers.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import pathlib
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from typing import List, Optional

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
LANGUAGES = {"python": "python", "py": "python", "sh": "shell", "bash": "shell",
             "console": "console"}
FENCE = re.compile(r"^```\s*([\w-]*)\s*$")
NOT_RUN = re.compile(r"^<!--\s*not-run\b:?\s*(.*?)\s*-->\s*$")
SETUP = re.compile(r"^<!--\s*setup:\s*(.*?)\s*-->\s*$")
TIME_LIMIT = 90.0


@dataclasses.dataclass(frozen=True)
class Block:
    page: pathlib.Path
    line: int  # of the opening fence, 1-based
    kind: str  # python, shell or console
    code: str
    not_run: Optional[str]  # the reason given, "" if none; None for a block that runs
    setup: Optional[str] = None  # a shell command to run first

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks_of(page: pathlib.Path) -> List[Block]:
    """The Python and shell blocks of *page*, with their not-run marks."""
    lines = page.read_text().splitlines()
    found: List[Block] = []
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        start, language = i, match.group(1).lower()
        i += 1
        body: List[str] = []
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        i += 1  # the closing fence
        kind = LANGUAGES.get(language)
        if kind is None:
            continue
        above = start - 1
        while above >= 0 and not lines[above].strip():
            above -= 1
        comment = lines[above] if above >= 0 else ""
        mark, setup = NOT_RUN.match(comment), SETUP.match(comment)
        found.append(Block(page, start + 1, kind, "\n".join(body) + "\n",
                           mark.group(1) if mark else None, setup.group(1) if setup else None))
    return found


def _broker_missing() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=2).close()
        return False
    except OSError:
        return not os.environ.get("PYSCHED_REQUIRE_SERVICES")


def _console_commands(code: str) -> str:
    """The commands of a console block: its lines after a ``$ `` prompt."""
    return "\n".join(line[2:] for line in code.splitlines() if line.startswith("$ ")) + "\n"


def _environment() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
    env.pop("PYSCHED_SECRET", None)
    env.pop("PYSCHED_DASHBOARD_TOKEN", None)
    return env


def run_block(block: Block, folder: pathlib.Path) -> Optional[str]:
    """Run *block* in *folder*; None if it succeeded, else what went wrong."""
    folder.mkdir()
    shutil.copytree(ROOT / "examples", folder / "examples")
    setup = f"{block.setup}\n" if block.setup else ""
    if block.kind == "python":
        (folder / "example.py").write_text(block.code)
        code = setup + f"exec {shlex.quote(sys.executable)} example.py\n"
    else:
        code = setup + (_console_commands(block.code) if block.kind == "console"
                        else block.code)
    (folder / "example.sh").write_text("set -euo pipefail\n" + code)
    # A session of its own: whatever the example starts is killed with it.
    proc = subprocess.Popen(["bash", "example.sh"], cwd=folder, env=_environment(),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=TIME_LIMIT)
    except subprocess.TimeoutExpired:
        stdout, stderr = None, None
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if stdout is None:
        proc.communicate()
        return f"{block.where}: still running after {TIME_LIMIT:g} s"
    if proc.returncode != 0:
        return (f"{block.where}: exit code {proc.returncode}\n--- code\n{block.code}"
                f"--- stdout\n{stdout[-3000:]}--- stderr\n{stderr[-3000:]}")
    return None


WITH_EXAMPLES = [p for p in PAGES if any(b.not_run is None for b in blocks_of(p))]


@pytest.mark.parametrize("page", WITH_EXAMPLES,
                         ids=[str(p.relative_to(ROOT)) for p in WITH_EXAMPLES])
def test_every_example_of_the_page_runs(page, tmp_path):
    runnable = [b for b in blocks_of(page) if b.not_run is None]
    if any("amqp://" in b.code for b in runnable) and _broker_missing():
        runnable = [b for b in runnable if "amqp://" not in b.code]
        if not runnable:
            pytest.skip("its examples need RabbitMQ on 127.0.0.1:5672")
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        failures = [f for f in pool.map(
            lambda pair: run_block(pair[1], tmp_path / f"block{pair[0]}"),
            enumerate(runnable)) if f]
    assert not failures, "\n\n".join(failures)


def test_every_block_not_run_says_why():
    unexplained = [b.where for page in PAGES for b in blocks_of(page) if b.not_run == ""]
    assert not unexplained, f"<!-- not-run: ... --> without a reason at {unexplained}"


def test_the_not_run_blocks_are_few():
    every = [b for page in PAGES for b in blocks_of(page)]
    not_run = [b for b in every if b.not_run is not None]
    assert len(every) >= 40
    assert len(not_run) * 3 <= len(every), [b.where for b in not_run]


def test_a_failing_example_is_reported_with_its_place(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("Text.\n\n<!-- not-run: needs a broker -->\n```python\nraise SystemExit(3)\n"
                    "```\n\n```python\nimport sys; sys.exit('broken on purpose')\n```\n"
                    "\n```ini\n[x]\n```\n<!-- not-run -->\n\n```sh\nfalse\n```\n"
                    "<!-- setup: echo made > made.txt -->\n```python\n"
                    "assert open('made.txt').read() == 'made\\n'\n```\n")
    found = blocks_of(page)
    assert [(b.line, b.kind, b.not_run, b.setup) for b in found] == [
        (4, "python", "needs a broker", None), (8, "python", None, None),
        (17, "shell", "", None), (21, "python", None, "echo made > made.txt")]
    assert run_block(found[3], tmp_path / "setup") is None
    broken = Block(ROOT / "README.md", 8, "python", found[1].code, None)
    failure = run_block(broken, tmp_path / "run")
    assert failure is not None and failure.startswith("README.md:8: exit code 1")
    assert "broken on purpose" in failure


def test_the_readme_keeps_the_test_command_ci_runs():
    command = "pip install -e '.[test]' && python -m pytest"
    assert command in (ROOT / "README.md").read_text()
    assert command in (ROOT / ".ci" / "run").read_text()


def test_flaky_example_fails_first_in_every_session(tmp_path):
    """examples/jobs/1min/flaky.sh kept its marker from one session to the
    next, so after a session stopped between its two attempts the next
    session's first attempt succeeded and the re-run it shows never came."""
    flaky = ROOT / "examples" / "jobs" / "1min" / "flaky.sh"
    env = dict(os.environ, TMPDIR=str(tmp_path))

    def session(attempts: int) -> List[str]:  # a parent process of its own, as pysched is
        script = "; ".join(['sh "$0" 2>/dev/null; echo $?'] * attempts)
        out = subprocess.run(["bash", "-c", script, str(flaky)], env=env, capture_output=True,
                             text=True, timeout=30, cwd=tmp_path)
        return [line for line in out.stdout.split() if line.isdigit()]

    assert session(1) == ["1"]  # stopped after the failed attempt: its marker stays
    assert session(3) == ["1", "0", "1"]
    assert session(2) == ["1", "0"]


def test_every_page_is_in_the_site_s_navigation():
    nav = (ROOT / "mkdocs.yml").read_text()
    missing = [p.name for p in PAGES[1:] if f": {p.name}" not in nav]
    assert not missing, f"docs pages missing from mkdocs.yml's nav: {missing}"
