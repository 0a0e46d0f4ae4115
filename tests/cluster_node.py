"""One scheduler node of the multi-node tests (``tests/test_cluster.py``).

The test starts several of these on one PostgreSQL store::

    python -c "import cluster_node; cluster_node.main()" PLAN.json

(with ``PYTHONPATH=<repo>:<repo>/tests``, so that the task functions below are
stored by reference as ``cluster_node:tick`` and load on every node). The
plan (JSON) says: ``store`` (URL), ``name`` (this node's), ``lease``
(seconds), ``workers``, ``wall_shift`` (seconds added to this node's wall
clock: nodes whose clocks differ), ``tasks`` (``delay()`` calls this node
makes at start: ``{"id", "trigger", "interval", "fn", "args", "options"}``)
and ``log`` (the executions file). SIGTERM shuts the node down cleanly
(``run_forever``); the test SIGKILLs it to crash it. With ``adds``
(``{"every": seconds, "prefix": "..."}``) the node also adds due-now
one-shots while it runs, each traced ``accepted`` once ``delay()`` returned.

Every execution appends one JSON line to the log (``O_APPEND``): the node's
name and pid and the run's identity from ``psl.current_run()`` (task id, run,
attempt, scheduled). That file is the oracle's evidence: two lines with the
same task, scheduled time and attempt mean a slot ran twice.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from typing import Any, Dict

import pysched_lightning as psl

#: This node's name (set by main()), written with every execution.
NODE = "?"


def _append(path: str, entry: Dict[str, Any]) -> None:
    line = (json.dumps(entry) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def _identity(event: str) -> Dict[str, Any]:
    run = psl.current_run()
    return {"event": event, "node": NODE, "pid": os.getpid(), "tid": run.task_id,
            "run": run.run_number, "attempt": run.attempt,
            "scheduled": round(run.scheduled.timestamp(), 3)}


def tick(log: str) -> None:
    """A no-op run that leaves its trace."""
    _append(log, _identity("run"))


def slow(log: str, seconds: float) -> None:
    """A run that takes *seconds*: its start and its end are traced."""
    _append(log, _identity("start"))
    time.sleep(seconds)
    _append(log, _identity("end"))


def answer(log: str) -> str:
    """A run with a result: which node ran it."""
    _append(log, _identity("run"))
    return NODE


FUNCTIONS = {"tick": tick, "slow": slow, "answer": answer}


def _add(sched: psl.Scheduler, log: str, adds: Dict[str, Any]) -> None:
    """Add a due-now ``tick`` every ``adds["every"]`` seconds, ids
    ``adds["prefix"]`` + a count, each traced once delay() returned."""
    count = 0
    while True:
        time.sleep(adds["every"])
        task_id = f"{adds['prefix']}{count}"
        count += 1
        try:
            sched.delay("once", 0, 1, tick, args=[log], task_id=task_id)
        except RuntimeError:  # (shutting down)
            return
        _append(log, {"event": "accepted", "node": NODE, "pid": os.getpid(), "tid": task_id})


def main() -> None:
    global NODE
    with open(sys.argv[1]) as file:
        plan = json.load(file)
    NODE = plan["name"]
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"{NODE} %(asctime)s %(levelname)s %(message)s")
    from pysched_lightning.durability.stores.postgres import PostgresStore
    shift = float(plan.get("wall_shift", 0.0))
    sched = psl.Scheduler(psl.ThreadPoolExecutor(plan.get("workers", 4)),
                          store=PostgresStore(plan["store"], lease=plan.get("lease", 10.0)),
                          wallfunc=(lambda: time.time() + shift) if shift else None)
    for task in plan.get("tasks", []):
        sched.delay(task["trigger"], task["interval"], task.get("priority", 1),
                    FUNCTIONS[task["fn"]], args=[plan["log"]] + task.get("args", []),
                    task_id=task["id"], **task.get("options", {}))
    _append(plan["log"], {"event": "ready", "node": NODE, "pid": os.getpid()})
    adds = plan.get("adds")
    if adds:  # due-now one-shots added one by one while the node runs
        threading.Thread(target=_add, args=(sched, plan["log"], adds), daemon=True).start()
    sched.run_forever()
    _append(plan["log"], {"event": "stopped", "node": NODE, "pid": os.getpid()})


if __name__ == "__main__":  # pragma: no cover - run through main() by the tests
    main()
