"""Each node of a shared store goes first for a share of the tasks: a
backlog is worked through by the nodes side by side instead of every node
racing for every run (``core/shares.py``)."""
from __future__ import annotations

import json
import os

from hypothesis import given, strategies as st

import pysched_lightning as psl
from pysched_lightning.core.shares import Share, share_of
from pysched_lightning.durability.stores.postgres import PostgresStore
from conftest import wait_for

OWNERS = st.lists(st.text(min_size=1, max_size=12), min_size=2, max_size=6, unique=True)


@given(OWNERS, st.text(max_size=40))
def test_every_task_goes_first_on_exactly_one_live_node(owners, task_id):
    shares = [share_of(owners, owner) for owner in owners]
    assert sorted(share.rank for share in shares) == list(range(len(owners)))
    assert sum(share.prefers(task_id) for share in shares) == 1


@given(OWNERS, st.randoms())
def test_every_node_ranks_the_live_nodes_alike(owners, rnd):
    shuffled = list(owners)
    rnd.shuffle(shuffled)
    assert [share_of(shuffled, owner) for owner in owners] == \
        [share_of(owners, owner) for owner in owners]


def test_a_node_alone_or_not_live_goes_first_for_every_task():
    assert share_of(["a"], "a") is None
    assert share_of(["a", "b"], "c") is None
    assert share_of(["a", "b"], None) is None
    assert share_of(["b", "a", "a"], "b") == Share(1, 2)


def test_task_ids_that_are_not_plain_text_are_shared_too():
    share = Share(0, 2)
    assert share.prefers("\udcff-lone-surrogate") in (True, False)
    assert {Share(i, 3).prefers("naïve ☃") for i in range(3)} == {True, False}


def record(path, task_id):
    """A run that says it ran (one JSON line, appended)."""
    with open(path, "a") as out:
        out.write(json.dumps(task_id) + "\n")


def test_a_node_runs_its_own_share_of_a_backlog_first_then_the_idle_nodes(
        postgres_url, tmp_path):
    path = str(tmp_path / "ran")
    loader = psl.Scheduler(store=postgres_url)  # never started: it only stores them
    ids = [f"shot-{k}" for k in range(60)]
    for task_id in ids:
        loader.delay("once", 0, 1, record, args=(path, task_id), task_id=task_id)
    loader.shutdown()
    idle = psl.Scheduler(store=postgres_url)
    idle.pause()  # a live node that takes nothing
    idle.start()
    busy = psl.Scheduler(store=postgres_url, executor=psl.ThreadPoolExecutor(1))
    try:
        busy.start()
        wait_for(lambda: os.path.exists(path) and len(open(path).readlines()) == len(ids), 60)
    finally:
        busy.shutdown()
        idle.shutdown()
    ran = [json.loads(line) for line in open(path)]
    assert sorted(ran) == sorted(ids)  # each once: the idle node's share too
    # Two live nodes: each task is in the share of node 0 or of node 1.
    first = [Share(0, 2).prefers(task_id) for task_id in ran[1:]]  # (the first starts at once)
    assert set(first) == {True, False}  # both shares ran
    assert first in (sorted(first), sorted(first, reverse=True)), first  # one share, then the other


def test_runs_another_node_ran_are_learnt_in_one_look_not_one_refused_claim_each(
        postgres_url, tmp_path, caplog):
    path = str(tmp_path / "ran")
    loader = psl.Scheduler(store=postgres_url)
    ids = [f"shot-{k}" for k in range(40)]
    for task_id in ids:
        loader.delay("once", 0, 1, record, args=(path, task_id), task_id=task_id)
    loader.shutdown()
    late = psl.Scheduler(store=postgres_url, executor=psl.ThreadPoolExecutor(1))
    late.pause()  # it holds all 40 runs meanwhile
    late.start()
    first = psl.Scheduler(store=postgres_url)
    try:
        first.start()
        wait_for(lambda: os.path.exists(path) and len(open(path).readlines()) == len(ids), 60)
        caplog.set_level("DEBUG", logger="pysched_lightning")
        late.resume()  # every claim it would make is refused: another node ran them all
        wait_for(lambda: not late.task, 60)
    finally:
        first.shutdown()
        late.shutdown()
    assert sorted(json.loads(line) for line in open(path)) == sorted(ids)  # none twice
    looks = [record.args for record in caplog.records
             if record.getMessage().startswith("looked ahead")]
    assert len(looks) in (1, 2, 3), looks  # not one per run
    assert sum(claimed for _, claimed in looks) >= len(ids) - 3


def record_slowly(path, task_id):
    record(path, task_id)
    import time
    time.sleep(0.5)  # (still running when the other node hears of it)


class RefusalCountingStore(PostgresStore):
    """A real PostgreSQL store that counts the claims it refuses."""

    refused = 0

    def claim_run(self, *args, **kwargs):
        granted = super().claim_run(*args, **kwargs)
        self.refused += not granted
        return granted

    def claim_runs(self, claims):
        granted = super().claim_runs(claims)
        self.refused += granted.count(False)
        return granted

    def end_and_claim(self, record, task_id, fields, claim):
        lost, granted = super().end_and_claim(record, task_id, fields, claim)
        self.refused += claim is not None and not granted
        return lost, granted


def test_a_task_added_elsewhere_and_running_there_is_dropped_here_without_a_claim(
        postgres_url, tmp_path, caplog):
    """A node hearing of a task due now, added on another node with its
    first run claimed, fired its timer and spent a claim the store could
    only refuse: the run records it reads to load the task say that the
    slot is claimed already. (A run the adder had no free worker for is
    claimed here, granted.)"""
    path = str(tmp_path / "ran")
    adder = psl.Scheduler(store=postgres_url)
    counted = RefusalCountingStore(postgres_url)
    other = psl.Scheduler(store=counted)
    ids = [f"now-{k}" for k in range(3)]
    try:
        adder.start()
        other.start()
        caplog.set_level("DEBUG", logger="pysched_lightning")
        for task_id in ids:
            adder.delay("once", 0, 1, record_slowly, args=(path, task_id), task_id=task_id)
            wait_for(lambda: any(f"({task_id})" in r.getMessage() and r.getMessage()
                                 .startswith("loaded") for r in caplog.records), 30)
        wait_for(lambda: not adder.task and not other.task, 60)
    finally:
        adder.shutdown()
        other.shutdown()
    assert sorted(json.loads(line) for line in open(path)) == sorted(ids)  # each once
    assert counted.refused == 0


def test_a_claim_given_back_by_another_node_is_run_here(postgres_url, tmp_path):
    """A node shutting down gives back the claim of a run it had not
    started. A node that had dropped that one-shot (its claim refused:
    "ran elsewhere") never heard of it, and nobody ran it until a restart:
    the give-back is a change the other nodes hear, and they load the task
    again."""
    path = str(tmp_path / "ran")
    loader = psl.Scheduler(store=postgres_url)  # never started: it only stores
    loader.delay("once", 0, 1, record, args=(path, "given-back"), task_id="given-back")
    loader.shutdown()
    other = PostgresStore(postgres_url)
    here = psl.Scheduler(store=postgres_url)
    try:
        other.acquire("other")
        stored = other.task("given-back")
        slot = f"{stored.next_run:.3f}"
        assert other.claim_run("given-back", slot, 1, run=1, name="given-back",
                               scheduled=stored.next_run, started=stored.next_run)
        here.start()  # its claim is refused: it drops the one-shot, run elsewhere
        wait_for(lambda: "given-back" not in here.task, 30)
        other.release_run("given-back", slot, 1)  # (the other node shut down first)
        wait_for(lambda: os.path.exists(path), 30)
    finally:
        here.shutdown()
        other.close()
    assert [json.loads(line) for line in open(path)] == ["given-back"]
