"""The lazy-deletion heap under the timer and ready heaps."""
from __future__ import annotations

import heapq

from hypothesis import given, strategies as st

from pysched_lightning.core.heaps import LazyHeap, smallest


def test_dead_entries_are_skipped_and_the_heap_is_rebuilt_when_they_dominate():
    live = set(range(5000))
    heap = LazyHeap(lambda entry: entry[1] in live)
    for i in range(5000):
        heap.push((float(i), i))
    for i in range(4000):
        live.discard(i)
        heap.discard()
    assert len(heap) < 5000  # rebuilt once most entries died
    assert heap.live() == 1000
    assert heap.pop_due(4000.0) == (4000.0, 4000)
    assert heap.peek() == (4001.0, 4001)


def test_pop_due_returns_nothing_before_the_head_is_due():
    heap = LazyHeap(lambda entry: True)
    heap.push((10.0, "a"))
    assert heap.pop_due(9.9) is None
    assert heap.pop_due(10.0) == (10.0, "a")
    assert heap.pop_live() is None


@given(st.lists(st.integers(-50, 50)), st.integers(0, 60))
def test_smallest_walks_a_heap_to_its_k_smallest_entries_in_order(values, k):
    heap = list(values)
    heapq.heapify(heap)
    before = list(heap)
    assert smallest(heap, k) == sorted(values)[:k]
    assert heap == before  # the heap itself is not touched
