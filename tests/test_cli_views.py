"""``pysched list`` and ``pysched history`` (cli/views.py) on stores a
library scheduler wrote: tasks found by name, names shown with their ids
when several tasks share them, schedules in one canonical form."""
from __future__ import annotations

import json
from datetime import datetime

import pytest

import pysched_lightning as psl
from cli_support import pysched, write_job


@pytest.fixture
def named_store(tmp_path):
    """A SQLite store with a task named 'scrape the site' and two named 'twin'."""
    store = str(tmp_path / "named.db")
    with psl.Scheduler(store=store) as sched:
        ids = {"scrape": sched.delay('once', 0, 1, len, args=("abc",), name="scrape the site"),
               "twin1": sched.delay('once', 0, 1, len, args=("a",), name="twin"),
               "twin2": sched.delay('once', 0, 1, len, args=("ab",), name="twin")}
        for task_id in ids.values():
            sched.get_result(task_id, timeout=30)
    (tmp_path / "jobs").mkdir()
    return tmp_path, store, ids


def history(tmp_path, store, *args):
    return pysched("history", "-t", tmp_path / "jobs", "-s", store, *args, cwd=tmp_path)


def test_history_accepts_a_tasks_name_not_only_its_id(named_store):
    """``history "scrape the site"`` said "no job or task"."""
    tmp_path, store, ids = named_store
    by_name = history(tmp_path, store, "scrape the site", "--json")
    assert by_name.returncode == 0, by_name.stderr
    [run] = json.loads(by_name.stdout)
    assert run["task_id"] == ids["scrape"] and run["name"] == "scrape the site"
    by_id = history(tmp_path, store, ids["scrape"], "--json")
    assert json.loads(by_id.stdout) == [run]


def test_history_of_an_ambiguous_name_lists_the_matching_ids_and_fails(named_store):
    tmp_path, store, ids = named_store
    result = history(tmp_path, store, "twin")
    assert result.returncode != 0 and not result.stdout
    assert "2 tasks" in result.stderr and "named 'twin'" in result.stderr
    assert f"{min(ids['twin1'], ids['twin2'])}, {max(ids['twin1'], ids['twin2'])}" \
        in result.stderr


def test_history_shows_the_id_beside_a_name_that_is_not_unique(named_store):
    tmp_path, store, ids = named_store
    table = history(tmp_path, store).stdout
    assert f"twin ({ids['twin1']})" in table and f"twin ({ids['twin2']})" in table
    assert "scrape the site " in table and f"({ids['scrape']})" not in table


def test_history_of_an_unknown_job_says_it_looked_by_name_too(named_store):
    tmp_path, store, _ = named_store
    result = history(tmp_path, store, "nope")
    assert result.returncode != 0
    assert "no job or task 'nope' (by path, id or name)" in result.stderr


def test_list_shows_a_one_shots_schedule_as_its_due_time_not_its_delay(tmp_path):
    """A one-shot's SCHEDULE read ``0`` or ``25`` (its delay)."""
    store = str(tmp_path / "once.db")
    with psl.Scheduler(store=store) as sched:
        done = sched.delay('once', 0, 1, len, args=("abc",), task_id="done")
        sched.get_result(done, timeout=30)
        sched.delay('once', 3600, 1, len, args=("abc",), task_id="later")
    listed = pysched("list", "-t", tmp_path, "-s", store, "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    rows = {row["job"]: row for row in json.loads(listed.stdout)}
    later = rows["later"]
    assert later["schedule"] == f"once at {later['next_run']}"
    assert rows["done"]["schedule"].startswith("once at ")
    when = datetime.fromisoformat(rows["done"]["schedule"][len("once at "):])
    assert when <= datetime.fromisoformat(rows["done"]["last_run"])
    table = pysched("list", "-t", tmp_path, "-s", store, cwd=tmp_path,
                    env={"TZ": "UTC"}).stdout
    [line] = [line for line in table.splitlines() if line.startswith("later ")]
    assert line.split()[1:4] == ["once", "at", later["next_run"][:10]]


def test_60s_and_1min_jobs_list_the_same_schedule(tmp_path):
    """The same interval read ``60s``, ``1min`` or ``60s`` again
    depending on how the folder was named and where the row came from."""
    for folder in ("60s", "1min"):
        write_job(tmp_path / "jobs" / folder / "tick.sh", "true")
    store = str(tmp_path / "s.db")
    with psl.Scheduler(store=store) as sched:
        sched.delay('recur', 60, 1, len, args=("abc",), task_id="stored")
    listed = pysched("list", "-t", tmp_path / "jobs", "-s", store, "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    rows = {row["job"]: row for row in json.loads(listed.stdout)}
    assert {rows[job]["schedule"] for job in ("60s/tick.sh", "1min/tick.sh", "stored")} \
        == {"every 1 min"}
    assert {rows[job]["interval"] for job in ("60s/tick.sh", "1min/tick.sh", "stored")} == {60}
