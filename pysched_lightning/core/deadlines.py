"""Deadlines: the runs with a timeout, by when they time out.

A run leaves when it ends, whatever its deadline: the heap keeps only a
(deadline, key) pair, and the run itself is held by key until then, so a
finished run (and its result) is never kept alive by a deadline far away.
Stale pairs are dropped when they surface, or all at once when they
outnumber the live ones. The scheduler's state lock guards it.
"""
from __future__ import annotations

import heapq
import itertools
from typing import Dict, List, Optional, Tuple

from ..records.runs import Run

__all__ = ["Deadlines"]

#: Stale pairs tolerated before a rebuild is considered.
_COMPACT_MIN = 64


class Deadlines:
    """Runs with a timeout, by deadline (on the scheduler's clock)."""

    def __init__(self) -> None:
        self._heap: List[Tuple[float, int]] = []
        self._runs: Dict[int, Run] = {}
        self._keys = itertools.count()

    def __bool__(self) -> bool:
        return bool(self._runs)

    def __len__(self) -> int:
        return len(self._runs)

    def add(self, run: Run, deadline: float) -> Tuple[int, bool]:
        """Watch *run*'s *deadline*: its key, and whether it is now the
        earliest deadline."""
        key = next(self._keys)
        self._runs[key] = run
        heapq.heappush(self._heap, (deadline, key))
        self._drop_stale_head()
        return key, self._heap[0][1] == key

    def remove(self, key: Optional[int]) -> None:
        """The run watched under *key* ended (nothing if it is not watched)."""
        if key is not None and self._runs.pop(key, None) is not None:
            stale = len(self._heap) - len(self._runs)
            if stale > _COMPACT_MIN and stale > len(self._runs):
                self._heap = [entry for entry in self._heap if entry[1] in self._runs]
                heapq.heapify(self._heap)

    def next(self) -> Optional[float]:
        """The earliest deadline of a run still watched, or None."""
        self._drop_stale_head()
        return self._heap[0][0] if self._heap else None

    def pop_expired(self, now: float) -> List[Run]:
        """The runs whose deadline is at or before *now*, no longer watched."""
        expired = []
        heap, runs = self._heap, self._runs
        while heap and heap[0][0] <= now:
            run = runs.pop(heapq.heappop(heap)[1], None)
            if run is not None:
                expired.append(run)
        return expired

    def _drop_stale_head(self) -> None:
        heap, runs = self._heap, self._runs
        while heap and heap[0][1] not in runs:
            heapq.heappop(heap)
