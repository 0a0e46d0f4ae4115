"""Options of ``delay()``: each value is judged by itself, whatever was given
before (the options of a task delayed again and again are checked once and
shared, but only between values that are the same, not merely equal)."""
from __future__ import annotations

import pytest

import pysched_lightning as psl

#: (option, a value it accepts, an equal value of another type it refuses)
#: True == 1 and 1.0 == 1 in Python, with equal hashes.
EQUAL_BUT_REFUSED = [
    ("retries", 1, True),
    ("retries", 1, 1.0),
    ("max_instances", 1, True),
    ("max_instances", 2, 2.0),
    ("coalesce", True, 1),
    ("coalesce", False, 0),
    ("hard", False, 0),
    ("timeout", 1, True),
    ("retry_delay", 1, True),
    ("misfire_grace_time", 1, True),
    ("retry_backoff", 1, True),
]


def _refusal(sched, option, value):
    """The exception delay() raises for ``option=value`` (None if accepted)."""
    try:
        sched.delay('once', 3600, 1, print, **{option: value})
    except (TypeError, ValueError) as exc:
        return exc
    return None


@pytest.mark.parametrize("option, accepted, refused", EQUAL_BUT_REFUSED)
def test_an_option_value_refused_on_first_use_is_refused_after_an_equal_one_was_used(
        option, accepted, refused):
    """The checked options were cached by their values, and True == 1:
    ``retries=True`` was refused on first use but accepted once
    ``retries=1`` had been used (likewise 1.0 for 1, 1 for True...). It is
    refused every time, the same way, naming the value. (Either TypeError
    or ValueError, as the README allows; the same one both times.)"""
    with psl.Scheduler() as sched:
        first = _refusal(sched, option, refused)
        assert first is not None, (f"{option}={refused!r} was accepted before "
                                   f"{option}={accepted!r} was used here (the cache is "
                                   "process-wide: another test may have used it)")
        assert _refusal(sched, option, accepted) is None
        again = _refusal(sched, option, refused)
        assert again is not None, \
            f"{option}={refused!r} was accepted after {option}={accepted!r} had been used"
        assert type(again) is type(first)
        assert repr(refused) in str(again)
        tasks = [sched.get_task(tid) for tid in sched.task]
        assert len(tasks) == 1  # only the accepted one was added
