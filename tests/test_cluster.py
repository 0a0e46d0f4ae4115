"""Several schedulers on one PostgreSQL store, all active: each slot runs on
exactly one node, nothing is lost when one dies, a node cut from the
database records nothing over the node that took its runs over, and a
change made on one node applies on all. Nodes are processes of their own
(``cluster_node.py``); the oracle is the file their runs append to."""
from __future__ import annotations

import os
import threading
import time

import pytest

import pysched_lightning as psl
from cluster_support import Nodes, Proxy, duplicates
from pysched_lightning.durability.stores.postgres import PostgresStore
from conftest import HeldClock, wait_for

pytestmark = pytest.mark.timeout(240)

INTERRUPTED = int(psl.TaskStatus.INTERRUPTED)
COMPLETED = int(psl.TaskStatus.COMPLETED)


@pytest.fixture
def nodes(postgres_url, tmp_path):
    cluster = Nodes(postgres_url, tmp_path)
    try:
        yield cluster
    finally:
        cluster.close()


def store_of(url, **kwargs):
    return PostgresStore(url, **kwargs)


def recurring(tid, every, **options):
    return {"id": tid, "trigger": "recur", "interval": every, "fn": "tick", "options": options}


def once(tid, after, fn="tick", args=(), **options):
    return {"id": tid, "trigger": "once", "interval": after, "fn": fn, "args": list(args),
            "options": options}


def test_three_nodes_run_every_slot_once_and_lose_none(nodes, postgres_url):
    beats = [recurring(f"beat-{i}", 0.1) for i in range(4)]
    for n in range(3):
        shots = [once(f"shot-{n}-{k}", 0.02 * k) for k in range(40)]
        nodes.start(f"n{n}", beats + shots)
    shots = {f"shot-{n}-{k}" for n in range(3) for k in range(40)}
    wait_for(lambda: shots <= {e["tid"] for e in nodes.runs()}, 60)
    wait_for(lambda: all(len(nodes.runs(f"beat-{i}")) >= 20 for i in range(4)), 60)
    for n in range(3):
        nodes.stop(f"n{n}")
    runs = nodes.runs()
    assert duplicates(runs) == []
    assert sorted(e["tid"] for e in runs if e["tid"].startswith("shot-")) == sorted(shots)
    assert len({e["node"] for e in runs}) > 1  # the work was shared
    store = store_of(postgres_url)
    try:
        for i in range(4):
            tid = f"beat-{i}"
            rows = store.runs(tid)
            ran = sorted(e["scheduled"] for e in runs if e["tid"] == tid)
            assert sorted(round(r["scheduled"], 3) for r in rows
                          if r["status"] == COMPLETED) == ran
            skipped = sum(r.get("count") or 1 for r in rows
                          if r["status"] == int(psl.TaskStatus.MISSED))
            slots = round((ran[-1] - ran[0]) / 0.1) + 1  # the grid from first to last
            assert len(ran) + skipped >= slots, (tid, len(ran), skipped, slots)
            assert not [r for r in rows if r["status"] == INTERRUPTED]
    finally:
        store.close()


def test_a_recurring_task_goes_on_after_its_node_is_killed(nodes):
    beat = recurring("beat", 0.2)
    nodes.start("a", [beat])
    nodes.start("b", [beat])
    wait_for(lambda: len(nodes.runs("beat")) >= 5, 30)
    runner = nodes.runs("beat")[-1]["node"]
    survivor = "b" if runner == "a" else "a"
    nodes.kill(runner)
    killed_at = time.time()
    wait_for(lambda: len([e for e in nodes.runs("beat")
                          if e["node"] == survivor and e["scheduled"] > killed_at]) >= 5, 60)
    assert duplicates(nodes.runs()) == []


def test_runs_in_flight_on_a_killed_node_are_interrupted_and_retried_as_asked(
        nodes, postgres_url):
    work = [once("retried", 0, "slow", [60], retries=1, retry_delay=0),
            once("once-only", 0, "slow", [60])]
    nodes.start("a", work)
    wait_for(lambda: len(nodes.runs(event="start")) == 2, 30)
    nodes.start("b", work)
    nodes.kill("a")
    store = store_of(postgres_url)
    try:
        def attempts(tid):
            return {r["attempt"]: r for r in store.runs(tid)}
        wait_for(lambda: attempts("retried").get(1, {}).get("status") == INTERRUPTED
                 and attempts("once-only").get(1, {}).get("status") == INTERRUPTED, 60)
        wait_for(lambda: [e["node"] for e in nodes.runs("retried", "start")
                          if e["attempt"] == 2] == ["b"], 60)
        assert [e["attempt"] for e in nodes.runs("once-only", "start")] == [1]
        assert nodes.runs("once-only", "start")[0]["node"] == "a"
        assert psl.TaskStatus(attempts("once-only")[1]["status"]) is \
            psl.TaskStatus.INTERRUPTED
    finally:
        store.close()


def test_a_node_cut_from_the_database_records_nothing_over_the_node_that_took_over(
        nodes, postgres_url):
    """Fencing: node a, behind a proxy, runs a task; the proxy cuts it off;
    b reaps a's lease and runs the retry; when a's connection comes back,
    its late outcome is refused and it starts nothing more of that task."""
    proxy = Proxy(("127.0.0.1", 5432))
    try:
        work = [once("fenced", 0, "slow", [3], retries=1, retry_delay=0)]
        nodes.start("a", work, store=proxy.url(postgres_url))
        wait_for(lambda: nodes.runs("fenced", "start"), 30)
        nodes.start("b", work)
        proxy.cut()
        wait_for(lambda: any(e["node"] == "b" and e["attempt"] == 2
                             for e in nodes.runs("fenced", "end")), 60)
        wait_for(lambda: any(e["node"] == "a" for e in nodes.runs("fenced", "end")), 30)
        proxy.restore()
        wait_for(lambda: "lease expired" in nodes.stderr("a"), 60)
        store = store_of(postgres_url)
        try:
            def rows():
                return {r["attempt"]: r for r in store.runs("fenced")}
            # (b's "end" line is written as its run returns, before its record)
            wait_for(lambda: rows()[2]["status"] == COMPLETED, 30)
            assert rows()[1]["status"] == INTERRUPTED  # not a's late COMPLETED
        finally:
            store.close()
        starts = [(e["node"], e["attempt"]) for e in nodes.runs("fenced", "start")]
        assert starts == [("a", 1), ("b", 2)]
    finally:
        proxy.close()


def test_nodes_whose_clocks_differ_share_the_work_without_losing_their_leases(
        nodes, postgres_url):
    beat = recurring("beat", 0.1)
    nodes.start("a", [beat])
    nodes.start("b", [beat], wall_shift=7.0)  # its wall clock is 7 s ahead
    wait_for(lambda: len(nodes.runs("beat")) >= 30, 60)
    nodes.stop("a")
    nodes.stop("b")
    assert duplicates(nodes.runs()) == []
    assert "lease expired" not in nodes.stderr("a") + nodes.stderr("b")
    store = store_of(postgres_url)
    try:
        assert not [r for r in store.runs("beat") if r["status"] == INTERRUPTED]
    finally:
        store.close()


def test_pause_resume_and_cancel_on_one_node_apply_to_a_task_added_on_another(
        nodes, postgres_url):
    nodes.start("a", [recurring("beat", 0.1)])
    with psl.Scheduler(store=store_of(postgres_url, lease=1.0)) as here:
        wait_for(lambda: "beat" in here.task, 10)
        wait_for(lambda: len(here.runs("beat")) >= 3, 30)
        assert here.next_run_times("beat", 1)
        here.pause("beat")
        paused_at = time.time()
        time.sleep(1.0)  # a window in which nothing may start
        assert not [e for e in nodes.runs("beat") if e["scheduled"] > paused_at + 0.5]
        here.resume("beat")
        resumed_at = time.time()
        wait_for(lambda: [e for e in nodes.runs("beat") if e["scheduled"] > resumed_at], 30)
        here.cancel("beat")
        canceled_at = time.time()
        time.sleep(1.0)
        assert not [e for e in nodes.runs("beat") if e["scheduled"] > canceled_at + 0.5]
        assert here.store.task("beat") is None


def test_a_task_added_on_one_node_is_seen_and_run_by_the_others(nodes, postgres_url):
    nodes.start("a", [])
    with psl.Scheduler(psl.ThreadPoolExecutor(1), store=store_of(postgres_url, lease=1.0)) \
            as here:
        import cluster_node
        here.delay('recur', 0.1, 1, cluster_node.tick, args=(nodes.log,), task_id="shared")
        here.pause()  # (so that node a runs it however late it wakes on a busy machine)
        wait_for(lambda: any(e["node"] == "a" for e in nodes.runs("shared")), 30)
        assert here.get_status("shared") in (psl.TaskStatus.COMPLETED, psl.TaskStatus.RUNNING)
        assert here.runs("shared")
    assert duplicates(nodes.runs()) == []


# ------------------------------------------------- crash torture with an oracle


def _torture(nodes, postgres_url, seconds, seed):
    """Three nodes on one store, killed (SIGKILL) and started again at
    random moments while one-shots (some slow, some with retries) and
    recurring tasks run; then all of them run to the end. The oracle: no
    (task, slot, attempt) ever started twice; every one-shot started (or its
    claim's node died before it began, and it asked no retries); each one
    ends COMPLETED, or INTERRUPTED with no retry left to run it."""
    import random
    rng = random.Random(seed)
    shots = [once(f"s{k}", rng.uniform(0, seconds), "slow", [rng.choice([0.0, 0.3, 1.0])],
                  retries=rng.choice([0, 2]), retry_delay=0) for k in range(60)]
    work = [recurring("beat", 0.1), recurring("pulse", 0.25)] + shots
    names = ["n0", "n1", "n2"]
    for name in names:
        nodes.start(name, work)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(rng.uniform(0.3, 1.5))
        victim = rng.choice(names)
        nodes.kill(victim)
        if rng.random() < 0.8:
            nodes.start(victim, work)
    for name in names:
        if nodes.procs[name].poll() is not None:
            nodes.start(name, work)
    store = store_of(postgres_url)
    try:
        def settled():
            for shot in shots:
                rows = store.runs(shot["id"])
                if not rows:
                    return False
                last = max(rows, key=lambda r: r["attempt"])
                retries = shot["options"]["retries"]
                if last["status"] == INTERRUPTED and last["attempt"] <= retries:
                    return False  # its retry is owed
                if last["status"] not in (COMPLETED, INTERRUPTED):
                    return False
            return True
        wait_for(settled, 120)
        starts = nodes.runs(event="start") + nodes.runs(event="run")
        assert duplicates(starts) == []
        # Every one-shot started, but one whose only run a node claimed and
        # was killed before the run began: INTERRUPTED, and without retries
        # not run again (from the store's view it had started: at most once).
        started = {e["tid"] for e in starts}
        for shot in shots:
            if shot["id"] not in started:
                rows = store.runs(shot["id"])
                assert shot["options"]["retries"] == 0 and \
                    [r["status"] for r in rows] == [INTERRUPTED], (shot["id"], rows)
        for shot in shots:
            attempts = sorted(r["attempt"] for r in store.runs(shot["id"]))
            assert attempts == list(range(1, len(attempts) + 1)), (shot["id"], attempts)
    finally:
        store.close()
    for name in names:
        nodes.stop(name)


def test_nodes_killed_at_random_run_each_attempt_once(nodes, postgres_url):
    _torture(nodes, postgres_url, 8.0, seed=15)


@pytest.mark.torture
def test_nodes_killed_at_random_run_each_attempt_once_long(nodes, postgres_url,
                                                           torture_seconds):
    import random
    _torture(nodes, postgres_url, torture_seconds, seed=random.randrange(1 << 30))


def _adds_killed(nodes, postgres_url, seconds, seed):
    """Nodes that keep adding due-now one-shots (each stored with its first
    run's claim, the run started at the commit and delay() returning at the
    disk flush) are killed (SIGKILL) and started again at random moments.
    The oracle: no one-shot ever ran twice; each one whose delay() returned
    ran, or its claim's node died before the run began (INTERRUPTED in the
    store, no retries asked: at most once); one whose delay() was cut short
    ran at most once."""
    import random
    rng = random.Random(seed)
    names = ["n0", "n1", "n2"]
    for name in names:
        nodes.start(name, adds={"every": 0.01, "prefix": f"{name}-{rng.random():.6f}-"})
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(rng.uniform(0.2, 1.0))
        victim = rng.choice(names)
        nodes.kill(victim)
        nodes.start(victim, adds={"every": 0.01, "prefix": f"{victim}-{rng.random():.6f}-"})
    for name in names:  # (the survivors stop adding: they run what is left)
        nodes.stop(name)
        nodes.start(name)
    accepted = {e["tid"] for e in nodes.entries() if e["event"] == "accepted"}
    assert len(accepted) > 20 * seconds  # (the adders did add)
    store = store_of(postgres_url)
    try:
        def ran_or_interrupted(tid):
            statuses = [r["status"] for r in store.runs(tid)]
            return statuses in ([COMPLETED], [INTERRUPTED])
        wait_for(lambda: all(ran_or_interrupted(tid) for tid in accepted), 120)
        runs = nodes.runs()
        assert duplicates(runs) == []
        ran = {e["tid"] for e in runs}
        for tid in accepted - ran:
            assert [r["status"] for r in store.runs(tid)] == [INTERRUPTED], tid
    finally:
        store.close()
    for name in names:
        nodes.stop(name)


def test_nodes_killed_while_they_add_tasks_run_each_accepted_task_once(nodes, postgres_url):
    _adds_killed(nodes, postgres_url, 5.0, seed=7)


@pytest.mark.torture
def test_nodes_killed_while_they_add_tasks_run_each_accepted_task_once_long(
        nodes, postgres_url, torture_seconds):
    import random
    _adds_killed(nodes, postgres_url, torture_seconds, seed=random.randrange(1 << 30))


def test_a_task_a_node_cannot_import_is_left_to_the_others(nodes, postgres_url, tmp_path):
    """The function lives in a module only this process can import: node a
    logs why it cannot load the task, and this node runs every slot."""
    import importlib
    import sys
    local = tmp_path / "only_here"
    local.mkdir()
    (local / "local_jobs.py").write_text(
        "import os\n"
        "def mark(path):\n"
        "    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)\n"
        "    os.write(fd, b'ran\\n')\n"
        "    os.close(fd)\n")
    sys.path.insert(0, str(local))
    try:
        local_jobs = importlib.import_module("local_jobs")
        nodes.start("a", [])
        marks = tmp_path / "marks"
        with psl.Scheduler(store=store_of(postgres_url, lease=1.0)) as here:
            here.delay('recur', 0.1, 1, local_jobs.mark, args=(str(marks),), task_id="local")
            wait_for(lambda: "'mark' (local) cannot be loaded on this node (ModuleNotFoundError"
                     in nodes.stderr("a"), 30)
            here.modify("local", priority=2)  # a change: node a tries again, quietly
            wait_for(lambda: marks.exists() and len(marks.read_text().split()) >= 10, 30)
            assert here.get_status("local") in (psl.TaskStatus.COMPLETED,
                                                psl.TaskStatus.RUNNING)
        assert nodes.stderr("a").count("cannot be loaded") == 1  # said once
    finally:
        sys.path.remove(str(local))
        sys.modules.pop("local_jobs", None)


def test_get_result_on_any_node_answers_with_the_run_of_the_node_that_ran_it(
        nodes, postgres_url, tmp_path):
    """This node's only worker is busy, so node a runs the one-shot: its
    result (and a failure's exception) come back here all the same."""
    import cluster_node
    go = tmp_path / "go"
    with psl.Scheduler(psl.ThreadPoolExecutor(1), store=store_of(postgres_url, lease=1.0)) \
            as here:
        here.delay('once', 0, 1, wait_for_file, args=(str(go),), task_id="busy")
        wait_for(lambda: here.get_status("busy") is psl.TaskStatus.RUNNING, 10)
        nodes.start("a", [])  # (after: "busy" is claimed here)
        here.delay('once', 0, 1, cluster_node.answer, args=(nodes.log,), task_id="asked")
        assert here.get_result("asked", timeout=30) == "a"
        here.delay('once', 0, 1, cluster_node.slow, args=(nodes.log, "not a number"),
                   task_id="failing")
        with pytest.raises(TypeError):
            here.get_result("failing", timeout=30)
        go.write_text("go")
        assert here.get_result("busy", timeout=30) is None


def wait_for_file(path):
    while not os.path.exists(path):
        time.sleep(0.01)


def test_a_paused_node_stops_nobody_and_records_nothing_over_the_others(nodes, postgres_url):
    """SIGSTOP a node (in the middle of whatever it does, a transaction
    maybe): the other goes on with every slot and takes over its running
    run; resumed past its lease, it joins again and runs no slot twice."""
    import signal
    work = [recurring("beat", 0.1), once("long", 0, "slow", [3], retries=1, retry_delay=0)]
    nodes.start("a", work)
    wait_for(lambda: nodes.runs("long", "start"), 30)
    nodes.start("b", work)
    nodes.procs["a"].send_signal(signal.SIGSTOP)
    stopped_at = time.time()
    try:
        wait_for(lambda: len([e for e in nodes.runs("beat") if e["node"] == "b"
                              and e["scheduled"] > stopped_at + 2]) >= 5, 60)
        wait_for(lambda: any(e["node"] == "b" and e["attempt"] == 2
                             for e in nodes.runs("long", "start")), 60)
    finally:
        nodes.procs["a"].send_signal(signal.SIGCONT)
    wait_for(lambda: "lease expired" in nodes.stderr("a"), 60)
    resumed_at = time.time()
    wait_for(lambda: any(e["node"] == "a" and e["scheduled"] > resumed_at
                         for e in nodes.runs("beat")), 60)
    nodes.stop("a")
    nodes.stop("b")
    assert duplicates(nodes.runs() + nodes.runs(event="start")) == []
    store = store_of(postgres_url)
    try:
        rows = {r["attempt"]: r["status"] for r in store.runs("long")}
        assert rows == {1: INTERRUPTED, 2: COMPLETED}
    finally:
        store.close()


def test_a_recurring_slot_a_hair_from_a_millisecond_edge_is_one_slot_on_every_node(
        postgres_url, tmp_path):
    """Two nodes whose wall clocks differ (by 0.37 s) shared a task due every
    0.1 s whose slots fell a hair from a millisecond's edge. Each node reached
    a slot's wall time through its own clock offset, a float rounding apart
    from the other's, and the slot's name (its wall time to the millisecond)
    came out one millisecond apart for 12 of the first 30 slots: both nodes
    claimed them, and both ran them. Every node names a slot from the grid
    the first node laid."""
    import cluster_node
    executions = Nodes(postgres_url, tmp_path)  # (no node process: its log's reader)
    clock = HeldClock(1000.0)

    def node(wall_shift):
        return psl.Scheduler(psl.ThreadPoolExecutor(2), store=store_of(postgres_url),
                             timefunc=clock.now, delayfunc=clock.sleep,
                             wallfunc=lambda: clock.now() + wall_shift)
    first, other = node(1_799_999_000.0005), node(1_799_998_999.6305)
    try:
        first.start()
        first.delay("recur", 0.1, 1, cluster_node.tick, args=(executions.log,),
                    task_id="beat")
        other.start()  # (it loads the task as the first node stored it)
        for step in range(1, 81):  # the other node runs each slot 0.37 s after the first
            clock.run_until(1000.0 + step * 0.05)
            wait_for(lambda: clock.now() >= 1000.0 + step * 0.05, 30)
        wait_for(lambda: len(executions.runs("beat")) >= 30, 30)
    finally:
        first.shutdown()
        other.shutdown()
    ran = [round(e["scheduled"] - 1_800_000_000.0, 2) for e in executions.runs("beat")]
    twice = sorted({slot for slot in ran if ran.count(slot) > 1})
    assert twice == []
    assert sorted(ran)[:30] == [round(0.1 * k, 2) for k in range(1, 31)]


class EndsBetweenReads(PostgresStore):
    """A real PostgreSQL store on which, once armed, another node's run
    ends just after the arming thread's next read of the task or of its
    runs (the scheduler's own threads read it too)."""

    def __init__(self, url, end):
        super().__init__(url, lease=60.0)
        self.end, self.armed_by = end, None

    def arm(self):
        self.armed_by = threading.get_ident()

    def _maybe_end(self):
        if self.armed_by == threading.get_ident():
            self.armed_by = None
            self.end()

    def task(self, task_id):
        record = super().task(task_id)
        self._maybe_end()
        return record

    def runs(self, *args, **kwargs):
        rows = super().runs(*args, **kwargs)
        self._maybe_end()
        return rows


def test_a_run_ending_between_the_two_reads_of_a_cluster_status_never_leaves_it_stale(
        postgres_url):
    """get_status() read the task's stored status, then its newest run: a
    run another node ended in between read as over, with the status from
    before it (SUSPENDED after the task's first run had completed)."""
    from store_records import finished
    other = PostgresStore(postgres_url, lease=60.0)  # (it never renews: no reaping meanwhile)
    other.acquire("a")

    def end_the_run():  # what node a commits at the run's end
        with other.batch():
            other.finish_run(finished(task_id="t", slot="1.000", scheduled=1.0))
            other.update_task("t", status=int(psl.TaskStatus.COMPLETED), runs=1)

    store = EndsBetweenReads(postgres_url, end_the_run)
    try:
        with psl.Scheduler(store=store) as here:
            import cluster_node
            here.delay("once", 3600, 1, cluster_node.tick, args=("-",), task_id="t")
            assert other.claim_run("t", "1.000", 1, run=1, name="t", scheduled=1.0,
                                   started=1.0)  # (node a runs it)
            assert here.get_status("t") is psl.TaskStatus.RUNNING
            store.arm()
            assert here.get_status("t") in (psl.TaskStatus.RUNNING, psl.TaskStatus.COMPLETED)
            assert here.get_status("t") is psl.TaskStatus.COMPLETED
    finally:
        other.close()
