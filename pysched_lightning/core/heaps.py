"""A heap with O(1) cancel by lazy deletion, for the timer and ready heaps.

The timer heap orders by (due time, priority, seq); the ready heap, of runs
that are due but wait for a free worker, by (priority, due time, seq). A
canceled entry stays in place and is dropped when it reaches the top; when
dead entries outnumber live ones the heap is rebuilt, so memory stays bounded
and every operation stays O(log n) amortized.
"""
from __future__ import annotations

import heapq
from typing import Any, Callable, List, Optional

__all__ = ["LazyHeap", "smallest"]

_COMPACT_MIN = 1024


class LazyHeap(List[Any]):
    """A heap whose entries may go stale; ``is_live(entry)`` tells which.

    It is the list of its entries itself, so ``if heap:`` (is anything
    queued?, asked on every run) costs no Python call; a stale entry counts
    there until it surfaces. ``live()`` is the count without them.
    """

    __slots__ = ("_stale", "_is_live")

    def __init__(self, is_live: Callable[[Any], bool]) -> None:
        super().__init__()
        self._stale = 0
        self._is_live = is_live

    def live(self) -> int:
        """How many live entries it holds."""
        return len(self) - self._stale

    def push(self, entry: Any) -> None:
        heapq.heappush(self, entry)

    def is_head(self, entry: Any) -> bool:
        return bool(self) and self[0] is entry

    def peek(self) -> Optional[Any]:
        """The first live entry, or None; stale entries above it are dropped."""
        while self:
            head = self[0]
            if self._is_live(head):
                return head
            heapq.heappop(self)
            if self._stale:
                self._stale -= 1
        return None

    def pop_due(self, now: float) -> Optional[Any]:
        """Remove and return the first live entry if it is due at *now*."""
        is_live = self._is_live
        while self:
            head = self[0]
            if not is_live(head):
                heapq.heappop(self)
                if self._stale:
                    self._stale -= 1
            elif head[0] <= now:
                return heapq.heappop(self)
            else:
                return None
        return None

    def pop_live(self) -> Optional[Any]:
        """Remove and return the first live entry, or None."""
        is_live = self._is_live
        while self:
            head = heapq.heappop(self)
            if is_live(head):
                return head
            if self._stale:
                self._stale -= 1
        return None

    def discard(self) -> None:
        """Count one entry as stale (its task was canceled or replaced)."""
        self._stale += 1
        if self._stale > _COMPACT_MIN and self._stale * 2 > len(self):
            self.rebuild(self.entries())

    def entries(self) -> List[Any]:
        """The live entries, in no particular order."""
        return [entry for entry in self if self._is_live(entry)]

    def rebuild(self, entries: List[Any]) -> None:
        self[:] = entries
        heapq.heapify(self)
        self._stale = 0

    # A heap compares by identity: two heaps are never "equal" lists.
    def __eq__(self, other: object) -> bool:
        return self is other

    __hash__ = object.__hash__  # type: ignore[assignment]  # identity, as __eq__


def smallest(heap: List[Any], k: int) -> List[Any]:
    """The *k* smallest entries of *heap* (a list in heap order), smallest
    first, in O(k log k): a walk down from the root, not a sort of it all."""
    out: List[Any] = []
    if not heap:
        return out
    frontier = [(heap[0], 0)]
    size = len(heap)
    while frontier and len(out) < k:
        entry, index = heapq.heappop(frontier)
        out.append(entry)
        for child in (2 * index + 1, 2 * index + 2):
            if child < size:
                heapq.heappush(frontier, (heap[child], child))
    return out
