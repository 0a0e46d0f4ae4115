"""The workers view: each lane's pool size, busy workers and runs waiting,
as a live scheduler counts them (``Scheduler.workers()``).

A store does not know its schedulers' pools: from a store the view says so,
and shows what the store does know (who holds it, the nodes of a shared
store, the runs recorded as running).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional

from ..records.owners import holder_text
from .data import Source
from .model import RUNNING, iso

__all__ = ["Lanes", "workers_view", "LANE_NAMES"]

#: What each lane runs, in words.
LANE_NAMES = {"threads": "threads (ordinary tasks)", "processes": "processes (hard=True)",
              "async": "event loop (async def)"}


@dataclasses.dataclass
class Lanes:
    """The view: ``lanes`` (None from a store), and what the store knows."""

    live: bool
    lanes: Optional[List[Dict[str, Any]]]
    running_recorded: Optional[int]
    held_by: Optional[str]
    nodes: List[Dict[str, Any]]

    def as_json(self) -> Dict[str, Any]:
        out = dataclasses.asdict(self)
        if not self.live:
            out["note"] = ("pool sizes, busy workers and runs waiting are known only to "
                           "the scheduler process; this dashboard reads a store")
        return out


def workers_view(source: Source) -> Lanes:
    lanes = source.workers()
    store = source.store_object()
    running = source.runs.count(statuses=(RUNNING,)) if store is not None else None
    holder = store.holder() if store is not None else None
    nodes = []
    if store is not None and callable(getattr(store, "nodes", None)):
        nodes = [{"node": f"pid {node.get('pid')} on {node.get('host')}",
                  "joined": iso(node.get("joined")),
                  "lease_until": iso(node.get("lease_until"))} for node in store.nodes()]
    return Lanes(live=lanes is not None,
                 lanes=None if lanes is None else [
                     {**load._asdict(), "label": LANE_NAMES.get(load.kind, load.kind),
                      "idle": None if load.size is None else max(load.size - load.busy, 0)}
                     for load in lanes],
                 running_recorded=running,
                 held_by=holder_text(holder) if holder is not None else None, nodes=nodes)
