"""Claims, as the journal writes them, and what other nodes of a shared
store claimed, known ahead (``durability/claims.py``)."""
from __future__ import annotations

from pysched_lightning.durability.claims import ClaimedElsewhere


def test_claims_learnt_with_a_tasks_runs_are_taken_once_and_forgotten_when_given_back():
    asked = []
    elsewhere = ClaimedElsewhere(lambda keys: asked.append(keys) or [])
    assert not elsewhere.expects()
    elsewhere.learn([("t", "1.000", 1), ("t", "2.000", 1), ("u", "1.000", 1)])
    assert elsewhere.expects()
    assert elsewhere.taken(("t", "1.000", 1)) is True
    assert elsewhere.taken(("t", "1.000", 1)) is False  # (once: its run ended here)
    elsewhere.forget("t")  # a claim of t was given back: what was learnt may be stale
    assert elsewhere.taken(("t", "2.000", 1)) is False
    assert elsewhere.taken(("u", "1.000", 1)) is True
    assert asked == []  # (learnt, not asked of the store)
