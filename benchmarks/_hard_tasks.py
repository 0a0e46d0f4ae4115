"""The no-op that the hard-task row sends to worker processes.

Workers import it by reference (``_hard_tasks:noop``), so every contender
pickles the same few bytes per task and none pays for pickling a function
by value.
"""


def noop():
    pass
