"""A no-op that a store can keep by import reference (``_storable:hit``).

A store keeps a task's function by reference or pickles it; the benchmark's
counters hold locks and cannot be pickled, so stored tasks call this module's
``hit``, which forwards to the current counter.
"""
_target = None


def set_target(fn):
    global _target
    _target = fn


def hit():
    _target()
