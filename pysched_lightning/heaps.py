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

__all__ = ["LazyHeap"]

_COMPACT_MIN = 1024


class LazyHeap:
    """A heap whose entries may go stale; ``is_live(entry)`` tells which."""

    __slots__ = ("_heap", "_stale", "_is_live")

    def __init__(self, is_live: Callable[[Any], bool]) -> None:
        self._heap: List[Any] = []
        self._stale = 0
        self._is_live = is_live

    def __len__(self) -> int:
        return len(self._heap) - self._stale

    def push(self, entry: Any) -> None:
        heapq.heappush(self._heap, entry)

    def is_head(self, entry: Any) -> bool:
        heap = self._heap
        return bool(heap) and heap[0] is entry

    def peek(self) -> Optional[Any]:
        """The first live entry, or None; stale entries above it are dropped."""
        heap = self._heap
        while heap:
            head = heap[0]
            if self._is_live(head):
                return head
            heapq.heappop(heap)
            if self._stale:
                self._stale -= 1
        return None

    def pop_due(self, now: float) -> Optional[Any]:
        """Remove and return the first live entry if it is due at *now*."""
        heap, is_live = self._heap, self._is_live
        while heap:
            head = heap[0]
            if not is_live(head):
                heapq.heappop(heap)
                if self._stale:
                    self._stale -= 1
            elif head[0] <= now:
                return heapq.heappop(heap)
            else:
                return None
        return None

    def pop_live(self) -> Optional[Any]:
        """Remove and return the first live entry, or None."""
        heap, is_live = self._heap, self._is_live
        while heap:
            head = heapq.heappop(heap)
            if is_live(head):
                return head
            if self._stale:
                self._stale -= 1
        return None

    def discard(self) -> None:
        """Count one entry as stale (its task was canceled or replaced)."""
        self._stale += 1
        if self._stale > _COMPACT_MIN and self._stale * 2 > len(self._heap):
            self._heap = [entry for entry in self._heap if self._is_live(entry)]
            heapq.heapify(self._heap)
            self._stale = 0

    def entries(self) -> List[Any]:
        """The live entries, in no particular order."""
        return [entry for entry in self._heap if self._is_live(entry)]

    def rebuild(self, entries: List[Any]) -> None:
        self._heap = list(entries)
        heapq.heapify(self._heap)
        self._stale = 0
