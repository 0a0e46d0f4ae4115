"""The ``pysched`` commands on a PostgreSQL store: ``list`` and ``history``
read it like a SQLite one, say which schedulers share it, and never show the
URL's password; ``run --nuke`` refuses a store that schedulers share."""
from __future__ import annotations

import json

import pysched_lightning as psl
from cli_support import pysched
from cluster_node import tick


def with_password(url):
    """*url* with a password (trust authentication ignores it)."""
    return url.replace("postgresql://postgres@", "postgresql://postgres:sekrit-pw@")


def test_list_and_history_read_a_postgresql_store_without_showing_its_password(
        postgres_url, tmp_path):
    url = with_password(postgres_url)
    log = str(tmp_path / "ran.log")
    with psl.Scheduler(store=url) as sched:
        sched.delay('once', 0, 1, tick, args=(log,), task_id="nightly")
        sched.get_result("nightly", timeout=30)
        listed = pysched("list", "-t", tmp_path, "-s", url, cwd=tmp_path)
        assert listed.returncode == 0, listed.stderr
        assert "nightly" in listed.stdout and "shared by 1 running scheduler" in listed.stdout
        assert "sekrit-pw" not in listed.stdout + listed.stderr
        nuke = pysched("run", "-t", tmp_path, "-s", url, "--nuke", cwd=tmp_path)
        assert nuke.returncode == 1 and "shared by 1 running scheduler" in nuke.stderr
        assert "sekrit-pw" not in nuke.stdout + nuke.stderr
    history = pysched("history", "nightly", "-t", tmp_path, "-s", url, "--json", cwd=tmp_path)
    assert history.returncode == 0, history.stderr
    [run] = json.loads(history.stdout)
    assert run["status"] == "completed" and run["job"] == "nightly" or run["task_id"] == "nightly"


def test_a_postgresql_store_that_cannot_be_reached_is_an_error_without_its_password(tmp_path):
    url = "postgresql://postgres:sekrit-pw@127.0.0.1:1/nowhere"
    listed = pysched("list", "-t", tmp_path, "-s", url, cwd=tmp_path)
    assert listed.returncode == 1
    assert "cannot open the store" in listed.stderr and "127.0.0.1" in listed.stderr
    assert "sekrit-pw" not in listed.stderr


def test_history_finds_a_task_by_name_on_a_postgresql_store(postgres_url, tmp_path):
    """``history NAME`` works on PostgreSQL as on SQLite; a name
    two tasks share lists their ids and fails."""
    log = str(tmp_path / "ran.log")
    with psl.Scheduler(store=postgres_url) as sched:
        scrape = sched.delay('once', 0, 1, tick, args=(log,), name="scrape the site")
        twins = [sched.delay('once', 0, 1, tick, args=(log,), name="twin") for _ in range(2)]
        for task_id in [scrape, *twins]:
            sched.get_result(task_id, timeout=30)
    by_name = pysched("history", "scrape the site", "-t", tmp_path, "-s", postgres_url,
                      "--json", cwd=tmp_path)
    assert by_name.returncode == 0, by_name.stderr
    assert [run["task_id"] for run in json.loads(by_name.stdout)] == [scrape]
    twin = pysched("history", "twin", "-t", tmp_path, "-s", postgres_url, cwd=tmp_path)
    assert twin.returncode != 0 and ", ".join(sorted(twins)) in twin.stderr
    table = pysched("history", "-t", tmp_path, "-s", postgres_url, cwd=tmp_path).stdout
    assert all(f"twin ({task_id})" in table for task_id in twins)
