"""Which node of a shared store goes first for which task.

Every node of a shared store keeps every task's timer, and the store's
claims decide which node runs each due run. Left at that, nodes with a
backlog would take their ready runs in the same order and race for each
one, all but one of them spending a round trip on a claim the store
refuses. So each node goes first for a share of the tasks (a hash of the
task's id among the live nodes' owners): in its ready heap, the runs of
the other nodes' tasks wait as if due :data:`STEAL_AFTER` seconds later.
A node works through its own share, and takes the others' runs when it
has no run of its own due that much earlier: a busy node's backlog is
shared, and a dead node's runs do not wait for its lease to expire (once
it has, the live nodes share its tasks). It is an order only: the claims
still decide who runs what.
"""
from __future__ import annotations

import zlib
from typing import Iterable, NamedTuple, Optional

__all__ = ["Share", "share_of", "STEAL_AFTER"]

#: How much earlier another node's run must be due to go before one of this
#: node's own share in its ready heap: longer than a backlog usually spans,
#: so that nodes working through one do not take each other's runs.
STEAL_AFTER = 60.0


class Share(NamedTuple):
    """This node is number ``rank`` (from 0) of ``nodes`` live nodes."""

    rank: int
    nodes: int

    def prefers(self, task_id: str) -> bool:
        """True when this node goes first for *task_id*'s runs."""
        digest = zlib.crc32(task_id.encode("utf-8", "surrogatepass"))
        return digest % self.nodes == self.rank


def share_of(owners: Iterable[str], owner: Optional[str]) -> Optional[Share]:
    """*owner*'s share among the live nodes *owners* (every node ranks them
    alike); None when it is alone or not among them (then every task is its
    own)."""
    ranked = sorted(set(owners))
    if owner is None or owner not in ranked or len(ranked) < 2:
        return None
    return Share(ranked.index(owner), len(ranked))
